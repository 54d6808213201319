"""Synthetic label noise: transition matrices and label corruption.

A transition matrix T is [C, C] float64 with rows summing to 1; T[i, j] is the
probability that an example of true class i is given label j.

- ``none``:    T = I (``noise_rate`` must be 0).
- ``uniform``: T = r/C * ones + (1 - r) * I. A label may be redrawn as itself,
               so the realised flip rate is r * (1 - 1/C).
- ``flip``:    T = (1 - r) * I, plus r at one other class per row; that class is
               drawn uniformly at random, once per seed. Realised rate r.
"""
from __future__ import annotations

import math

import numpy as np

from gdw_tf.data.seeding import rng_for

NOISE_TYPES = ("none", "uniform", "flip")


def check_noise(noise_type: str, noise_rate: float) -> float:
    """Validates --noise_type / --noise_rate; returns the rate as a float."""
    if noise_type not in NOISE_TYPES:
        raise ValueError(
            f"unknown --noise_type={noise_type!r} (expected one of {', '.join(NOISE_TYPES)})"
        )
    try:
        rate = float(noise_rate)
    except (TypeError, ValueError):
        raise ValueError(f"--noise_rate must be a number in [0, 1], got {noise_rate!r}") from None
    if isinstance(noise_rate, bool) or not math.isfinite(rate) or not 0.0 <= rate <= 1.0:
        raise ValueError(f"--noise_rate must be in [0, 1], got {noise_rate!r}")
    if noise_type == "none" and rate != 0.0:
        raise ValueError(
            f"--noise_rate={noise_rate!r} has no effect with --noise_type=none; "
            "set --noise_type=uniform or flip, or --noise_rate=0"
        )
    return rate


def transition_matrix(noise_type: str, noise_rate: float, num_classes: int, seed: int = 0) -> np.ndarray:
    """The [C, C] label transition matrix of `noise_type` at `noise_rate`.

    For ``flip`` the off-diagonal target of each row is drawn from the seed's
    "flip_targets" stream, so it is fixed for a seed and differs across seeds.
    """
    rate = check_noise(noise_type, noise_rate)
    if int(num_classes) < 2:
        raise ValueError(f"label noise needs at least 2 classes, got num_classes={num_classes!r}")
    c = int(num_classes)
    eye = np.eye(c)
    if noise_type == "none":
        return eye
    if noise_type == "uniform":
        return rate / c * np.ones((c, c)) + (1.0 - rate) * eye
    rng = rng_for(seed, "flip_targets")
    t = (1.0 - rate) * eye
    for i in range(c):
        others = np.delete(np.arange(c), i)
        t[i, rng.choice(others)] += rate
    return t


def flip_targets(transition: np.ndarray) -> np.ndarray:
    """For a flip matrix, the [C] off-diagonal target class of each row."""
    off = transition - np.diag(np.diag(transition))
    return off.argmax(axis=1)


def corrupt_labels(labels, transition: np.ndarray, seed: int) -> np.ndarray:
    """Redraws each label y from row T[y]; returns int64 labels, same shape.

    Draws come from the seed's "label_noise" stream: one uniform number per
    example, in example order, so the result depends only on (labels, T, seed).
    """
    labels = np.asarray(labels)
    t = np.asarray(transition, dtype=np.float64)
    c = t.shape[0]
    if t.shape != (c, c) or not np.allclose(t.sum(axis=1), 1.0) or (t < 0).any():
        raise ValueError(f"transition matrix must be [C, C] row-stochastic, got shape {t.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= c):
        raise ValueError(f"labels must lie in [0, {c - 1}], got range [{labels.min()}, {labels.max()}]")
    if np.array_equal(t, np.eye(c)):
        return labels.astype(np.int64)
    u = rng_for(seed, "label_noise").random(labels.shape)
    cdf = np.cumsum(t, axis=1)
    cdf[:, -1] = 1.0  # guard against round-off leaving u above the last bin
    out = np.empty(labels.shape, dtype=np.int64)
    for k in range(c):  # per true class: one searchsorted over its members
        members = labels == k
        out[members] = np.searchsorted(cdf[k], u[members], side="right")
    return out


def realised_noise(labels, true_labels, num_classes: int) -> tuple[float, list[float]]:
    """Fraction of examples with label != true_label: overall and per true class.

    Examples with true_label < 0 (unknown) are ignored; classes without any
    known example get NaN (written as null in JSON summaries).
    """
    labels = np.asarray(labels)
    true_labels = np.asarray(true_labels)
    known = true_labels >= 0
    wrong = labels[known] != true_labels[known]
    overall = float(wrong.mean()) if wrong.size else float("nan")
    per_class = []
    for k in range(num_classes):
        sel = true_labels[known] == k
        per_class.append(float(wrong[sel].mean()) if sel.any() else float("nan"))
    return overall, per_class


def empirical_transition(labels, true_labels, num_classes: int) -> np.ndarray:
    """Row-normalised [C, C] confusion count[true, label] over known true labels."""
    labels = np.asarray(labels)
    true_labels = np.asarray(true_labels)
    known = true_labels >= 0
    counts = np.zeros((num_classes, num_classes))
    np.add.at(counts, (true_labels[known], labels[known]), 1)
    rows = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
