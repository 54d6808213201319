"""`--meta_source=auto`: a meta set chosen from the noisy training data itself.

For users with no verified images at all. Schedule (epochs count from 0):

- warm-up: epochs [0, W) train the backbone with every weight 1 (plain cross-entropy;
  the bi-level method has no meta set yet, `GDWModel(warmup_steps=...)`).
- choice: at the start of epoch W, and again every R epochs (W + R, W + 2R, ...), one
  pass over the training set (unaugmented, no update) scores every example by its
  cross-entropy on its given label; the `per_class` = num_meta / C examples with the
  smallest loss in each given class become the meta set until the next choice. A small
  loss early in training is the usual sign of a correct label (networks fit the
  consistent, correct labels before the wrong ones), which is how FaMUS (Xu et al.,
  CVPR 2021) and CMW-Net (Shu et al., TPAMI 2023) pick meta data without a clean set.
- W = --meta_warmup_epochs (default: a tenth of the epochs, at least 1) and R =
  --meta_refresh_epochs (default: W).

The chosen examples stay in the training set. Taking them out would remove from training
the examples most likely to be correct, exactly the ones a noisy run can least spare, and
for a correct label the meta-gradient and the training gradient point the same way, so
keeping them adds no conflict. The choice is saved with every checkpoint (which examples,
at which epoch), so a resumed run continues with the same meta set, bit for bit under
--deterministic; a run killed between a checkpoint and the next choice makes the same
choice again from the same weights. With known true labels each choice's clean fraction
is reported (results.json `auto_meta`).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class AutoMetaSchedule:
    """When the meta set is chosen (module doc): warm-up W epochs, then every R epochs;
    per_class examples of each class (num_meta / C)."""

    warmup_epochs: int
    refresh_epochs: int
    per_class: int

    def __post_init__(self):
        for name in ("warmup_epochs", "refresh_epochs", "per_class"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"meta_source=auto: {name} must be a positive integer, "
                                 f"got {value!r}")

    @classmethod
    def resolve(cls, epochs, num_meta, num_classes, warmup_epochs=None, refresh_epochs=None):
        """The schedule of a run of `epochs` epochs (defaults: module doc)."""
        if not num_meta:
            raise ValueError("--meta_source=auto chooses --num_meta examples as the meta set; "
                             "--num_meta=0 leaves none")
        warmup = max(1, round(epochs / 10)) if warmup_epochs is None else warmup_epochs
        schedule = cls(warmup, warmup if refresh_epochs is None else refresh_epochs,
                       num_meta // num_classes)
        if schedule.warmup_epochs >= epochs:
            raise ValueError(f"--meta_warmup_epochs={schedule.warmup_epochs} leaves none of the "
                             f"{epochs} epochs for the meta method; use fewer")
        return schedule

    def check_counts(self, labels, class_names):
        """Fails (before any training) if a class has fewer than per_class examples with
        that given label (labels int [N]); the error names the class."""
        counts = np.bincount(np.asarray(labels), minlength=len(class_names))
        for name, count in zip(class_names, counts):
            if count < self.per_class:
                raise ValueError(f"--meta_source=auto chooses {self.per_class} training examples "
                                 f"of each class (--num_meta / classes), but class {name!r} has "
                                 f"{count}; lower --num_meta")

    def choice_epochs(self, epochs):
        """The epochs at whose start the meta set is chosen: W, W + R, ... < epochs."""
        return list(range(self.warmup_epochs, epochs, self.refresh_epochs))

    def current_choice(self, epoch):
        """The choice epoch in force during `epoch` (None during the warm-up)."""
        if epoch < self.warmup_epochs:
            return None
        return epoch - (epoch - self.warmup_epochs) % self.refresh_epochs


def smallest_loss(losses, labels, num_classes, per_class):
    """int64 [num_classes * per_class] sorted indices: the `per_class` examples of smallest
    loss among those with each given label (ties: the lower index). A class with fewer
    examples gives all it has."""
    losses, labels = np.asarray(losses), np.asarray(labels)
    chosen = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        order = np.lexsort((members, losses[members]))  # by loss, then index
        chosen.append(members[order[:per_class]])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def example_losses(model, dataset, labels):
    """float64 [N]: each example's cross-entropy on its label; `dataset` yields (image, label)
    batches of the N examples whose labels are `labels`, in that order
    (DataBundle.train_in_order, DataBundle.train_labels)."""
    logits = np.asarray(model.predict(dataset.map(lambda x, y: x), verbose=0), np.float64)
    labels = np.asarray(labels)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1))
    return log_z - shifted[np.arange(labels.size), labels]


class AutoMetaState(tf.Module):
    """The current choice, saved with the run's checkpoints: `rows` int64 [M] (training
    indices) and `chosen_at` (the epoch it was made at, -1 before the first)."""

    def __init__(self, num_meta):
        super().__init__(name="auto_meta")
        self.rows = tf.Variable(tf.zeros([num_meta], tf.int64), trainable=False, name="rows")
        self.chosen_at = tf.Variable(-1, dtype=tf.int64, trainable=False, name="chosen_at")


def choose(model, bundle, schedule, state, epoch):
    """The meta set in force from `epoch` (a choice epoch): the saved one if it was made
    at `epoch`, else a new choice (stored in `state`). Returns (rows, report or None):
    report (for a new choice) {epoch, num_meta, per_class counts, clean_fraction and
    clean_fraction_per_class (over the chosen examples whose truth is known, e.g. the
    Clothing1M training images that also have a clean label; None where none is),
    truth_known (how many chosen examples that is)}."""
    if int(state.chosen_at.numpy()) == epoch:
        return state.rows.numpy(), None
    labels = bundle.train_labels
    rows = smallest_loss(example_losses(model, bundle.train_in_order, labels), labels,
                         bundle.num_classes, schedule.per_class)
    if rows.size != state.rows.shape[0]:  # AutoMetaSchedule.check_counts prevents it
        raise AssertionError(f"chose {rows.size} of {state.rows.shape[0]} meta examples")
    state.rows.assign(rows)
    state.chosen_at.assign(epoch)
    report = {"epoch": int(epoch), "num_meta": int(rows.size),
              "counts": np.bincount(labels[rows], minlength=bundle.num_classes).tolist(),
              "clean_fraction": None, "clean_fraction_per_class": None, "truth_known": 0}
    truth = bundle.train_true_labels
    if truth is not None:
        known = rows[truth[rows] >= 0]
        clean, given = labels[known] == truth[known], labels[known]
        report["truth_known"] = int(known.size)
        if known.size:
            report["clean_fraction"] = float(clean.mean())
        report["clean_fraction_per_class"] = [
            float(clean[given == c].mean()) if (given == c).any() else None
            for c in range(bundle.num_classes)]
    return rows, report
