"""What a dataset source is and what it returns.

A source is registered under one name (``--dataset``) with
``@register_source(name, ...)`` on a loader ``load(options) -> splits``. The
loader returns either

- ``ArraySplits``: decoded uint8 train/test arrays held in memory (the data
  protocol -- meta split, long tail, noise -- is then applied by gdw_tf.data), or
- ``StreamSplits``: splits read from disk as a stream (Clothing1M), whose
  train/meta/test splits and label noise are given by the release itself.

Sources that decode files to arrays cache them with `cached_arrays`: one .npz
per entry, named by the SHA-256 of a JSON-serialisable key describing the inputs
(paths, file sizes, modification times, format version), so any change to the
inputs selects a new entry instead of returning stale data.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import zipfile
from typing import Callable, Union

import numpy as np

from gdw_tf.defaults import TFDS_PREFIX  # noqa: F401  --dataset=tfds:NAME[/CONFIG] (tfds_any)
from gdw_tf.files import atomic_open
from gdw_tf.registry import Registry

log = logging.getLogger(__name__)




@dataclasses.dataclass(frozen=True)
class SourceOptions:
    """Where a source reads and caches data (--data_dir, --manual_dir, --cache_dir),
    whether a release build leaves undecodable images out (--skip_bad_images), a
    file of training labels (--labels) with what to do with images it lacks
    (--labels_missing: "error" or "skip"), a TFDS dataset's label features and splits
    (--label_key, --true_label_key, --train_split, --test_split), and the side images
    are resized to (--image_size; every in-memory source, see IMAGE_SIZE_OPTION). A field
    at its default is unset."""

    data_dir: str | None = None
    manual_dir: str | None = None
    cache_dir: str | None = None
    skip_bad_images: bool = False
    labels: str | None = None
    labels_missing: str = "error"
    label_key: str = "label"
    true_label_key: str | None = None
    train_split: str = "train"
    test_split: str = "test"
    image_size: int | None = None


# Every in-memory source takes it: a source that decodes files resizes while decoding (and
# keys its cache on it), the bundle resizes what any other returns (resize_images).
IMAGE_SIZE_OPTION = "image_size"


def resize_images(images, size: int):
    """uint8 images [N, H, W, C] (array or tensor) -> uint8 tf.Tensor [N, size, size, C]:
    bilinear, antialiased (a weighted mean of the pixels, so values stay in their range),
    rounded."""
    import tensorflow as tf

    x = tf.image.resize(tf.cast(images, tf.float32), (size, size), method="bilinear",
                        antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)


@dataclasses.dataclass(frozen=True)
class LabelsFile:
    """A file that gave the training labels (--labels): its path, its data rows,
    whether it has a true_label column, and how many training images it did not
    list and were left out (--labels_missing=skip)."""

    path: str
    rows: int
    true_label: bool
    unlisted_skipped: int = 0


@dataclasses.dataclass
class ArraySplits:
    """Decoded train/test splits, and optionally a meta split given by the source.

    images: uint8 [N, H, W, C]; labels: int64 [N] in [0, num_classes);
    pixel values lie in [0, pixel_max].
    train_true_labels: int64 [N], the true class of each training image, -1 where
    unknown (the labels are the user's own); None on input means the labels are
    the truth (set to a copy of train_labels).
    meta_images / meta_labels: a clean meta set the source gives (both or neither);
    the bundle then uses it as is instead of holding one out of train, and
    meta_dir (its folder, one sub-folder per class) names it in errors and in
    data_summary.json.
    train_files: the file of each training image (absolute paths), for file sources;
    test_files / meta_files: the same for the test and meta splits.
    labels_file: the file that gave the training labels, if any.
    given_meta: what meta_source="given" holds out of train when the source gives no meta
    split: "labels" (by the labels, before synthetic noise), "truth" (by the true labels,
    as meta_source="truth": the labels may be noisy and their truth is known) or "none"
    (the labels may be noisy and their truth is unknown: no clean set to hold out).
    provenance: what identifies the data beyond its arrays, e.g. {"tfds": name, "config":
    ..., "version": str, "splits": {"train": name, "test": name}, "label_key": ...,
    "true_label_key": ...}; None where the arrays (and the source's name) say it all.
    It is part of the run's data fingerprint (gdw_tf.data.fingerprint).
    """

    class_names: list[str]
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    pixel_max: float = 255.0
    train_true_labels: np.ndarray | None = None
    meta_images: np.ndarray | None = None
    meta_labels: np.ndarray | None = None
    meta_dir: str | None = None
    train_files: list[str] | None = None
    labels_file: LabelsFile | None = None
    given_meta: str = "labels"
    provenance: dict | None = None
    test_files: list[str] | None = None
    meta_files: list[str] | None = None
    _digests: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        c = len(self.class_names)
        if (self.meta_images is None) != (self.meta_labels is None):
            raise ValueError("meta split: give both meta_images and meta_labels, or neither")
        splits = ("train", "test") if self.meta_images is None else ("train", "test", "meta")
        for split in splits:
            images = getattr(self, f"{split}_images")
            labels = np.asarray(getattr(self, f"{split}_labels"), dtype=np.int64)
            setattr(self, f"{split}_labels", labels)
            if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(labels):
                raise ValueError(
                    f"{split} split: expected uint8 images [N, H, W, C] and N labels, got "
                    f"{images.dtype} {images.shape} and {labels.shape}"
                )
            if labels.size and (labels.min() < 0 or labels.max() >= c):
                raise ValueError(f"{split} split: labels outside [0, {c - 1}]")
            if images.shape[1:] != self.train_images.shape[1:]:
                raise ValueError(
                    f"train images {self.train_images.shape[1:]} and {split} images "
                    f"{images.shape[1:]} differ in shape"
                )
        true = self.train_labels if self.train_true_labels is None else self.train_true_labels
        self.train_true_labels = np.array(true, dtype=np.int64)
        if self.train_true_labels.shape != self.train_labels.shape:
            raise ValueError(f"train split: {self.train_true_labels.shape} true labels for "
                             f"{self.train_labels.shape} labels")
        if self.train_true_labels.size and (self.train_true_labels.min() < -1
                                            or self.train_true_labels.max() >= c):
            raise ValueError(f"train split: true labels outside [-1, {c - 1}]")
        if self.given_meta not in ("labels", "truth", "none"):
            raise ValueError(f"given_meta must be labels, truth or none, got {self.given_meta!r}")
        for split in splits:
            files = getattr(self, f"{split}_files")
            if files is not None and len(files) != len(getattr(self, f"{split}_labels")):
                raise ValueError(f"{split} split: {len(files)} files for "
                                 f"{len(getattr(self, f'{split}_labels'))} images")

    def digests(self, split: str) -> list[str]:
        """The pixel digest of every image of `split` ("train", "test", "meta"), computed
        once (`gdw_tf.data.fingerprint.image_digests`)."""
        if split not in self._digests:
            from gdw_tf.data.fingerprint import image_digests
            self._digests[split] = image_digests(getattr(self, f"{split}_images"))
        return self._digests[split]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple:
        return tuple(int(d) for d in self.train_images.shape[1:])


@dataclasses.dataclass(frozen=True)
class RecordFiles:
    """One split as it lies on disk, for reading by position.

    files[i] (TFRecord) holds counts[i] serialized examples; record position
    r = 0 .. sum(counts) - 1 counts through the files in order.
    parse(serialized, a tf.string scalar) -> the dict StreamSplits.read yields.
    """

    files: tuple[str, ...]
    counts: tuple[int, ...]
    parse: Callable[[object], dict]

    @property
    def size(self) -> int:
        return sum(self.counts)


@dataclasses.dataclass
class StreamSplits:
    """Splits streamed from disk, with the meta set and noise fixed by the release.

    read(role, shuffle_files, seed) -> tf.data.Dataset of dicts
      {"image": encoded image bytes (tf.string), "label", "true_label", "index": int64}
    for role in ("train", "meta", "test"). true_label is -1 where unknown.
    records(role) -> the role's RecordFiles (what the positioned pipelines read).
    train_files() -> the file of each training image (absolute paths) by index, listed
    on demand (what the label-issue report names), or None where unknown.
    `counts[role]` is the per-class label count; `noise` holds the realised
    noise statistics of the train split (see gdw_tf.data.bundle for the keys).
    """

    class_names: list[str]
    image_shape: tuple                     # e.g. (None, None, 3): images vary in size
    read: Callable[[str, bool, int], object]
    sizes: dict[str, int]                  # role -> number of examples
    counts: dict[str, list[int]]           # role -> per-class label counts
    noise: dict                            # realised noise of the train split
    split_names: dict[str, str]            # role -> the release's split name
    records: Callable[[str], RecordFiles]
    pixel_max: float = 255.0
    skipped_images: list[str] = dataclasses.field(default_factory=list)  # left out by the build
    train_files: Callable[[], list[str] | None] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


Splits = Union[ArraySplits, StreamSplits]


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """A registered source: its loader and per-dataset defaults.

    default_num_meta(num_classes) -> int, or None when the release fixes the
    meta set. default_augment(image_shape) -> recipe name.
    fixed_protocol: for a release with real noise and its own meta split, what
    it fixes (e.g. "real label noise and a fixed meta set (its clean_val split)");
    the protocol flags are then rejected before any data is read. None: the
    protocol applies.
    options: the SourceOptions fields the loader reads; any other one set is
    rejected (None: not declared, the GENERAL_OPTIONS are accepted).
    num_classes / stored_shape: known before reading any data (else None).
    """

    name: str
    load: Callable[[SourceOptions], Splits]
    default_num_meta: Callable[[int], int | None]
    default_augment: Callable[[tuple], str]
    description: str
    fixed_protocol: str | None = None
    options: tuple[str, ...] | None = None
    num_classes: int | None = None
    stored_shape: tuple | None = None


SOURCES = Registry("dataset")
# What a source that declares no options accepts.
GENERAL_OPTIONS = ("data_dir", "manual_dir", "cache_dir")


def register_source(name: str, *, default_num_meta, default_augment, fixed_protocol=None,
                    options=None, num_classes=None, stored_shape=None):
    """Decorator registering `load(options) -> Splits` as dataset `name`.

    default_num_meta / default_augment may be constants or callables; the other
    keywords are SourceSpec's fields.
    """

    def as_fn(v):
        return v if callable(v) else (lambda _: v)

    def add(load):
        spec = SourceSpec(name, load, as_fn(default_num_meta), as_fn(default_augment),
                          (load.__doc__ or "").strip().splitlines()[0] if load.__doc__ else "",
                          fixed_protocol, None if options is None else tuple(options), num_classes,
                          None if stored_shape is None else tuple(stored_shape))
        SOURCES.register(name)(spec)
        return load

    return add


def available_datasets() -> list[str]:
    """Names accepted by gdw_tf.data.build (and --dataset)."""
    return SOURCES.names()


# The decoded-array cache.
CACHE_ENV = "GDW_TF_CACHE_DIR"


def default_cache_dir() -> str:
    """$GDW_TF_CACHE_DIR, else ~/.cache/gdw_tf."""
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "gdw_tf")


def cache_path(cache_dir: str | None, label: str, key) -> str:
    """File for (label, key): <cache_dir>/<label>-<sha256(key)[:16]>.npz."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)[:60]
    return os.path.join(cache_dir or default_cache_dir(), f"{safe}-{digest}.npz")


def cached_arrays(cache_dir: str | None, label: str, key,
                  compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Returns compute()'s dict of arrays, loading it from the cache when present.

    A fresh result is written atomically (temp file + rename), so a crash never
    leaves a half-written entry; an entry that cannot be read back whole (truncated,
    damaged) is rebuilt, with a warning naming it. Arrays must not be object arrays.
    """
    path = cache_path(cache_dir, label, key)
    if os.path.exists(path):
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
            log.warning("ignoring unreadable cache file %s (%s); rebuilding it", path, e)
    arrays = compute()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)
    log.info("cached decoded arrays in %s", path)
    return arrays
