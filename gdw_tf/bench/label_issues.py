"""Finding the mislabelled examples: the free report of a training run next to cleanlab's.

  pip install -r requirements-bench.txt          # cleanlab, for this bench only
  python -m gdw_tf.bench.label_issues            # uniform40, instance40, seeds 0,1,2, K=5
  python -m gdw_tf.bench.label_issues --settings=cifar10n_worst --cifar10n_dir=DIR   # human noise

Every detector sees the same noisy training set: the accuracy bench's CPU protocol
(`gdw_tf.bench.accuracy`, real CIFAR-10 JPEGs, strided_cnn, 4,000 iterations).

- base, gdw: one `python -m gdw_tf.train --method=base` / `--method=gdw` run each; its
  label_issues.csv (`gdw_tf.label_issues`: score = 1 - the averaged predicted probability
  of the given label) comes with the training, so its wall time is that one run's, which
  also yields the trained model. The row "gdw, weight" ranks by GDW's averaged target
  weight alone.
- cleanlab on base's / gdw's record: `cleanlab.rank.get_label_quality_scores` and
  `find_label_issues` on the run's own averaged probabilities (label_issues_pred_probs.npy,
  in-sample, no cross-validation): the run's wall time plus cleanlab's.
- cleanlab: out-of-sample predicted probabilities from K-fold cross-validation:
  K trainings of the same backbone with `--method=base` and the same recipe on
  the other K-1 folds (stratified by given label), each predicting its held-out
  fold unaugmented; then `cleanlab.rank.get_label_quality_scores` (score =
  1 - quality) and `cleanlab.filter.find_label_issues` (its own flag set). Its
  wall time is the K trainings plus cleanlab's own time; data loading is
  counted on both sides.

Columns: ROC-AUC of the score for noisy vs clean examples; precision when
flagging as many top-scored examples as there are noisy ones; for
find_label_issues, how many it flags and their precision and recall; wall time.
Each (setting, seed) is one process per side, reused when finished (with the
same flags), so an interrupted bench continues where it stopped.
"""
if __name__ == "__main__":  # before anything loads TensorFlow: no start-up log lines
    from gdw_tf import tf_startup
    tf_startup.quiet()

import concurrent.futures
import dataclasses
import importlib.util
import json
import os
import sys
import threading
import time

import numpy as np
from absl import flags

from gdw_tf import bench, flag_parser
from gdw_tf.bench import accuracy

FLAGS = flags.FlagValues()
flags.DEFINE_list("settings", ["uniform40", "instance40"], "accuracy-bench settings",
                  flag_values=FLAGS)
flags.DEFINE_list("seeds", ["0", "1", "2"], "seeds (data noise and training)", flag_values=FLAGS)
flags.DEFINE_integer("folds", 5, "K of cleanlab's K-fold cross-validation", lower_bound=2,
                     flag_values=FLAGS)
flags.DEFINE_string("data_dir", "../shared/data/cifar10-jpeg", "CIFAR-10 image folder",
                    flag_values=FLAGS)
flags.DEFINE_string("cifar10n_dir", "../shared/data/cifar10n", "folder of CIFAR-10N's labels "
                    "files for --data_dir's images (the cifar10n_* settings)", flag_values=FLAGS)
flags.DEFINE_integer("iterations", accuracy.ITERATIONS, "iterations of the GDW run (the "
                     "cross-validation runs train the same epochs on (K-1)/K of the data)",
                     flag_values=FLAGS)
flags.DEFINE_integer("train_per_class", 1000, "training images per class", flag_values=FLAGS)
flags.DEFINE_string("output_dir", "bench_results/label_issues", "runs and table.md",
                    flag_values=FLAGS)
flags.DEFINE_integer("jobs", 2, "processes at a time, sharing the CPU cores", lower_bound=1,
                     flag_values=FLAGS)
flags.DEFINE_bool("report_only", False, "tabulate the finished runs, start none",
                  flag_values=FLAGS)
flags.DEFINE_string("cross_validate", None, "internal: SETTING:SEED, run the K-fold trainings "
                    "of one setting and seed in this process", flag_values=FLAGS)

CV_FILE = "cross_validation.npz"  # per-example out-of-sample probabilities, labels, timing


@dataclasses.dataclass(frozen=True)
class Config:
    """The bench's flags (the attribute names `gdw_tf.bench.accuracy` reads)."""
    settings: tuple
    seeds: tuple
    folds: int
    data_dir: str
    cifar10n_dir: str
    iterations: int
    train_per_class: int
    output_dir: str
    jobs: int
    report_only: bool
    protocol: str = "cpu"
    epochs: int | None = None

    @classmethod
    def from_flags(cls, values):
        """The config of parsed flag `values`; flags.ValidationError names a bad one."""
        for setting in values.settings:
            if setting not in accuracy.PROTOCOL_SETTINGS["cpu"]:
                raise flags.ValidationError(f"--settings: unknown setting {setting!r}; known: "
                                            f"{', '.join(accuracy.PROTOCOL_SETTINGS['cpu'])}")
        return cls(tuple(values.settings), bench.int_list(values, "seeds"), values.folds,
                   values.data_dir, values.cifar10n_dir, values.iterations, values.train_per_class,
                   values.output_dir, values.jobs, values.report_only)


@dataclasses.dataclass(frozen=True)
class Row:
    """One detector on one (setting, seed); None where it does not apply."""
    auc: float
    precision_at_noise: float
    flagged: int | None
    flagged_precision: float | None
    flagged_recall: float | None
    wall_s: float


def stratified_folds(labels, folds, seed):
    """int [N] fold of each example, in 0..folds-1: each given class spread evenly, seeded."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), np.int64)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        fold[members] = (np.arange(members.size) + rng.integers(folds)) % folds
    return fold


def cross_validate(config, setting, seed, out_dir):
    """K `base` trainings of the protocol on K-1 folds each; writes out_dir/CV_FILE with
    float32 probs [N, C] (each row from the model that did not train on it), int labels,
    true_labels [N], and the wall time (s) of the whole (loading included)."""
    started = time.time()
    import keras
    import tensorflow as tf

    from gdw_tf import label_issues, run
    from gdw_tf.config import RunConfig
    from gdw_tf.data import pipeline
    from gdw_tf.data.augment import make_augmentation
    from gdw_tf.flags import FLAGS as TRAINER_FLAGS

    TRAINER_FLAGS(["cross_validate", *accuracy.run_flags(config, setting, "base", seed)])
    run_config = RunConfig.from_flags(TRAINER_FLAGS)
    bundle = run.build_data(run_config.data)
    examples = label_issues.training_examples(bundle)
    images = tf.constant(examples.images)
    aug = make_augmentation(bundle.augment, examples.images.shape[1:], examples.pixel_max)
    labels, true_labels = bundle.train_labels, bundle.train_true_labels
    fold = stratified_folds(labels, config.folds, seed)
    probs = np.zeros((bundle.num_train, bundle.num_classes), np.float32)
    for k in range(config.folds):
        keras.utils.set_random_seed(seed * config.folds + k)
        rows = np.flatnonzero(fold != k)
        fields = {"label": labels[rows], "true_label": true_labels[rows],
                  "index": np.arange(rows.size)}
        data = pipeline.array_dataset(
            images, rows, fields, augmentation=aug, training=True, batch_size=bundle.batch_size,
            drop_remainder=True, shuffle=True, repeat=True, seed=seed * config.folds + k,
            stage=f"fold{k}", output=pipeline.as_train_element)
        steps = rows.size // bundle.batch_size
        if steps < 1:
            raise SystemExit(f"--folds={config.folds}: a fold's {rows.size} training examples "
                             f"fill no batch of {bundle.batch_size}")
        model = run.build_model(run_config.method, run_config.optim,
                                dataclasses.replace(bundle, steps_per_epoch=steps),
                                noise_rate=run_config.data.synthetic_noise_rate)
        model.fit(data, epochs=run_config.optim.epochs, steps_per_epoch=steps, verbose=0,
                  shuffle=False)
        held = np.flatnonzero(fold == k)
        test = pipeline.array_dataset(
            images, held, {"label": labels[held]}, augmentation=aug, training=False,
            batch_size=bundle.batch_size, drop_remainder=False, shuffle=False, repeat=False,
            seed=seed, stage="held_out", output=pipeline.as_pair)
        probs[held] = tf.nn.softmax(model.predict(test, verbose=0)).numpy()
        print(f"{setting} seed {seed}: fold {k + 1}/{config.folds} done "
              f"({time.time() - started:.0f} s)", flush=True)
    os.makedirs(out_dir, exist_ok=True)
    np.savez(os.path.join(out_dir, CV_FILE), probs=probs, labels=labels,
             true_labels=true_labels, wall_s=time.time() - started,
             flags=json.dumps(run_config.to_flags()))


# cleanlab's find_label_issues hands its worker processes the data through module globals
# (cleanlab/filter.py): two calls at once in threads overwrite each other's and fail.
_CLEANLAB = threading.Lock()


def cleanlab_rows(cv):
    """{"cleanlab": Row} from a CV_FILE's arrays (cleanlab's time added to the trainings')."""
    return {"cleanlab": _cleanlab_row(cv["labels"], cv["probs"], cv["true_labels"],
                                      float(cv["wall_s"]))}


def _cleanlab_row(labels, probs, true_labels, wall_s):
    """Row of cleanlab's scores and flags on `probs` [N, C] (cleanlab's time added to wall_s)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    from gdw_tf.label_issues import detection_of_scores

    with _CLEANLAB:  # the time of this call only, not of waiting for another
        started = time.time()
        quality = get_label_quality_scores(labels, probs)
        flagged = find_label_issues(labels, probs)
        wall = wall_s + time.time() - started
    noisy = labels != true_labels
    found = detection_of_scores(1.0 - quality, noisy)
    hits = int((flagged & noisy).sum())
    return Row(found.auc, found.precision, int(flagged.sum()), hits / max(1, int(flagged.sum())),
               hits / int(noisy.sum()), wall)


def report_rows(method, run, out_dir):
    """{METHOD: Row (the report's score), "cleanlab on METHOD's record": Row, and for gdw
    "gdw, weight": Row} from a finished run's files."""
    import csv

    from gdw_tf.label_issues import CSV_FILE, LABELS_FILE, PRED_PROBS_FILE, detection_of_scores

    with open(os.path.join(out_dir, CSV_FILE)) as f:
        rows = sorted(csv.DictReader(f), key=lambda r: int(r["index"]))
    true = np.array([int(r["true_label"]) for r in rows])
    labels = np.load(os.path.join(out_dir, LABELS_FILE))
    noisy = labels != true
    wall = run["wall_time_s"]
    scores = {method: [float(r["score"]) for r in rows]}
    if method == "gdw":
        scores["gdw, weight"] = [float(r["weight_score"]) for r in rows]
    found = {name: detection_of_scores(values, noisy) for name, values in scores.items()}
    result = {name: Row(d.auc, d.precision, None, None, None, wall) for name, d in found.items()}
    result[f"cleanlab on {method}'s record"] = _cleanlab_row(
        labels, np.load(os.path.join(out_dir, PRED_PROBS_FILE)), true, wall)
    return result


def run_cross_validation(config, setting, seed):
    """The CV_FILE of (setting, seed), run in its own process unless finished."""
    out = accuracy.run_dir(config, setting, f"cleanlab{config.folds}fold", seed)
    path = os.path.join(out, CV_FILE)
    want = accuracy.run_flags(config, setting, "base", seed)
    if os.path.exists(path):
        with np.load(path) as cv:
            accuracy.check_same_flags(path, _saved_flags(cv), want)
            return dict(cv)
    if config.report_only:
        return None
    proc = bench.run_module("gdw_tf.bench.label_issues",
                            [f"--cross_validate={setting}:{seed}", *_bench_flags(config)],
                            config.jobs, out)
    if proc.returncode != 0:
        return None
    with np.load(path) as cv:
        return dict(cv)


def _saved_flags(cv):
    """The trainer's flags a CV_FILE was made with (flag name -> value). Files made before
    it held them all hold the argument list instead."""
    saved = json.loads(str(cv["flags"]))
    if isinstance(saved, list):
        return accuracy.typed_flags(saved)[1]
    return saved


def _bench_flags(config):
    return [f"--folds={config.folds}", f"--data_dir={config.data_dir}",
            f"--cifar10n_dir={config.cifar10n_dir}", f"--iterations={config.iterations}",
            f"--train_per_class={config.train_per_class}",
            f"--output_dir={config.output_dir}"]


SIDES = ("cleanlab", "base", "gdw")  # the K-fold trainings, and one run of each method


def evaluate(config, setting, seed, side):
    """{detector: Row} of one side (SIDES) on (setting, seed); {} if not run."""
    if side != "cleanlab":
        run = accuracy.run_one(config, setting, side, seed)
        return report_rows(side, run, accuracy.run_dir(config, setting, side, seed)) if run else {}
    cv = run_cross_validation(config, setting, seed)
    return cleanlab_rows(cv) if cv else {}


DETECTORS = ("base", "gdw", "gdw, weight", "cleanlab on base's record",
             "cleanlab on gdw's record", "cleanlab")
DETECTOR_NAMES = {"cleanlab": "cleanlab, K-fold cross-validation"}


def table(config, results):
    """Markdown: one row per setting x detector, mean ± std over seeds."""
    def cell(values, fmt):
        values = [v for v in values if v is not None]
        if not values:
            return "-"
        return f"{fmt.format(np.mean(values))} ± {fmt.format(np.std(values))}"

    lines = ["| setting | detector | ROC-AUC | precision at the noise count | "
             "find_label_issues: flagged / precision / recall | wall time (s) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for setting in config.settings:
        for name in DETECTORS:
            rows = [results[setting, seed][name] for seed in config.seeds
                    if name in results.get((setting, seed), {})]
            if not rows:
                continue
            flagged = ("-" if rows[0].flagged is None else
                       f"{cell([r.flagged for r in rows], '{:.0f}')} / "
                       f"{cell([r.flagged_precision for r in rows], '{:.3f}')} / "
                       f"{cell([r.flagged_recall for r in rows], '{:.3f}')}")
            runs = (f" ({len(rows)}/{len(config.seeds)} seeds)"
                    if len(rows) < len(config.seeds) else "")
            lines.append(f"| {setting} | {DETECTOR_NAMES.get(name, name)}{runs} | "
                         f"{cell([r.auc for r in rows], '{:.3f}')} | "
                         f"{cell([r.precision_at_noise for r in rows], '{:.3f}')} | {flagged} | "
                         f"{cell([r.wall_s for r in rows], '{:.0f}')} |")
    return "\n".join(lines)


def main(argv):
    """`python -m gdw_tf.bench.label_issues FLAGS`: runs (or reuses) both sides, writes table.md."""
    config = flag_parser.parse(argv, FLAGS, Config.from_flags, "gdw_tf.bench.label_issues", __doc__)
    if FLAGS.cross_validate:
        setting, _, seed = FLAGS.cross_validate.partition(":")
        cross_validate(config, setting, int(seed),
                       accuracy.run_dir(config, setting, f"cleanlab{config.folds}fold", int(seed)))
        return
    if not config.report_only and importlib.util.find_spec("cleanlab") is None:
        raise SystemExit("gdw_tf.bench.label_issues: error: this bench needs cleanlab: "
                         "pip install -r requirements-bench.txt")
    os.makedirs(config.output_dir, exist_ok=True)
    work = [(setting, seed, side) for seed in config.seeds for setting in config.settings
            for side in SIDES]
    with concurrent.futures.ThreadPoolExecutor(config.jobs) as pool:
        done = list(pool.map(lambda w: evaluate(config, *w), work))
    results = {}
    for (setting, seed, _), rows in zip(work, done):
        results.setdefault((setting, seed), {}).update(rows)
    md = table(config, results)
    with open(os.path.join(config.output_dir, "table.md"), "w") as f:
        f.write(md + "\n")
    print(md)


if __name__ == "__main__":
    main(sys.argv)
