"""Test accuracy of methods x settings x seeds, as markdown tables and figures.

  python -m gdw_tf.bench.accuracy                              # CPU protocol on real CIFAR-10 JPEGs
  python -m gdw_tf.bench.accuracy --protocol=digits --output_dir=bench_results/digits
      # the default job (python -m gdw_tf.train)
  python -m gdw_tf.bench.accuracy --protocol=paper --data_dir=~/tensorflow_datasets   # GPUs
  python -m gdw_tf.bench.accuracy --methods=gdw,gdw@meta_interval=4   # a method with options
  python -m gdw_tf.bench.accuracy \\
      --settings=cifar10n_worst,cifar10n_worst_meta2pct,cifar10n_worst_auto
      # CIFAR-10N's human labels (--cifar10n_dir)

Each run is `python -m gdw_tf.train` in its own process with its own output
directory under --output_dir; finished runs are reused (after checking they were
made with the same flags), so an interrupted benchmark continues where it
stopped. Tables (mean +- standard deviation over seeds): the final test accuracy
(mean of the last 5 epochs, as the reference log), with the paper's numbers
beside it; the best epoch's test accuracy; the last epoch's training accuracy on
the given (noisy) labels; and, for methods that learn per-example weights, the
ROC-AUC with which the last epoch's target weights rank clean above noisy
examples (from the binned weights, ties counted half); and each run's wall time.

A --methods entry NAME@key=value[@key=value...] runs `--method=NAME
--method_option=key=value ...`: its own row in the tables and its own run directory
(named from the entry, e.g. uniform40_gdw-meta_interval-4_seed0).

The CPU protocol is built for the regime meta-reweighting works in: thousands of
cheap iterations (ITERATIONS per run; the epochs follow from the training-set
size) of a small strided CNN, so that the weighting network gets thousands of
Adam steps, as in the paper's runs (which give it ~40,000).
"""
if __name__ == "__main__":  # before anything loads TensorFlow: no start-up log lines
    from gdw_tf import tf_startup
    tf_startup.quiet()

import concurrent.futures
import csv
import dataclasses
import json
import os
import re
import sys

import numpy as np
from absl import flags

from gdw_tf import bench, flag_parser
from gdw_tf.bench import method_variant
from gdw_tf.diagnostics import TRUSTED_FIT_AUC, binned_auc
from gdw_tf.files import atomic_open, save_figure
from gdw_tf.label_issues import REPORT_SIGNAL, detection_of_scores, methods_with_weights
from gdw_tf.run_dir import differing_flags

# The paper's ResNet-32 results (its Tables 2-4; docs/algorithm.md), mean of 5 runs.
PAPER = {
    "uniform40": {"base": 84.38, "mwnet": 86.46, "gdw": 88.14, "l2rw": 84.66, "insw": 84.88,
                  "finetune": 84.73, "coteaching": 85.26, "glc": 86.12, "soft_label": 86.52,
                  "gen_label": 84.68},
    "uniform60": {"base": 77.92, "mwnet": 81.14, "gdw": 84.11, "l2rw": 79.98, "insw": 78.77,
                  "finetune": 78.41, "coteaching": 78.90, "glc": 81.55, "soft_label": 80.94,
                  "gen_label": 78.32},
    "flip40": {"base": 81.20, "mwnet": 85.55, "gdw": 87.70, "l2rw": 82.90, "insw": 80.09,
               "finetune": 81.53, "coteaching": 69.77, "glc": 89.74, "soft_label": 85.52,
               "gen_label": 80.93},
    "longtail001": {"base": 69.77, "mwnet": 62.70, "gdw": 71.31, "l2rw": 51.15, "insw": 70.27,
                    "finetune": 59.76, "focal": 65.78, "class_balanced": 63.63},
}

SETTINGS = {  # flags shared by both protocols
    "uniform40": ["--noise_type=uniform", "--noise_rate=0.4"],
    "uniform60": ["--noise_type=uniform", "--noise_rate=0.6"],
    "flip40": ["--noise_type=flip", "--noise_rate=0.4"],
    "instance40": ["--noise_type=instance", "--noise_rate=0.4"],
    "instance20": ["--noise_type=instance", "--noise_rate=0.2"],
    "longtail001": ["--noise_type=none", "--noise_rate=0", "--imbalance_factor=0.01"],
    "mixed": ["--noise_type=flip", "--noise_rate=0.4", "--imbalance_factor=0.1"],
    # No clean images: the meta set is chosen from the noisy training data (bi-level methods).
    "uniform40_auto": ["--noise_type=uniform", "--noise_rate=0.4", "--meta_source=auto"],
    "instance40_auto": ["--noise_type=instance", "--noise_rate=0.4", "--meta_source=auto"],
    # The paper's meta proportion (1,000 of 50,000 = 2%): 200 clean images beside 10,000.
    "uniform40_meta2pct": ["--noise_type=uniform", "--noise_rate=0.4", "--num_meta=200"],
}
SYNTHETIC_SETTINGS = list(SETTINGS)  # what the cpu protocol runs by default
# Real human noise: CIFAR-10N's labels of the same images
# (--labels=<--cifar10n_dir>/labels_<set>.csv, columns path,label,true_label; no synthetic noise).
# The clean meta set is drawn by the TRUE label and held out of the training images
# (--meta_source=truth): 1,000, or 200 (the paper's 2%); _auto: no clean image at all, the meta
# set is chosen from the noisy training data.
CIFAR10N_LABELS = {"worst": "labels_worst.csv", "random1": "labels_random1.csv",
                   "aggre": "labels_aggre.csv"}
for _name in CIFAR10N_LABELS:
    SETTINGS[f"cifar10n_{_name}"] = ["--meta_source=truth"]
    SETTINGS[f"cifar10n_{_name}_meta2pct"] = ["--meta_source=truth", "--num_meta=200"]
    SETTINGS[f"cifar10n_{_name}_auto"] = ["--meta_source=auto"]
PAPER_FLAGFILES = {"uniform40": "cifar10_uniform40", "uniform60": "cifar10_uniform60",
                   "flip40": "cifar10_flip40", "longtail001": "cifar10_longtail001",
                   "instance40": "cifar10_instance40", "instance20": "cifar10_instance20"}

# CPU protocol: real CIFAR-10 images (10 classes, 5,000 training images each), 1,000
# of them held out as the clean meta set, batch 100, ITERATIONS iterations per run.
CIFAR_CLASSES, CIFAR_PER_CLASS, NUM_META, BATCH = 10, 5000, 1000, 100
ITERATIONS = 4000


def _setting_value(setting, flag, default):
    for item in SETTINGS[setting]:
        if item.startswith(f"--{flag}="):
            return float(item.partition("=")[2])
    return default


def cifar10n_labels(config, setting):
    """The labels file of a CIFAR-10N setting (None for a synthetic-noise setting)."""
    for name, file in CIFAR10N_LABELS.items():
        if setting == f"cifar10n_{name}" or setting.startswith(f"cifar10n_{name}_"):
            return os.path.join(config.cifar10n_dir, file)
    return None


def cpu_train_per_class(config, setting):
    """The CPU protocol's cap: --train_per_class for balanced settings, none for long tails
    (whose tail classes would otherwise keep a handful of images)."""
    balanced = _setting_value(setting, "imbalance_factor", 1.0) == 1.0
    return config.train_per_class if balanced else None


def cpu_epochs(config, setting):
    """Epochs giving at least --iterations iterations on the setting's training set."""
    from gdw_tf.data.protocol import long_tail_counts

    img_max = CIFAR_PER_CLASS - NUM_META // CIFAR_CLASSES
    cap = cpu_train_per_class(config, setting) or img_max
    mu = _setting_value(setting, "imbalance_factor", 1.0)
    counts = [min(cap, n) for n in long_tail_counts(min(cap, img_max), CIFAR_CLASSES, mu)] \
        if mu < 1.0 else [min(cap, img_max)] * CIFAR_CLASSES
    steps = sum(counts) // BATCH
    return -(-config.iterations // steps)


@dataclasses.dataclass(frozen=True)
class CpuProtocol:
    """A CPU protocol's recipe: the --augment recipe, training images per class of the
    balanced settings, and iterations per run (the defaults of the bench's flags)."""
    augment: str
    train_per_class: int
    iterations: int


# cpu: underfits (base ends at ~41% on the given labels of uniform40, 47% of CIFAR-10N
#   worst's, even after 20,000 iterations); its best epoch is its last.
# cpu_memorise: no augmentation on 500 images per class: plain training fits every given
#   label (100% by epoch ~27 of 80 at uniform40) within ~600 iterations of its best epoch.
# cpu_gradual: horizontal flips only, on 1,000 images per class, 10,000 iterations: plain
#   training fits the given labels gradually (CIFAR-10N worst: ~50% at 2,000 iterations,
#   ~70% at 5,500) and its test accuracy falls from its best epoch over thousands of
#   iterations, as in the paper's runs (docs/evidence.md).
CPU_PROTOCOLS = {"cpu": CpuProtocol("cifar", 1000, ITERATIONS),
                 "cpu_memorise": CpuProtocol("none", 500, ITERATIONS),
                 "cpu_gradual": CpuProtocol("flip", 1000, 10000)}
# Settings each protocol runs (digits: ~125 training images per class leave a long
# tail too few images to measure anything).
PROTOCOL_SETTINGS = {"cpu": list(SETTINGS),
                     "cpu_memorise": ["uniform40", "flip40", "instance40", "cifar10n_worst"],
                     "cpu_gradual": ["uniform40", "cifar10n_worst"],
                     "paper": list(PAPER_FLAGFILES),
                     "digits": ["uniform40", "uniform60", "flip40"]}


@dataclasses.dataclass(frozen=True)
class AccuracyConfig:
    """The benchmark's flags, checked (see the FLAGS definitions for their meaning).

    protocol_flags, run_one and run_dir read only protocol, data_dir, cifar10n_dir,
    train_per_class, iterations, epochs, output_dir, report_only and jobs; the tables also read
    methods (entries NAME[@key=value...]), settings and seeds.
    """
    protocol: str
    data_dir: str
    cifar10n_dir: str
    methods: tuple[str, ...]
    settings: tuple[str, ...]
    seeds: tuple[int, ...]
    epochs: int | None
    train_per_class: int
    iterations: int
    output_dir: str
    jobs: int
    report_only: bool


def protocol_flags(config, setting):
    """Command-line flags of one run (without method, seed and output_dir)."""
    if config.protocol == "digits":  # the no-flag default job, other settings on request
        return ["--dataset=digits", "--verbose=0", *SETTINGS[setting]]
    if config.protocol == "paper":
        return [f"--flagfile=flags/{PAPER_FLAGFILES[setting]}.flags",
                f"--data_dir={config.data_dir}",
                *([f"--epochs={config.epochs}"] if config.epochs else [])]
    cap = cpu_train_per_class(config, setting)
    augment = CPU_PROTOCOLS[config.protocol].augment
    labels = cifar10n_labels(config, setting)
    return ["--dataset=folder", f"--data_dir={config.data_dir}",
            *([f"--labels={labels}"] if labels else []),
            "--model=strided_cnn",
            f"--augment={augment}", *([f"--train_per_class={cap}"] if cap else []),
            *([] if _setting_value(setting, "num_meta", None) else [f"--num_meta={NUM_META}"]),
            f"--batch_size={BATCH}",
            f"--epochs={config.epochs or cpu_epochs(config, setting)}", "--lr=0.1",
            "--schedule=cosine", "--verbose=0", *SETTINGS[setting]]


def method_dir_name(entry):
    """The entry as a safe directory name: 'gdw@meta_interval=4' -> 'gdw-meta_interval-4'."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", entry)


def check_same_flags(path, stored, wanted):
    """Raises SystemExit if `stored` (flag name -> value: the trainer's flags of what `path`
    holds, e.g. its results.json's) are not the flags `wanted` (the bench's arguments).

    The flags the bench gives (not those of a --flagfile) are compared, typed as the
    trainer parses them, by `run_dir.differing_flags`; --epochs must match exactly (a
    shorter finished run is another run, not one to extend) and --method_option as a set.
    """
    given, current = typed_flags(wanted)
    saved = {name: stored.get(name) for name in current}
    saved["method_option"] = sorted(saved["method_option"] or [])
    differ = differing_flags(saved, current, epochs_may_grow=False)
    if differ:
        name = differ[0]
        have, want = saved[name], given[name]
        if name == "method_option":
            have, want = ",".join(have) or "(none)", ",".join(want) or "(none)"
        raise SystemExit(f"{path}: this run was made with --{name}={have}, the benchmark "
                         f"asks for --{name}={want}; pass another --output_dir (or remove "
                         "the old runs) instead of mixing protocols in one table")


def typed_flags(argv):
    """(as given, typed): the flags of `argv` (["--name=value", ...], a --flagfile left
    out) by name, as text and as the trainer parses them; --method_option a list."""
    from gdw_tf.flags import FLAGS as TRAINER_FLAGS

    given = {"method_option": []}  # text as given; no option given is none
    for flag in argv:
        if not flag.startswith("--flagfile="):
            name, _, value = flag[2:].partition("=")
            if name == "method_option":
                given[name].append(value)
            else:
                given[name] = value
    typed = {name: sorted(value) if name == "method_option"
             else TRAINER_FLAGS[name].parser.parse(value) for name, value in given.items()}
    return given, typed


def _results_flags(path):
    with open(path) as f:
        return json.load(f)["flags"]


def run_dir(config, setting, method, seed):
    """The output directory of one run; `method` is a --methods entry."""
    return os.path.join(config.output_dir, f"{setting}_{method_dir_name(method)}_seed{seed}")


def run_flags(config, setting, method, seed):
    """Every flag of one run except its --output_dir; `method` is a --methods entry."""
    name, options = method_variant(method)
    return [*protocol_flags(config, setting), f"--method={name}",
            *(f"--method_option={option}" for option in options), f"--seed={seed}"]


def run_one(config, setting, method, seed):
    """results.json of one run (started unless finished; None if it failed or, with
    report_only, was not there); a finished run made with other flags is refused."""
    out = run_dir(config, setting, method, seed)
    path = os.path.join(out, "results.json")
    wanted = run_flags(config, setting, method, seed)
    if os.path.exists(path):
        check_same_flags(path, _results_flags(path), wanted)
    else:
        if config.report_only:
            return None
        proc = bench.run_module("gdw_tf.train", [*wanted, f"--output_dir={out}"], config.jobs, out)
        if proc.returncode != 0:
            return None
    with open(path) as f:
        return {**json.load(f), "output_dir": out}


def _run_values(run, column):
    """One run's value for a table column, or None where it does not apply."""
    history = run.get("history", {})
    if column == "final":
        return run.get("final_accuracy")
    if column == "best":
        return run.get("best_accuracy")
    if column == "train":
        return 100 * history["accuracy"][-1] if history.get("accuracy") else None
    if column == "wall":
        return run.get("wall_time_s")
    if column == "check":
        return (run.get("weight_check") or {}).get("fit_auc")
    if column == "issues":  # the report's signal
        entry = run.get("label_issues") or {}
        if "auc_by_signal" in entry:
            return entry["auc_by_signal"].get(REPORT_SIGNAL)
        return _probability_auc_from_csv(run, entry)  # runs of other releases ranked by weight
    last = _last_histogram(run)  # column == "auc": methods that learn weights only
    if last is None or run["flags"]["method"] not in methods_with_weights():
        return None
    return binned_auc(last[1]["clean"], last[1]["noisy"])


def _probability_auc_from_csv(run, entry):
    """ROC-AUC of the report's signal (1 - averaged p(given label)), noisy vs clean, from a
    run's label_issues.csv: for runs made before results.json had `auc_by_signal` (their
    `score` column ranked by the weights, but the CSV has given_probability and true_label).
    None without the file or the truth."""
    path = os.path.join(run.get("output_dir", ""), entry.get("csv") or "label_issues.csv")
    if REPORT_SIGNAL != "probability" or not os.path.exists(path):
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "given_probability" not in rows[0] or any(r["true_label"] == "" for r in rows):
        return None
    score = [1.0 - float(r["given_probability"]) for r in rows]
    noisy = [r["given_label"] != r["true_label"] for r in rows]
    found = detection_of_scores(score, noisy)
    return None if found is None else found.auc


COLUMNS = {  # column -> (title, number format)
    "final": ("Final test accuracy (%, mean of the last 5 epochs)", "{:.2f}"),
    "best": ("Best epoch's test accuracy (%)", "{:.2f}"),
    "train": ("Training accuracy on the given (noisy) labels, last epoch (%)", "{:.1f}"),
    "auc": ("ROC-AUC of the last epoch's target weights, clean vs noisy examples", "{:.3f}"),
    "check": ("Truth-free check (weight_check_fit_auc, last epoch; trusted at >= 0.6)", "{:.3f}"),
    "issues": ("Label-issue report's ROC-AUC (label_issues.csv score, noisy vs clean)", "{:.3f}"),
    "wall": ("Wall time of one run (s)", "{:.0f}"),
}


def table(config, results, column="final"):
    """Markdown table of one column: methods x settings, mean +- std over seeds."""
    settings = config.settings
    title = COLUMNS[column][0]
    lines = [f"{title}:\n", "| method | " + " | ".join(settings) + " |",
             "| --- |" + " --- |" * len(settings)]
    for method in config.methods:
        cells = []
        for setting in settings:
            cell = _cell(config, [r for r in results.get((setting, method), []) if r], column)
            paper = (PAPER.get(setting, {}).get(method)  # exact methods only, not variants
                     if column == "final" and config.protocol != "digits" else None)
            cells.append(cell + (f" (paper {paper:.2f})" if paper else ""))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(config, runs, column):
    """'mean ± std' of one column over runs (with the run count if some are missing)."""
    fmt = COLUMNS[column][1]
    values = [v for v in (_run_values(r, column) for r in runs) if v is not None]
    if not values:
        return "-" if runs else "n/a"
    cell = f"{fmt.format(np.mean(values))} ± {fmt.format(np.std(values))}"
    seeds = len(config.seeds)
    return cell + (f" ({len(values)}/{seeds} runs)" if len(values) < seeds else "")


def setting_table(config, results, setting):
    """Markdown table of one setting: methods x every column, mean +- std over seeds."""
    lines = ["| method | final test acc. (%) | best epoch (%) | train acc., given labels (%) "
             "| weight ROC-AUC | truth-free check | label-issue ROC-AUC | wall time (s) |",
             "| --- |" + " --- |" * len(COLUMNS)]
    for method in config.methods:
        runs = [r for r in results.get((setting, method), []) if r]
        lines.append(f"| {method} | " + " | ".join(_cell(config, runs, c) for c in COLUMNS) + " |")
    return "\n".join(lines)


def report(config, results):
    """Every column's table (one table of every column for a single setting), and the
    runs' total training time."""
    done = [r for runs in results.values() for r in runs if r]
    settings = config.settings
    tables = ([setting_table(config, results, settings[0])] if len(settings) == 1
              else [table(config, results, column) for column in COLUMNS])
    return ("\n\n".join(tables) + f"\n\n{len(done)} runs, "
            f"{sum(r['wall_time_s'] for r in done) / 60:.1f} min of training processes.")


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(config, fig, name):
    fig.tight_layout()
    return save_figure(fig, os.path.join(config.output_dir, name), dpi=100)


def _check_points(results):
    """[(setting, method, truth-free check, true weight ROC-AUC, label-issue ROC-AUC)] of every
    finished run that logged the check (diagnostics.weight_trust) and knows the truth."""
    points = []
    for (setting, method), runs in results.items():
        for run in filter(None, runs):
            check, truth = _run_values(run, "check"), _run_values(run, "auc")
            if check is not None and truth is not None:
                points.append((setting, method, check, truth, _run_values(run, "issues")))
    return points


def check_report(results):
    """How well the truth-free check predicts whether the weights single out the noisy labels:
    its agreement with the truth (separating: true weight ROC-AUC >= TRUSTED_FIT_AUC, the
    check's own bar) and the correlation, over runs; '' when no run has both."""
    points = _check_points(results)
    if not points:
        return ""
    check, truth = (np.array([p[i] for p in points]) for i in (2, 3))
    trusted, separate = check >= TRUSTED_FIT_AUC, truth >= TRUSTED_FIT_AUC
    issues = [p[4] for p in points if p[4] is not None]
    lowest = f"{min(issues):.3f}" if issues else "-"
    return "\n".join([
        f"Truth-free check against the truth (every run with both; separating: true weight "
        f"ROC-AUC >= {TRUSTED_FIT_AUC}):\n",
        "| runs | trusted and separating | trusted, not separating | not trusted, separating "
        "| not trusted, not separating | Pearson r (check, true AUC) "
        "| lowest label-issue ROC-AUC |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| {len(points)} | {int((trusted & separate).sum())} | {int((trusted & ~separate).sum())} "
        f"| {int((~trusted & separate).sum())} | {int((~trusted & ~separate).sum())} "
        f"| {np.corrcoef(check, truth)[0, 1]:.2f} | {lowest} |"])


SCHEDULE_FRACTIONS = (0.1, 0.2, 0.4, 0.6, 0.8, 1.0)  # of the epochs, where the schedule is read


def _epoch_points(run):
    """{epoch (1-based): (truth-free check, true weight ROC-AUC)} of a run, at
    SCHEDULE_FRACTIONS of its epochs where both were logged."""
    checks = run.get("history", {}).get("weight_check_fit_auc") or []
    by_epoch = (run.get("target_weight_histograms") or {}).get("by_epoch", {})
    if run["flags"]["method"] not in methods_with_weights() or not checks or not by_epoch:
        return {}
    points = {}
    for epoch in sorted({max(1, round(f * len(checks))) for f in SCHEDULE_FRACTIONS}):
        counts = by_epoch.get(str(epoch - 1))
        truth = binned_auc(counts["clean"], counts["noisy"]) if counts else None
        if truth is not None and checks[epoch - 1] is not None:
            points[epoch] = (checks[epoch - 1], truth)
    return points


def schedule_report(config, results):
    """The truth-free check and the true weight ROC-AUC over the schedule (at
    SCHEDULE_FRACTIONS of the epochs), mean over seeds, with how many runs the check is right
    on (trusted exactly when separating); '' when no run logged both."""
    lines = []
    for setting in config.settings:
        for method in config.methods:
            runs = [_epoch_points(r) for r in results.get((setting, method), []) if r]
            epochs = sorted({e for points in runs for e in points})
            for epoch in epochs:
                pairs = np.array([points[epoch] for points in runs if epoch in points])
                right = int(((pairs[:, 0] >= TRUSTED_FIT_AUC) ==
                             (pairs[:, 1] >= TRUSTED_FIT_AUC)).sum())
                lines.append(f"| {setting} | {method} | {epoch} | {pairs[:, 1].mean():.3f} ± "
                             f"{pairs[:, 1].std():.3f} | {pairs[:, 0].mean():.3f} ± "
                             f"{pairs[:, 0].std():.3f} | {right} of {len(pairs)} |")
    if not lines:
        return ""
    return "\n".join([
        "The weights and the truth-free check over the schedule (mean ± std over seeds; right: "
        f"trusted (check >= {TRUSTED_FIT_AUC}) exactly when separating (true weight ROC-AUC "
        f">= {TRUSTED_FIT_AUC})):\n",
        "| setting | method | epoch | true weight ROC-AUC | truth-free check | check right |",
        "| --- | --- | --- | --- | --- | --- |", *lines])


def check_figure(config, results):
    """The truth-free check against the true weight ROC-AUC, one point per run; None if no
    run has both."""
    points = _check_points(results)
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    markers = dict(zip(sorted({p[1] for p in points}), "osD^v<>"))
    for setting in sorted({p[0] for p in points}):
        for method, marker in markers.items():
            xs = [(p[3], p[2]) for p in points if p[0] == setting and p[1] == method]
            if xs:
                ax.scatter(*zip(*xs), marker=marker, label=f"{method}, {setting}", alpha=0.8)
    ax.axhline(TRUSTED_FIT_AUC, color="grey", lw=0.8, ls="--")
    ax.axvline(TRUSTED_FIT_AUC, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="true ROC-AUC of the weights, clean vs noisy",
           ylabel="truth-free check (fitted vs unfitted)", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=6)
    return _save(config, fig, "weight_check.png")


def curves(config, results):
    """Mean test-accuracy curve per method, one panel per setting."""
    plt = _pyplot()
    settings = config.settings
    fig, axes = plt.subplots(1, len(settings), figsize=(4 * len(settings), 3.2), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        for method in config.methods:
            runs = [r["history"]["val_accuracy"] for r in results.get((setting, method), []) if r]
            if runs:
                length = min(map(len, runs))
                mean = 100 * np.mean([r[:length] for r in runs], axis=0)
                ax.plot(np.arange(1, length + 1), mean, label=method)
        ax.set(title=setting, xlabel="epoch", ylabel="test accuracy (%)")
        ax.legend(fontsize=8)
    return _save(config, fig, "accuracy_curves.png")


FLAGS = flags.FlagValues()  # the bench's own flags (the trainer's are the global FLAGS)
flags.DEFINE_enum("protocol", "cpu", list(PROTOCOL_SETTINGS), "cpu: CIFAR-10 JPEGs, strided_cnn "
                  "(underfits); cpu_memorise: the same without augmentation on 500 images per "
                  "class (plain training memorises the noise within ~600 iterations); "
                  "cpu_gradual: flips only, 10,000 iterations (it memorises gradually); "
                  "digits: the default job; paper: the paper's flagfiles (GPUs).",
                  flag_values=FLAGS)
flags.DEFINE_string("data_dir", "../shared/data/cifar10-jpeg", "Image folder (cpu protocol) or "
                    "prepared TFDS directory (paper).", flag_values=FLAGS)
flags.DEFINE_string("cifar10n_dir", "../shared/data/cifar10n", "cpu protocols: folder of "
                    "CIFAR-10N's labels files for --data_dir's images (labels_worst.csv, "
                    "labels_random1.csv, labels_aggre.csv; header path,label,true_label), read by "
                    "the cifar10n_* settings.",
                    flag_values=FLAGS)
flags.DEFINE_list("methods", ["base", "mwnet", "gdw"], "Methods, each NAME or NAME@key=value"
                  "[@key=value...] (runs --method=NAME --method_option=key=value ...).",
                  flag_values=FLAGS)
flags.DEFINE_list("settings", None, "Settings (default: every setting of the protocol; "
                  "digits: uniform40 only; the cifar10n_* ones, CIFAR-10N's human labels from "
                  "--cifar10n_dir, on request only).", flag_values=FLAGS)
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.", flag_values=FLAGS)
flags.DEFINE_integer("epochs", None, "Override the protocol's epochs.", lower_bound=1,
                     flag_values=FLAGS)
flags.DEFINE_integer("train_per_class", None, "cpu protocols: training images per class in the "
                     f"balanced settings (default: 1000; cpu_memorise: "
                     f"{CPU_PROTOCOLS['cpu_memorise'].train_per_class}).",
                     lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("iterations", None, "cpu protocols: iterations per run (the epochs "
                     f"follow; default {ITERATIONS}, cpu_gradual: "
                     f"{CPU_PROTOCOLS['cpu_gradual'].iterations}).", lower_bound=1,
                     flag_values=FLAGS)
flags.DEFINE_string("output_dir", "bench_results/accuracy",
                    "Where the runs, tables and figures go.", flag_values=FLAGS)
flags.DEFINE_integer("jobs", 2, "Runs at a time, sharing the CPU cores (on this 2-core machine two "
                     "single-threaded runs finish sooner than one run on both cores).",
                     lower_bound=1, flag_values=FLAGS)
flags.DEFINE_bool("report_only", False, "Tabulate the finished runs, start none.",
                  flag_values=FLAGS)


def _config_from_flags(values):
    """AccuracyConfig from the parsed FLAGS; flags.ValidationError names a bad entry."""
    protocol = values.protocol
    known = PROTOCOL_SETTINGS[protocol]
    settings = values.settings or (["uniform40"] if protocol == "digits" else
                                   [s for s in known if s in SYNTHETIC_SETTINGS])
    for setting in settings:
        if setting not in known:
            raise flags.ValidationError(f"--settings: unknown setting {setting!r} for "
                                        f"--protocol={protocol}; known: {', '.join(known)}")
    dirs = {}
    for entry in values.methods:
        bench.check_method_entry(entry)
        other = dirs.setdefault(method_dir_name(entry), entry)
        if other != entry or values.methods.count(entry) > 1:
            raise flags.ValidationError(f"--methods: {other!r} and {entry!r} would share the "
                                        f"run directory {method_dir_name(entry)!r}")
    return AccuracyConfig(
        protocol=protocol, data_dir=values.data_dir, cifar10n_dir=values.cifar10n_dir,
        methods=tuple(values.methods),
        settings=tuple(settings), seeds=bench.int_list(values, "seeds"), epochs=values.epochs,
        train_per_class=values.train_per_class or (
            CPU_PROTOCOLS[protocol].train_per_class if protocol in CPU_PROTOCOLS else 1000),
        iterations=values.iterations or (
            CPU_PROTOCOLS[protocol].iterations if protocol in CPU_PROTOCOLS else ITERATIONS),
        output_dir=values.output_dir, jobs=values.jobs, report_only=values.report_only)


def parse_config(argv):
    """AccuracyConfig from command-line `argv` (argv[0]: the program); exits on bad flags."""
    return flag_parser.parse(argv, FLAGS, _config_from_flags, "gdw_tf.bench.accuracy", __doc__)


def _last_histogram(run):
    """(bin edges, {"clean": counts, "noisy": counts}) of a run's last epoch, or None."""
    hist = (run or {}).get("target_weight_histograms", {})
    if not hist.get("by_epoch"):
        return None
    last = hist["by_epoch"][max(hist["by_epoch"], key=int)]
    return np.asarray(hist["edges"]), {k: np.asarray(v) for k, v in last.items()}


def weight_figure(config, results):
    """Last-epoch target-weight distributions, clean vs noisy (paper Fig. 3), summed over
    seeds: one row per weighting method, one column per setting. None if no run has them."""
    plt = _pyplot()
    settings = config.settings

    def varies(r):  # constant weights (e.g. base: all 1) fill one bin; nothing to show
        last = _last_histogram(r)
        return last is not None and np.count_nonzero(last[1]["clean"] + last[1]["noisy"]) > 1

    rows = [m for m in config.methods if method_variant(m)[0] in methods_with_weights()
            and any(varies(r) for s in settings for r in results.get((s, m), []))]
    if not rows:
        return None
    fig, axes = plt.subplots(len(rows), len(settings), figsize=(4 * len(settings), 2.6 * len(rows)),
                             squeeze=False)
    for ax_row, method in zip(axes, rows):
        for ax, setting in zip(ax_row, settings):
            totals, edges = {}, None
            for edges, last in filter(None, map(_last_histogram,
                                                results.get((setting, method), []))):
                for kind in ("clean", "noisy"):
                    totals[kind] = totals.get(kind, 0) + last[kind]
            for kind, counts in totals.items():
                if counts.sum() > 0:
                    ax.stairs(counts / counts.sum(), edges, label=f"{kind} ({int(counts.sum())})",
                              fill=True, alpha=0.5)
            ax.set(title=f"{method}, {setting}", xlabel="target weight", ylabel="fraction")
            if totals:
                ax.legend(fontsize=8)
    return _save(config, fig, "target_weights.png")


def main(argv):
    """`python -m gdw_tf.bench.accuracy FLAGS`: runs (or reuses) every run, then writes
    table.md and the figures to --output_dir."""
    config = parse_config(argv)
    os.makedirs(config.output_dir, exist_ok=True)

    runs = [(setting, method, seed) for seed in config.seeds
            for setting in config.settings for method in config.methods]
    for setting, method, seed in runs:  # refuse a mixed table before starting anything
        path = os.path.join(run_dir(config, setting, method, seed), "results.json")
        if os.path.exists(path):
            check_same_flags(path, _results_flags(path), run_flags(config, setting, method, seed))
    with concurrent.futures.ThreadPoolExecutor(config.jobs) as pool:
        finished = list(pool.map(lambda run: run_one(config, *run), runs))
    results = {}
    for (setting, method, _), result in zip(runs, finished):
        results.setdefault((setting, method), []).append(result)
    md = report(config, results)
    for extra in (check_report(results), schedule_report(config, results)):
        md += f"\n\n{extra}" if extra else ""
    figures = [curves(config, results), weight_figure(config, results),
               check_figure(config, results)]
    with atomic_open(os.path.join(config.output_dir, "table.md")) as f:
        f.write(md + "\n")
    print(md)
    print("\nfigures:", ", ".join(f for f in figures if f))


if __name__ == "__main__":
    main(sys.argv)
