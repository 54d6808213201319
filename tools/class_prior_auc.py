"""Does a weighting separate noisy labels within a class, or only between classes?

  python tools/class_prior_auc.py bench_results/accuracy_memorise_inputs

For every finished bench run with a label_issues.csv and the true labels, from
the averaged target weight (the CSV's weight_score = its min-max rescaled
complement): `weight` is the ROC-AUC of noisy vs clean over all examples;
`class_prior` the same for the score "noise fraction of the example's given
class" (computed from the truth: the best any weighting that sees only the
given class can do); `within_class` the mean over given classes of the weight's
AUC inside that class. Prints mean +- std over seeds (population std, as the
bench tables) per setting and method.
"""
import csv
import glob
import json
import os
import re
import sys

import numpy as np


def auc(noisy_scores, clean_scores):
    """P(noisy score > clean score) + P(equal) / 2; None if either group is empty."""
    clean = np.sort(np.asarray(clean_scores, float))
    noisy = np.asarray(noisy_scores, float)
    if clean.size == 0 or noisy.size == 0:
        return None
    below = np.searchsorted(clean, noisy, side="left")
    equal = np.searchsorted(clean, noisy, side="right") - below
    return float((below + equal / 2).sum() / (clean.size * noisy.size))


def run_aucs(run):
    """(weight, class_prior, within_class) ROC-AUCs of one run directory."""
    with open(os.path.join(run, "label_issues.csv")) as f:
        rows = list(csv.DictReader(f))
    given = np.array([int(r["given_label"]) for r in rows])
    noisy = given != np.array([int(r["true_label"]) for r in rows])
    weight_score = np.array([float(r["weight_score"]) for r in rows])
    prior = np.zeros(given.shape)
    within = []
    for c in np.unique(given):
        members = given == c
        prior[members] = noisy[members].mean()
        inside = auc(weight_score[members & noisy], weight_score[members & ~noisy])
        if inside is not None:
            within.append(inside)
    # Self-check against the trainer's own detection AUC of the same CSV's weight signal.
    with open(os.path.join(run, "results.json")) as f:
        reported = json.load(f)["label_issues"]["auc_by_signal"]["weight"]
    weight = auc(weight_score[noisy], weight_score[~noisy])
    assert abs(weight - reported) < 1e-6, (run, weight, reported)
    return weight, auc(prior[noisy], prior[~noisy]), float(np.mean(within))


def main(output_dir):
    groups = {}
    for path in sorted(glob.glob(os.path.join(output_dir, "*_seed*", "label_issues.csv"))):
        run = os.path.dirname(path)
        setting, method = re.fullmatch(r"([^_]+)_(.+)_seed\d+", os.path.basename(run)).groups()
        groups.setdefault((method, setting), []).append(run_aucs(run))
    print("| method | setting | runs | weight AUC | class-prior AUC | within-class weight AUC |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (method, setting), values in sorted(groups.items()):
        v = np.array(values)
        cells = " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in zip(v.mean(0), v.std(0)))
        print(f"| {method} | {setting} | {len(v)} | {cells} |")


if __name__ == "__main__":
    main(sys.argv[1])
