"""Holding out the clean, class-balanced meta set before any corruption."""
from __future__ import annotations

import numpy as np

from gdw_tf.data.seeding import rng_for


def check_num_meta(num_meta, num_classes: int, class_sizes) -> int:
    """Validates --num_meta: a non-negative multiple of C that every class can give.

    num_meta must be divisible by C so the meta set is exactly balanced
    (num_meta / C per class); it is an error otherwise rather than a silently
    unbalanced set. 0 means no meta set.
    """
    if isinstance(num_meta, bool) or not isinstance(num_meta, (int, np.integer)) or num_meta < 0:
        raise ValueError(f"--num_meta must be a non-negative integer, got {num_meta!r}")
    if num_meta % num_classes:
        raise ValueError(
            f"--num_meta={num_meta} is not divisible by the number of classes ({num_classes}); "
            f"the meta set must be class-balanced (e.g. --num_meta={num_meta // num_classes * num_classes or num_classes})"
        )
    per_class = num_meta // num_classes
    sizes = np.asarray(class_sizes)
    if per_class > 0 and (sizes <= per_class).any():
        c = int(sizes.argmin())
        raise ValueError(
            f"--num_meta={num_meta} asks {per_class} meta examples per class, but class {c} "
            f"has only {int(sizes[c])} training examples (at least one must remain for training)"
        )
    return int(num_meta)


def split_meta(labels, num_meta: int, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Splits example indices into (meta, rest), both int64 and sorted ascending.

    The meta set holds num_meta / C randomly chosen examples of each class
    (drawn from the seed's "meta_split" stream); `rest` is everything else.
    `labels` must be the clean labels: call this before any corruption.
    """
    labels = np.asarray(labels)
    sizes = np.bincount(labels, minlength=num_classes)
    per_class = check_num_meta(num_meta, num_classes, sizes) // num_classes
    rng = rng_for(seed, "meta_split")
    meta = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(num_classes)]
    meta = np.sort(np.concatenate(meta)).astype(np.int64)
    rest = np.setdiff1d(np.arange(labels.size), meta).astype(np.int64)
    return meta, rest
