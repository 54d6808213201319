"""The paper's data protocol on an in-memory training split.

Order (fixed): 1. hold out the clean, class-balanced meta set; 1b. optionally keep
at most `train_per_class` examples per class (CPU-sized protocols); 2. subsample the
rest to a long tail (if imbalance_factor < 1); 3. corrupt the remaining labels
with the noise transition matrix. The meta set is therefore clean and balanced,
and noise rates are measured on the (possibly long-tailed) training set.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np

from gdw_tf.data.imbalance import check_imbalance, long_tail_counts, long_tail_subsample
from gdw_tf.data.meta_split import split_meta
from gdw_tf.data.noise import check_noise, corrupt_labels, transition_matrix
from gdw_tf.data.seeding import check_seed, rng_for

log = logging.getLogger(__name__)

ORDER = ("meta_split", "long_tail", "label_noise")


@dataclasses.dataclass(frozen=True)
class ProtocolConfig:
    """The protocol flags; `validate()` checks them all (errors name the flag)."""

    noise_type: str = "none"
    noise_rate: float = 0.0
    imbalance_factor: float = 1.0
    num_meta: int = 0
    seed: int = 0
    train_per_class: int | None = None

    def validate(self) -> "ProtocolConfig":
        if self.train_per_class is not None and (
                isinstance(self.train_per_class, bool) or not isinstance(self.train_per_class, (int, np.integer))
                or self.train_per_class < 1):
            raise ValueError(f"--train_per_class must be a positive integer, got {self.train_per_class!r}")
        check_noise(self.noise_type, self.noise_rate)
        check_imbalance(self.imbalance_factor)
        check_seed(self.seed)
        return self


@dataclasses.dataclass
class ProtocolResult:
    """What the protocol made of a training split of N0 examples.

    Training example i (its `index`) is source example `train_origin[i]`.
    """

    meta_origin: np.ndarray    # int64 [M]: source positions of the meta set (sorted)
    train_origin: np.ndarray   # int64 [N]: source positions of the training set (sorted)
    labels: np.ndarray         # int64 [N]: corrupted labels
    true_labels: np.ndarray    # int64 [N]: clean labels
    transition: np.ndarray     # float64 [C, C]: the noise transition matrix used
    img_max: float | None      # long tail: size of the head class target (None if mu = 1)
    long_tail_targets: list[int] | None  # long tail: requested size per class
    shortfall: dict[int, tuple[int, int]]  # class -> (requested, available) when short


def apply_protocol(clean_labels, num_classes: int, config: ProtocolConfig) -> ProtocolResult:
    """Meta split, then long tail, then label noise (see module docstring)."""
    config.validate()
    clean = np.asarray(clean_labels, dtype=np.int64)
    meta, rest = split_meta(clean, config.num_meta, num_classes, config.seed)

    if config.train_per_class is not None:
        rng = rng_for(config.seed, "train_subset")
        rest = np.sort(np.concatenate([
            rng.permutation(rest[clean[rest] == c])[: config.train_per_class]
            for c in range(num_classes)])).astype(np.int64)
    img_max, targets, shortfall = None, None, {}
    train = rest
    if config.imbalance_factor < 1.0:
        img_max = (config.train_per_class if config.train_per_class is not None
                   else (clean.size - config.num_meta) / num_classes)
        targets = long_tail_counts(img_max, num_classes, config.imbalance_factor)
        keep, shortfall = long_tail_subsample(clean[rest], targets, config.seed)
        train = rest[keep]
        if shortfall:
            log.warning(
                "--imbalance_factor=%s: some classes have fewer examples than the long-tail "
                "target and keep all they have; class -> (requested, available): %s",
                config.imbalance_factor, shortfall,
            )

    t = transition_matrix(config.noise_type, config.noise_rate, num_classes, config.seed)
    true = clean[train]
    noisy = corrupt_labels(true, t, config.seed)
    return ProtocolResult(meta, train, noisy, true, t, img_max, targets, shortfall)
