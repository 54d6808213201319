"""``digits``: scikit-learn's bundled handwritten digits (1797 8x8 images, 10 classes).

Real data that ships with scikit-learn, so it works offline; the default
dataset for quick runs. Pixels are integers 0..16 (stored as uint8, pixel_max
16). The train/test split is fixed and independent of --seed: within each
class, in the dataset's order, every 4th example (ranks 3, 7, 11, ...) is a
test example, giving 1352 train / 445 test.
"""
from __future__ import annotations

import numpy as np

from gdw_tf.data.sources.base import ArraySplits, SourceOptions, register_source

TEST_EVERY = 4


def digits_test_mask(labels: np.ndarray) -> np.ndarray:
    """bool [N]: True for the fixed test examples (every 4th of each class)."""
    rank = np.zeros(labels.size, np.int64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        rank[members] = np.arange(members.size)
    return rank % TEST_EVERY == TEST_EVERY - 1


@register_source("digits", default_num_meta=100, default_augment="none")
def load_digits(options: SourceOptions) -> ArraySplits:
    """scikit-learn digits, 8x8x1, fixed stratified 3:1 train/test split (offline)."""
    from sklearn.datasets import load_digits as sklearn_digits

    d = sklearn_digits()
    images = d.images.astype(np.uint8)[..., None]
    labels = d.target.astype(np.int64)
    test = digits_test_mask(labels)
    return ArraySplits([str(n) for n in d.target_names], images[~test], labels[~test],
                       images[test], labels[test], pixel_max=16.0)
