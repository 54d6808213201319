"""The paper's data protocol on an in-memory training split, and its seeded random streams.

Order (fixed): 1. hold out the clean, class-balanced meta set; 1b. optionally keep
at most `train_per_class` examples per class (CPU-sized protocols); 2. subsample the
rest to a long tail (if imbalance_factor < 1); 3. corrupt the remaining labels
with the noise transition matrix. The meta set is therefore clean and balanced,
and noise rates are measured on the (possibly long-tailed) training set.
A source that gives its own clean meta split (a folder's ROOT/meta) skips step 1:
`sample_given_meta` takes that split as is or per class, and steps 1b-3 apply to
its training split.

Seeding: each stage (meta split, long tail, flip targets, label noise, and the
pipelines' shuffling and augmentation) draws from its own stream, keyed by the
seed and the stage name, so changing one stage never shifts another's draws and
the same flags give the same result on every machine.

Long tail: class c keeps int(img_max * mu^(c / (C - 1))) examples; mu
(``imbalance_factor``) is the ratio smallest / largest class, in (0, 1]; class 0
is the head and class C-1 the tail. For CIFAR img_max = (50000 - num_meta) / C,
the per-class size after the meta split.

Label noise: a transition matrix T is [C, C] float64 with rows summing to 1;
T[i, j] is the probability that an example of true class i is given label j.

- ``none``:    T = I (``noise_rate`` must be 0).
- ``uniform``: T = r/C * ones + (1 - r) * I. A label may be redrawn as itself,
               so the realised flip rate is r * (1 - 1/C).
- ``flip``:    T = (1 - r) * I, plus r at one other class per row; that class is
               drawn uniformly at random, once per seed. Realised rate r.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import zlib

import numpy as np

log = logging.getLogger(__name__)


# The parameters.
ORDER = ("meta_split", "long_tail", "label_noise")
NOISE_TYPES = ("none", "uniform", "flip")


@dataclasses.dataclass(frozen=True)
class ProtocolConfig:
    """The protocol's parameters, checked once, here, when the config is made.

    Errors name the parameter and value (e.g. "noise_rate must be in [0, 1], got 2").
    noise_type: one of NOISE_TYPES; noise_rate r in [0, 1] (0 with "none");
    imbalance_factor mu in (0, 1]; num_meta >= 0 meta examples (a multiple of C,
    checked against the labels by split_meta); seed >= 0; train_per_class >= 1 or None.
    """

    noise_type: str = "none"
    noise_rate: float = 0.0
    imbalance_factor: float = 1.0
    num_meta: int = 0
    seed: int = 0
    train_per_class: int | None = None

    def __post_init__(self):
        if self.noise_type not in NOISE_TYPES:
            raise ValueError(f"unknown noise_type={self.noise_type!r} (expected one of {', '.join(NOISE_TYPES)})")
        rate = _number(self.noise_rate, "noise_rate", "[0, 1]")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"noise_rate must be in [0, 1], got {self.noise_rate!r}")
        if self.noise_type == "none" and rate != 0.0:
            raise ValueError(f"noise_rate={self.noise_rate!r} has no effect with noise_type='none'; "
                             "set noise_type='uniform' or 'flip', or noise_rate=0")
        if not 0.0 < _number(self.imbalance_factor, "imbalance_factor", "(0, 1]") <= 1.0:
            raise ValueError(f"imbalance_factor must be in (0, 1], got {self.imbalance_factor!r}")
        _integer(self.num_meta, "num_meta", "a non-negative", 0)
        _integer(self.seed, "seed", "a non-negative", 0)
        if self.train_per_class is not None:
            _integer(self.train_per_class, "train_per_class", "a positive", 1)


def _number(value, name: str, interval: str) -> float:
    """float(value), or a ValueError naming `name` when it is no finite number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number):
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    return number


def _integer(value, name: str, kind: str, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise ValueError(f"{name} must be {kind} integer, got {value!r}")


# Seeded random streams.
def rng_for(seed: int, stage: str) -> np.random.Generator:
    """A numpy Generator (PCG64) for `stage`, fully determined by (seed, stage)."""
    return np.random.default_rng([int(seed), zlib.crc32(stage.encode())])


def tf_seed_for(seed: int, stage: str) -> int:
    """An int64-safe seed for tf.data ops (shuffle, Dataset.random) for `stage`."""
    return int(rng_for(seed, stage).integers(0, 2**31 - 1))


# Meta split: the clean, class-balanced meta set, held out before any corruption.
def split_meta(labels, num_classes: int, config: ProtocolConfig) -> tuple[np.ndarray, np.ndarray]:
    """Splits example indices into (meta, rest), both int64 and sorted ascending.

    The meta set holds config.num_meta / C randomly chosen examples of each class
    (drawn from the seed's "meta_split" stream); `rest` is everything else.
    `labels` must be the clean labels: call this before any corruption.
    num_meta must be divisible by C so the meta set is exactly balanced; it is
    an error otherwise rather than a silently unbalanced set. 0: no meta set.
    """
    labels = np.asarray(labels)
    num_meta = config.num_meta
    per_class = _meta_per_class(num_meta, num_classes)
    sizes = np.bincount(labels, minlength=num_classes)
    if per_class > 0 and (sizes <= per_class).any():
        c = int(sizes.argmin())
        raise ValueError(
            f"num_meta={num_meta} asks {per_class} meta examples per class, but class {c} "
            f"has only {int(sizes[c])} training examples (at least one must remain for training)"
        )
    rng = rng_for(config.seed, "meta_split")
    meta = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(num_classes)]
    meta = np.sort(np.concatenate(meta)).astype(np.int64)
    rest = np.setdiff1d(np.arange(labels.size), meta).astype(np.int64)
    return meta, rest


def _meta_per_class(num_meta: int, num_classes: int) -> int:
    """num_meta / C; an error unless divisible, rather than a silently unbalanced meta set."""
    if num_meta % num_classes:
        raise ValueError(
            f"num_meta={num_meta} is not divisible by the number of classes ({num_classes}); "
            f"the meta set must be class-balanced (e.g. num_meta={num_meta // num_classes * num_classes or num_classes})"
        )
    return num_meta // num_classes


def sample_given_meta(labels, num_meta: int | None, seed: int, class_names: list[str]) -> np.ndarray:
    """Which examples of a meta set given by the source to use: int64, sorted ascending.

    num_meta None: all of them, as given. Else num_meta / C of each class (C =
    len(class_names), the names errors use, e.g. the class folders), drawn from
    the seed's "meta_split" stream; a class with fewer is an error.
    """
    labels = np.asarray(labels)
    if num_meta is None:
        return np.arange(labels.size, dtype=np.int64)
    c = len(class_names)
    per_class = _meta_per_class(num_meta, c)
    sizes = np.bincount(labels, minlength=c)
    if (sizes < per_class).any():
        k = int(np.flatnonzero(sizes < per_class)[0])
        raise ValueError(f"num_meta={num_meta} asks {per_class} meta examples per class, but "
                         f"{class_names[k]} has only {int(sizes[k])}")
    rng = rng_for(seed, "meta_split")
    chosen = [rng.permutation(np.flatnonzero(labels == k))[:per_class] for k in range(c)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


# Long tail.
def long_tail_counts(img_max: float, num_classes: int, imbalance_factor: float) -> list[int]:
    """Target size of each class: [int(img_max * mu^(c / (C - 1))) for c in 0..C-1].

    mu = imbalance_factor in (0, 1] (as ProtocolConfig checks it).
    """
    mu = float(imbalance_factor)
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


# Label noise.
def transition_matrix(config: ProtocolConfig, num_classes: int) -> np.ndarray:
    """The [C, C] label transition matrix of config.noise_type at config.noise_rate.

    For ``flip`` the off-diagonal target of each row is drawn from the seed's
    "flip_targets" stream, so it is fixed for a seed and differs across seeds.
    """
    noise_type, rate = config.noise_type, float(config.noise_rate)
    if int(num_classes) < 2:
        raise ValueError(f"label noise needs at least 2 classes, got num_classes={num_classes!r}")
    c = int(num_classes)
    eye = np.eye(c)
    if noise_type == "none":
        return eye
    if noise_type == "uniform":
        return rate / c * np.ones((c, c)) + (1.0 - rate) * eye
    rng = rng_for(config.seed, "flip_targets")
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


def expected_noise_rate(transition: np.ndarray, true_counts) -> float:
    """Expected fraction of changed labels: sum_c n_c (1 - T[c, c]) / sum_c n_c."""
    n = np.asarray(true_counts, np.float64)
    return float((n * (1.0 - np.diag(transition))).sum() / max(n.sum(), 1.0))


def empirical_transition(labels, true_labels, num_classes: int) -> np.ndarray:
    """Row-normalised [C, C] confusion count[true, label] over known true labels."""
    labels = np.asarray(labels)
    true_labels = np.asarray(true_labels)
    known = true_labels >= 0
    counts = np.zeros((num_classes, num_classes))
    np.add.at(counts, (true_labels[known], labels[known]), 1)
    rows = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)


# The protocol.
@dataclasses.dataclass
class ProtocolResult:
    """What the protocol made of a training split of N0 examples.

    Training example i (its `index`) is source example `train_origin[i]`.
    """

    meta_origin: np.ndarray    # int64 [M]: source positions of the meta set (sorted)
    train_origin: np.ndarray   # int64 [N]: source positions of the training set (sorted)
    labels: np.ndarray         # int64 [N]: corrupted labels
    true_labels: np.ndarray    # int64 [N]: clean labels (-1 unknown)
    transition: np.ndarray     # float64 [C, C]: the noise transition matrix used
    img_max: float | None      # long tail: size of the head class target (None if mu = 1)
    long_tail_targets: list[int] | None  # long tail: requested size per class
    shortfall: dict[int, tuple[int, int]]  # class -> (requested, available) when short


def apply_protocol(clean_labels, num_classes: int, config: ProtocolConfig,
                   true_labels=None) -> ProtocolResult:
    """Meta split, then long tail, then label noise (see module docstring).

    clean_labels: int [N0], the labels before corruption (every stage selects by
    them). true_labels: int [N0], the truth when it is not clean_labels (a source's
    own labels, possibly noisy: its truth, -1 where unknown).
    """
    clean = np.asarray(clean_labels, dtype=np.int64)
    truth = clean if true_labels is None else np.asarray(true_labels, dtype=np.int64)
    meta, rest = split_meta(clean, num_classes, config)

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
                "imbalance_factor=%s: some classes have fewer examples than the long-tail "
                "target and keep all they have; class -> (requested, available): %s",
                config.imbalance_factor, shortfall,
            )

    t = transition_matrix(config, num_classes)
    true = clean[train]
    noisy = corrupt_labels(true, t, config.seed)
    return ProtocolResult(meta, train, noisy, truth[train], t, img_max, targets, shortfall)
