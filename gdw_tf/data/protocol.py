"""The paper's data protocol on an in-memory training split, and its seeded random streams.

Order (fixed): 1. hold out the clean, class-balanced meta set; 1b. optionally keep
at most `train_per_class` examples per class (CPU-sized protocols); 2. subsample the
rest to a long tail (if imbalance_factor < 1); 3. corrupt the remaining labels
with the noise transition matrix (instance noise: from their images). The meta
set is therefore clean and balanced, and noise rates are measured on the (possibly
long-tailed) training set.
A source that gives its own clean meta split (a folder's ROOT/meta) skips step 1:
`sample_given_meta` takes that split as is or per class, and steps 1b-3 apply to
its training split.
Meta set by truth (`meta_by_truth`, --meta_source=truth): when the training labels are
the source's own, possibly noisy ones and their truth is known (a labels file's
true_label column, a TFDS true-label feature), step 1 draws the meta set by the TRUE
label, among the examples whose truth is known (never one with truth -1), and labels it
with its true labels; steps 1b-3 then select by the given labels, as training sees them
(so train_per_class caps the examples per given label).

Seeding: each stage (meta split, long tail, flip targets, instance noise's rates
and projections, label noise, and the pipelines' shuffling and augmentation) draws
from its own stream, keyed by the seed and the stage name, so changing one stage
never shifts another's draws and the same flags give the same result on every machine.

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
- ``instance``: instance-dependent noise (Xia et al., "Part-dependent label noise",
               NeurIPS 2020): example i, of true class y and flattened image x in
               [0, 1]^d, keeps its label with probability 1 - q_i, where q_i ~ N(r, 0.1^2)
               truncated to [0, 1]; where it flips, the target follows the image:
               p = q_i * softmax(x @ W[y]) over the other classes, W[y] a [d, C] N(0, 1)
               projection per class (see instance_noise). Realised rate ~ r; r = 0
               flips nothing. Its T is the expected transition: row c is the mean of
               the per-example label distributions over the training examples of class c.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import statistics
import zlib
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)


# The parameters.
ORDER = ("meta_split", "long_tail", "label_noise")
NOISE_TYPES = ("none", "uniform", "flip", "instance")
INSTANCE_STD = 0.1  # instance noise: standard deviation of the per-example flip rates


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
            raise ValueError(f"unknown noise_type={self.noise_type!r} "
                             f"(expected one of {', '.join(NOISE_TYPES)})")
        rate = _number(self.noise_rate, "noise_rate", "[0, 1]")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"noise_rate must be in [0, 1], got {self.noise_rate!r}")
        if self.noise_type == "none" and rate != 0.0:
            raise ValueError(f"noise_rate={self.noise_rate!r} has no effect with "
                             "noise_type='none'; "
                             "set noise_type='uniform', 'flip' or 'instance', or noise_rate=0")
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
def split_meta(labels, num_classes: int, config: ProtocolConfig,
               by_truth: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Splits example indices into (meta, rest), both int64 and sorted ascending.

    The meta set holds config.num_meta / C randomly chosen examples of each class
    (drawn from the seed's "meta_split" stream); `rest` is everything else.
    `labels` must be the clean labels: call this before any corruption.
    by_truth: `labels` are true labels, -1 where unknown (meta_source=truth): an example
    of unknown truth is never chosen, and a class needs num_meta / C known examples
    (the training set is selected afterwards by the given labels).
    num_meta must be divisible by C so the meta set is exactly balanced; it is
    an error otherwise rather than a silently unbalanced set. 0: no meta set.
    """
    labels = np.asarray(labels)
    num_meta = config.num_meta
    per_class = _meta_per_class(num_meta, num_classes)
    sizes = np.bincount(labels[labels >= 0], minlength=num_classes)
    if by_truth and per_class > 0 and (sizes < per_class).any():
        c = int(sizes.argmin())
        raise ValueError(
            f"num_meta={num_meta} asks {per_class} meta examples per class, "
            f"drawn by true label, but "
            f"class {c} has only {int(sizes[c])} training examples whose true label is known"
        )
    if not by_truth and per_class > 0 and (sizes <= per_class).any():
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
            f"the meta set must be class-balanced "
            f"(e.g. num_meta={num_meta // num_classes * num_classes or num_classes})"
        )
    return num_meta // num_classes


def sample_given_meta(labels, num_meta: int | None, seed: int,
                      class_names: list[str]) -> np.ndarray:
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
    ``instance`` has no fixed matrix (its labels depend on the images): see instance_noise.
    """
    noise_type, rate = config.noise_type, float(config.noise_rate)
    if int(num_classes) < 2:
        raise ValueError(f"label noise needs at least 2 classes, got num_classes={num_classes!r}")
    if noise_type == "instance":
        raise ValueError("noise_type='instance' has no fixed transition matrix (labels depend on "
                         "the images); use instance_noise, which returns the expected one")
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
        raise ValueError(f"labels must lie in [0, {c - 1}], "
                         f"got range [{labels.min()}, {labels.max()}]")
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


# Instance-dependent noise.
Features = Callable[[np.ndarray], np.ndarray]  # int64 rows [n] -> float [n, d], values in [0, 1]


def pixel_features(images: np.ndarray, pixel_max: float) -> Features:
    """rows -> float64 [len(rows), H*W*C]: images[rows] flattened and divided by pixel_max.

    Reads only the requested rows, so callers can go through a large uint8
    split in chunks without a float copy of all of it.
    """
    def features(rows: np.ndarray) -> np.ndarray:
        return images[rows].reshape(len(rows), -1).astype(np.float64) / float(pixel_max)

    return features


def instance_flip_rates(n: int, rate: float, seed: int) -> np.ndarray:
    """float64 [n]: q_i ~ N(rate, INSTANCE_STD^2) truncated to [0, 1], one per example.

    Truncation by inverse CDF (no clipping, no rejection): q_i = F^-1(F(0) + u_i (F(1) - F(0)))
    with F the normal's CDF (statistics.NormalDist, pure Python: the same on every machine)
    and u_i the i-th draw of the seed's "instance_rates" stream; the clips only absorb round-off.
    """
    dist = statistics.NormalDist(float(rate), INSTANCE_STD)
    lo, hi = dist.cdf(0.0), dist.cdf(1.0)
    u = rng_for(seed, "instance_rates").random(int(n))
    # Round-off guard: inv_cdf needs a probability strictly inside (0, 1).
    p = np.clip(lo + u * (hi - lo), np.finfo(np.float64).tiny, np.nextafter(1.0, 0.0))
    return np.clip([dist.inv_cdf(v) for v in p.tolist()], 0.0, 1.0)


def instance_noise(labels, features: Features, num_classes: int, rate: float,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Instance-dependent label noise; returns (noisy int64 [N], expected transition
    float64 [C, C]).

    labels: clean int64 [N]; features(rows) -> float [len(rows), d] in [0, 1]: the
    flattened images of examples `rows` (positions in `labels`); read in chunks, one
    class at a time. Example i of class y, flip rate q_i (instance_flip_rates):
    s = x_i @ W[y], s[y] = -inf, p = q_i * softmax(s), p[y] = 1 - q_i; the noisy label
    is the first j with u_i < cumsum(p)[j]. Streams of the seed: "instance_rates" (q),
    "instance_projection" (W[0], ..., W[C-1], each [d, C] N(0, 1), drawn in class
    order) and "label_noise" (u, one uniform per example in example order).
    Expected transition: row c is the mean of the p rows of class c (e_c, the
    identity row, for a class without examples). rate = 0 flips nothing.
    """
    labels = np.asarray(labels, dtype=np.int64)
    c, n = int(num_classes), labels.size
    if c < 2:
        raise ValueError(f"label noise needs at least 2 classes, got num_classes={num_classes!r}")
    if n and (labels.min() < 0 or labels.max() >= c):
        raise ValueError(f"labels must lie in [0, {c - 1}], "
                         f"got range [{labels.min()}, {labels.max()}]")
    expected = np.eye(c)
    if float(rate) == 0.0 or n == 0:
        return labels.copy(), expected
    q = instance_flip_rates(n, rate, seed)
    u = rng_for(seed, "label_noise").random(n)
    projections = rng_for(seed, "instance_projection")
    d = _checked_features(features, np.zeros(1, np.int64), None).shape[1]
    chunk = max(1, 2**22 // d)  # rows per matrix product: ~32 MB of float64 features
    noisy = np.empty(n, dtype=np.int64)
    for k in range(c):
        w = projections.standard_normal((d, c))  # W[k]; drawn for every class, in order
        members = np.flatnonzero(labels == k)
        total = np.zeros(c)
        for start in range(0, members.size, chunk):
            rows = members[start:start + chunk]
            s = _checked_features(features, rows, d) @ w
            s[:, k] = -np.inf
            e = np.exp(s - s.max(axis=1, keepdims=True))
            p = q[rows, None] * e / e.sum(axis=1, keepdims=True)
            p[:, k] = 1.0 - q[rows]
            total += p.sum(axis=0)
            cdf = np.cumsum(p, axis=1)
            cdf[:, -1] = 1.0  # guard against round-off leaving u above the last bin
            noisy[rows] = (u[rows, None] >= cdf).sum(axis=1)
        if members.size:
            expected[k] = total / members.size
    return noisy, expected


def _checked_features(features: Features, rows: np.ndarray, d: int | None) -> np.ndarray:
    x = np.asarray(features(rows), dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != rows.size or (d is not None and x.shape[1] != d):
        raise ValueError(f"features must be [{rows.size}, {d or 'd'}] for {rows.size} rows, "
                         f"got {x.shape}")
    if x.size and (x.min() < 0.0 or x.max() > 1.0):
        raise ValueError(f"features must lie in [0, 1] (pixels divided by pixel_max), "
                         f"got range [{x.min():g}, {x.max():g}]")
    return x


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
    meta_labels: np.ndarray    # int64 [M]: their labels (clean; by truth: the true labels)
    train_origin: np.ndarray   # int64 [N]: source positions of the training set (sorted)
    labels: np.ndarray         # int64 [N]: corrupted labels
    true_labels: np.ndarray    # int64 [N]: clean labels (-1 unknown)
    transition: np.ndarray     # float64 [C, C]: the noise transition matrix used
                               # (instance noise: the expected one, see instance_noise)
    img_max: float | None      # long tail: size of the head class target (None if mu = 1)
    long_tail_targets: list[int] | None  # long tail: requested size per class
    shortfall: dict[int, tuple[int, int]]  # class -> (requested, available) when short


def apply_protocol(clean_labels, num_classes: int, config: ProtocolConfig,
                   features: Features | None = None, true_labels=None,
                   meta_by_truth: bool = False) -> ProtocolResult:
    """Meta split, then long tail, then label noise (see module docstring).

    clean_labels: int [N0], the labels before corruption (every stage selects by
    them, except the meta split with meta_by_truth). true_labels: int [N0], the truth
    when it is not clean_labels (a source's own labels, possibly noisy: its truth, -1
    where unknown). meta_by_truth: draw the meta set by true_labels (split_meta's by_truth).
    features(rows) -> float [len(rows), d] in [0, 1]: the flattened images of the
    training split's examples at source positions `rows` (pixel_features). Needed
    by noise_type="instance" only, and read only for the training examples.
    """
    clean = np.asarray(clean_labels, dtype=np.int64)
    truth = clean if true_labels is None else np.asarray(true_labels, dtype=np.int64)
    meta, rest = split_meta(truth if meta_by_truth else clean, num_classes, config,
                            by_truth=meta_by_truth)

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

    true = clean[train]
    if config.noise_type == "instance":
        if features is None:
            raise ValueError("noise_type='instance' needs the training images: "
                             "pass features=pixel_features(images, pixel_max)")
        noisy, t = instance_noise(true, lambda rows: features(train[rows]), num_classes,
                                  config.noise_rate, config.seed)
    else:
        t = transition_matrix(config, num_classes)
        noisy = corrupt_labels(true, t, config.seed)
    return ProtocolResult(meta, (truth if meta_by_truth else clean)[meta], train, noisy,
                          truth[train], t, img_max, targets, shortfall)
