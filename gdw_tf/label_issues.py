"""Finding the mislabelled examples from the learned weights.

After training, `label_issues` turns the run's `gdw_tf.example_record.ExampleRecord`
(per-example averages of the target weight and of the predicted probabilities) into
a ranking:

  weight_score = (w_max - w) / (w_max - w_min) in [0, 1]   (w: averaged target
          weight, max/min over the examples seen; higher = more likely mislabelled)
  probability_score = 1 - p, p: the averaged predicted probability of the given label
  score = probability_score (REPORT_SIGNAL); weight_score is in the CSV beside it
  suggested label = argmax of the averaged probabilities.

Why p(given label): where the learned weights do not single out the wrong labels they
can invert (rank clean labels first), and a ranking by them is then worse than random;
the averaged p(given label) does not (the measurements: docs/evidence.md, "When the
weights can be trusted").

`python -m gdw_tf.train` writes label_issues.csv / label_issues.png for every method
(the weight signal only for those with learned weights, `methods_with_weights()`), and
beside them the averaged probabilities and the given labels as .npy files, row i for the
example of index i, in the form cleanlab's `find_label_issues(labels, pred_probs)` takes;
`python -m gdw_tf.audit` rewrites them from a finished run's checkpoint. From Python,
`write_label_issues(model, out_dir, ...)` writes them for any `GDWModel` trained with
`record_examples=N` (e.g. `method="base"` around any Keras classifier).
"""
import csv
import dataclasses
import os

import numpy as np
import tensorflow as tf

from gdw_tf.files import atomic_open, save_figure, spreadsheet_safe

CSV_FILE = "label_issues.csv"
PNG_FILE = "label_issues.png"
PRED_PROBS_FILE = "label_issues_pred_probs.npy"  # float32 [N, C], row i: example index i
LABELS_FILE = "label_issues_given_labels.npy"    # int64 [N], the given label of example i
CSV_COLUMNS = ("index", "path", "given_label", "suggested_label", "score", "rank", "true_label",
               "given_probability", "weight_score", "visits")
SIGNALS = ("weight", "probability")  # what `score` can be (module doc)
REPORT_SIGNAL = "probability"        # what label_issues.csv's `score` is
DEFAULT_TOP = 64  # suspects shown in label_issues.png


def methods_with_weights():
    """Names of the registered methods that learn per-example weights (bi-level ones)."""
    from gdw_tf.methods.bilevel import BilevelMethod
    from gdw_tf.methods.method import METHODS

    return [name for name in METHODS.names() if issubclass(METHODS.get(name), BilevelMethod)]


@dataclasses.dataclass
class LabelIssues:
    """One entry per training example: those visited in training by score (highest
    first, ties by index), then those never visited, by index.

    index, given_label: int [N]; visits: int [N], the training steps that saw the
    example; score: float [N] in [0, 1] (the weight_score or 1 - given_probability, by
    `signal`); rank: int [N], 1..V over the V visited examples; true_label: int [N], -1
    where unknown. suggested_label (argmax of the averaged probabilities),
    given_probability (their value at the given label) and weight_score (from the
    averaged target weight, module doc): int / float [N]. A never-visited example is no
    suspect: its rank is 0, suggested_label -1, the floats NaN.
    """
    index: np.ndarray
    given_label: np.ndarray
    suggested_label: np.ndarray
    score: np.ndarray
    rank: np.ndarray
    true_label: np.ndarray
    given_probability: np.ndarray
    weight_score: np.ndarray
    visits: np.ndarray
    signal: str = REPORT_SIGNAL

    @property
    def num_ranked(self):
        """How many examples are ranked (visited in training)."""
        return int((self.visits > 0).sum())


@dataclasses.dataclass
class Detection:
    """How well the scores single out the mislabelled examples (truth known).

    auc: ROC-AUC of score for noisy vs clean; precision/recall/f1 when flagging
    the `flagged` = `noisy` top-scored examples (equal to each other then).
    """
    auc: float
    precision: float
    recall: float
    f1: float
    noisy: int
    flagged: int


def label_issues(arrays, signal=REPORT_SIGNAL, with_weights=True):
    """`LabelIssues` from `example_record.RecordArrays`, scored by `signal` (SIGNALS, module
    doc); without learned weights (`with_weights` False) weight_score is NaN and the
    signal must be "probability"."""
    if signal not in SIGNALS:
        raise ValueError(f"unknown signal={signal!r} (expected one of {', '.join(SIGNALS)})")
    if signal == "weight" and not with_weights:
        raise ValueError("signal='weight' needs a method with learned weights")
    seen = arrays.visits > 0
    weight = arrays.target_weight
    weight_score = np.full(weight.shape, np.nan)
    if seen.any() and with_weights:
        high, low = weight[seen].max(), weight[seen].min()
        weight_score[seen] = (high - weight[seen]) / (high - low) if high > low else 0.0
    given_p = np.take_along_axis(arrays.probabilities, arrays.given_label[:, None], axis=1)[:, 0]
    given_p = np.where(seen, given_p, np.nan)
    score = weight_score if signal == "weight" else 1.0 - given_p
    suggested = np.where(seen, arrays.probabilities.argmax(axis=1), -1)
    order = np.lexsort((np.arange(score.size), np.where(seen, -score, 0.0), ~seen))
    rank = np.zeros(score.size, np.int64)
    rank[:int(seen.sum())] = np.arange(1, int(seen.sum()) + 1)
    return LabelIssues(index=order, given_label=arrays.given_label[order],
                       suggested_label=suggested[order], score=score[order], rank=rank,
                       true_label=arrays.true_label[order], given_probability=given_p[order],
                       weight_score=weight_score[order], visits=arrays.visits[order],
                       signal=signal)


def detection(issues):
    """`Detection` of `LabelIssues` over the ranked examples whose truth is known, or None
    without any, or without noise among them."""
    known = (issues.visits > 0) & (issues.true_label >= 0)
    if not known.any():
        return None
    return detection_of_scores(issues.score[known],
                               issues.given_label[known] != issues.true_label[known])


def detection_of_scores(score, noisy):
    """`Detection` of scores float [N] (higher = more likely mislabelled) against the
    truth bool [N]; None without noise or without clean examples."""
    score, noisy = np.asarray(score, np.float64), np.asarray(noisy, bool)
    k = int(noisy.sum())
    if k == 0 or k == noisy.size:
        return None
    from scipy.stats import rankdata

    ranks = rankdata(score)  # average ranks of ties
    auc = (ranks[noisy].sum() - k * (k + 1) / 2) / (k * (noisy.size - k))
    top = np.argsort(-score, kind="stable")[:k]
    hits = int(noisy[top].sum())
    precision = recall = hits / k
    return Detection(auc=float(auc), precision=precision, recall=recall,
                     f1=2 * precision * recall / (precision + recall) if hits else 0.0,
                     noisy=k, flagged=k)


def write_csv(path, issues, paths=None):
    """label_issues.csv: CSV_COLUMNS, one row per example in the order of `issues`; a cell
    is empty where its value is unknown (true_label), not defined (a never-visited
    example's suggestion, scores and rank) or not a file source (path)."""
    def cell(value, form="d"):
        return "" if value < 0 or value != value else format(value, form)  # -1 / NaN: empty

    with atomic_open(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for i in range(issues.index.size):
            index = int(issues.index[i])
            writer.writerow([index, "" if paths is None else spreadsheet_safe(paths[index]),
                             int(issues.given_label[i]), cell(int(issues.suggested_label[i])),
                             cell(issues.score[i], ".6f"), cell(int(issues.rank[i]) or -1),
                             cell(int(issues.true_label[i])),
                             cell(issues.given_probability[i], ".6f"),
                             cell(issues.weight_score[i], ".6f"), int(issues.visits[i])])
    return path


def write_png(path, issues, images, class_names, top=DEFAULT_TOP, pixel_max=255.0):
    """A grid of the `top` suspects: image, "given -> suggested" (class names), score.

    images: indexable by training index, uint8 [H, W, C] each.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = min(top, issues.num_ranked)
    if not count:
        return None
    cols = min(8, count)
    rows = -(-count // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 2.0 * rows + 0.4), squeeze=False,
                             layout="constrained")
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= count:
            continue
        image = np.asarray(images[int(issues.index[k])], np.float32) / pixel_max
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
        given, suggested = (class_names[int(issues.given_label[k])],
                            class_names[int(issues.suggested_label[k])])
        ax.set_title(f"{given} -> {suggested}\n{issues.score[k]:.2f}", fontsize=7)
    fig.suptitle(f"Top {count} suspected label errors (given -> suggested, score)", fontsize=9)
    try:
        return save_figure(fig, path, dpi=110)
    finally:
        plt.close(fig)


@dataclasses.dataclass
class TrainingExamples:
    """What the report shows of the training set: file paths (None: not a file
    source), images by training index (None: not available) and their pixel_max."""
    paths: list | None
    images: object
    pixel_max: float


THUMBNAIL = (96, 96)  # size of the streamed sources' images in label_issues.png


class ImageFiles:
    """Images by training index, decoded from their files on demand (RGB uint8
    [*THUMBNAIL, 3]): the report shows a few of a million."""

    def __init__(self, paths):
        self.paths = paths

    def __getitem__(self, index):
        from PIL import Image

        with Image.open(self.paths[index]) as image:
            return np.asarray(image.convert("RGB").resize(THUMBNAIL))


def training_examples(bundle):
    """Paths and images of the training examples of `bundle`, by stable index, as the
    bundle gives them (`DataBundle.train_files`; e.g. ROOT/train/batch_0/img_1.jpg for
    a folder). In-memory sources: the bundle's own copy of the source's training split
    (decoded, unaugmented pixels). Streamed sources (Clothing1M: paths from the release
    under --manual_dir): images decoded from their files on demand, none without paths.
    """
    paths = bundle.train_files() if bundle.train_files is not None else None
    if bundle.train_origin is None:
        return TrainingExamples(paths, None if paths is None else ImageFiles(paths),
                                bundle.pixel_max)
    images = tf.gather(bundle.source_train_images, bundle.train_origin).numpy()
    return TrainingExamples(paths, images, bundle.pixel_max)


def write_arrays(out_dir, arrays):
    """PRED_PROBS_FILE and LABELS_FILE of `arrays` (RecordArrays): row i is the example of
    index i; a never-visited example's probabilities are uniform (it has no prediction)."""
    probs = np.array(arrays.probabilities, np.float32)
    probs[arrays.visits == 0] = 1.0 / probs.shape[1]
    for name, value in ((PRED_PROBS_FILE, probs),
                        (LABELS_FILE, arrays.given_label.astype(np.int64))):
        with atomic_open(os.path.join(out_dir, name), "wb") as f:
            np.save(f, value, allow_pickle=False)


def write_label_issues(model, out_dir, class_names=None, paths=None, images=None,
                       top=DEFAULT_TOP, pixel_max=255.0, signal=REPORT_SIGNAL):
    """Writes the label-issue report of a trained `GDWModel` kept with record_examples=N into
    `out_dir` (created): label_issues.csv (module doc), the .npy arrays for cleanlab and, with
    `images`, label_issues.png of the `top` suspects. class_names: C names (default "0"..);
    paths: the file of each example by index (the CSV's path column); images: indexable by
    index, uint8 [H, W, C] each, pixel values up to `pixel_max`. Returns (LabelIssues,
    Detection or None: with the truth, the batches' "true_label", or data labels given to
    the record)."""
    from gdw_tf.methods.bilevel import BilevelMethod

    record = getattr(model, "example_record", None)
    if record is None:
        raise ValueError("the model keeps no per-example record: build it with "
                         "GDWModel(..., record_examples=N) and train on batches with an 'index'")
    arrays = record.arrays()
    issues = label_issues(arrays, signal, isinstance(model.method, BilevelMethod))
    os.makedirs(out_dir, exist_ok=True)
    write_csv(os.path.join(out_dir, CSV_FILE), issues, paths)
    write_arrays(out_dir, arrays)
    if images is not None:
        names = class_names or [str(c) for c in range(arrays.probabilities.shape[1])]
        write_png(os.path.join(out_dir, PNG_FILE), issues, images, names, top, pixel_max)
    return issues, detection(issues)


def write_report(out_dir, model, bundle, top=DEFAULT_TOP, signal=REPORT_SIGNAL):
    """`write_label_issues` of `model` trained on `bundle` (a DataBundle: class names, and the
    paths and images of `training_examples`)."""
    examples = training_examples(bundle)
    return write_label_issues(model, out_dir, bundle.class_names, examples.paths,
                              examples.images, top, examples.pixel_max, signal)


def after_training(model, bundle, out_dir, write=True, signal=REPORT_SIGNAL):
    """The trainer's step after fit: the report files (if `write`), scored by `signal`, and
    the results.json entry {"label_issues": {...}}; {} for a run without a record. With
    known truth the entry also has `auc_by_signal` (signal -> ROC-AUC, each signal the method
    has), which tells a weighting that ignores a separating loss (probability high, weight
    low) from wrong labels the loss cannot tell apart (both near 0.5)."""
    from gdw_tf.methods.bilevel import BilevelMethod

    record = getattr(model, "example_record", None)
    if record is None:
        return {}
    with_weights = isinstance(model.method, BilevelMethod)
    if write:
        _, found = write_report(out_dir, model, bundle, signal=signal)
    else:
        found = detection(label_issues(record.arrays(), signal, with_weights))
    entry = {"csv": CSV_FILE, "decay": record.decay, "signal": signal}
    if found is not None:
        entry.update(dataclasses.asdict(found))
        arrays = record.arrays()
        signals = SIGNALS if with_weights else ("probability",)
        entry["auc_by_signal"] = {s: found.auc if s == signal else
                                  detection(label_issues(arrays, s)).auc for s in signals}
    return {"label_issues": entry}


def summary_line(results):
    """One line for the run summary, or None when the run kept no record."""
    entry = results.get("label_issues")
    if entry is None:
        return None
    line = f"Label issues: {entry['csv']} in {results['output_dir']}"
    if entry.get("signal") == "weight":
        line += " (ranked by the learned weights)"
    if "auc" in entry:
        line += (f"; detection ROC-AUC {entry['auc']:.3f}, precision/recall/F1 "
                 f"{entry['f1']:.3f} flagging the top {entry['flagged']} (the noisy count)")
    return line
