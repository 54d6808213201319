"""Long-tailed subsampling: class c keeps int(img_max * mu^(c / (C - 1))) examples.

mu (``imbalance_factor``) is the ratio smallest / largest class, in (0, 1];
class 0 is the head and class C-1 the tail. For CIFAR the protocol uses
img_max = (50000 - num_meta) / C, i.e. the per-class size after the meta split.
"""
from __future__ import annotations

import math

import numpy as np

from gdw_tf.data.seeding import rng_for


def check_imbalance(imbalance_factor: float) -> float:
    """Validates --imbalance_factor; returns it as a float in (0, 1]."""
    try:
        mu = float(imbalance_factor)
    except (TypeError, ValueError):
        raise ValueError(f"--imbalance_factor must be a number in (0, 1], got {imbalance_factor!r}") from None
    if isinstance(imbalance_factor, bool) or not math.isfinite(mu) or not 0.0 < mu <= 1.0:
        raise ValueError(f"--imbalance_factor must be in (0, 1], got {imbalance_factor!r}")
    return mu


def long_tail_counts(img_max: float, num_classes: int, imbalance_factor: float) -> list[int]:
    """Target size of each class: [int(img_max * mu^(c / (C - 1))) for c in 0..C-1]."""
    mu = check_imbalance(imbalance_factor)
    c = int(num_classes)
    if c < 2:
        raise ValueError(f"a long tail needs at least 2 classes, got num_classes={num_classes!r}")
    return [int(img_max * mu ** (k / (c - 1))) for k in range(c)]


def long_tail_subsample(labels, counts, seed: int) -> tuple[np.ndarray, dict[int, tuple[int, int]]]:
    """Keeps a random subset of `counts[c]` examples of each class c.

    Returns (kept indices into `labels`, sorted ascending; shortfall) where
    shortfall maps class -> (requested, available) for classes that had fewer
    examples than requested: those keep all they have (the caller reports it).
    The subset of each class comes from the seed's "long_tail" stream.
    """
    labels = np.asarray(labels)
    rng = rng_for(seed, "long_tail")
    kept, shortfall = [], {}
    for c, want in enumerate(counts):
        members = np.flatnonzero(labels == c)
        if want > members.size:
            shortfall[c] = (int(want), int(members.size))
        kept.append(rng.permutation(members)[: min(want, members.size)])
    return np.sort(np.concatenate(kept)).astype(np.int64), shortfall
