"""A JSON-serialisable description of a built dataset, and a writer for it.

Keys: dataset, num_classes, class_names, image_shape (model input),
stored_image_shape, num_train, num_meta, num_test, steps_per_epoch,
counts {train (by corrupted label), train_true (by clean label), meta, test},
noise {type, rate, expected_rate, realised_rate, realised_rate_per_class
(by clean class), transition_matrix, empirical_transition_matrix},
imbalance {factor, img_max, target_counts, shortfall},
protocol {order, seed, num_meta, meta_source, augment, batch_size,
meta_batch_size, data_dir, manual_dir, cache_dir}.
Unknown / undefined numbers (e.g. a class with no examples) are null.
For clothing1m, noise.type is "real", the transition matrix is null, and the
realised rates, empirical matrix and counts.train_true cover only the
noisy_train images that also have a clean label.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np


def jsonable(value):
    """Recursively converts numpy values/arrays to Python ones and NaN to None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def expected_noise_rate(transition: np.ndarray, true_counts) -> float:
    """Expected fraction of changed labels: sum_c n_c (1 - T[c, c]) / sum_c n_c."""
    n = np.asarray(true_counts, np.float64)
    return float((n * (1.0 - np.diag(transition))).sum() / max(n.sum(), 1.0))


def write_summary(summary: dict, path: str) -> str:
    """Writes `summary` as indented JSON to `path` (parent folders created); returns path."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(jsonable(summary), f, indent=2, allow_nan=False)
        f.write("\n")
    return path
