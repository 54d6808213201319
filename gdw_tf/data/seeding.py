"""Independent, reproducible random streams derived from one integer seed.

Each stage of the data protocol (meta split, long tail, flip targets, label
noise, shuffling, augmentation) draws from its own stream, keyed by the seed
and the stage name, so changing one stage never shifts another's draws and
the same flags give the same result on every machine.
"""
from __future__ import annotations

import zlib

import numpy as np


def check_seed(seed) -> int:
    """Returns `seed` as a non-negative int or raises naming --seed."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def rng_for(seed: int, stage: str) -> np.random.Generator:
    """A numpy Generator (PCG64) for `stage`, fully determined by (seed, stage)."""
    return np.random.default_rng([check_seed(seed), zlib.crc32(stage.encode())])


def tf_seed_for(seed: int, stage: str) -> int:
    """An int64-safe seed for tf.data ops (shuffle, Dataset.random) for `stage`."""
    return int(rng_for(seed, stage).integers(0, 2**31 - 1))
