"""``build()``: one call from dataset name + protocol flags to ready tf.data pipelines.

The bundle's `summary` (written as data_summary.json) is JSON-serialisable.
Keys: dataset, num_classes, class_names, image_shape (model input),
stored_image_shape, num_train, num_meta, num_test, steps_per_epoch,
counts {train (by corrupted label), train_true (by clean label), meta, test},
labels_file {path, rows, true_label, unlisted_skipped} (in-memory sources; null unless
a file gave the training labels, --labels),
noise {type, rate, truth (in-memory sources: what the true labels are, the labels before
synthetic noise, a labels file's true_label column, or unknown), expected_rate, realised_rate,
realised_rate_per_class (by clean class), transition_matrix, empirical_transition_matrix},
imbalance {factor, img_max, target_counts, shortfall},
protocol {order, seed, num_meta, meta_source (held out of train: by label before corruption,
or by true label (--meta_source=truth); the source's own meta split, e.g. a folder's ROOT/meta;
or auto: chosen from train by the trainer), meta_by_truth (the meta set was drawn by true label),
train_per_class, augment, batch_size, meta_batch_size, data_dir, manual_dir, cache_dir,
skip_bad_images, labels, labels_missing, label_key, true_label_key, train_split, test_split,
image_size}, provenance (in-memory sources: ArraySplits.provenance, e.g. a TFDS dataset's name,
config, version, splits and label keys; null where the arrays say it all).
Unknown / undefined numbers (e.g. a class with no examples, the noise of labels
whose truth is unknown) are null.
For instance noise, noise.transition_matrix is the expected transition (row c: the
mean of the per-example label distributions over the training examples of clean
class c) and expected_rate follows from it.
For clothing1m, noise.type is "real", the transition matrix is null, and the
realised rates, empirical matrix and counts.train_true cover only the
noisy_train images that also have a clean label.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
from typing import Callable, Literal

import numpy as np
import tensorflow as tf

from gdw_tf.data import fingerprint, pipeline
from gdw_tf.data.augment import AUGMENTATIONS, Augmentation, make_augmentation
from gdw_tf.data.fingerprint import DataFingerprint
from gdw_tf.data.protocol import (
    ORDER,
    ProtocolConfig,
    apply_protocol,
    empirical_transition,
    expected_noise_rate,
    pixel_features,
    realised_noise,
    sample_given_meta,
)
from gdw_tf.data.sources import ArraySplits, SourceOptions, SourceSpec, StreamSplits, get_source
from gdw_tf.data.sources.base import GENERAL_OPTIONS, IMAGE_SIZE_OPTION, resize_images
from gdw_tf.files import atomic_open

DEFAULT_DATASET = "digits"
META_SOURCES = ("given", "auto", "truth")
STREAM_SHUFFLE_BUFFER = 4096  # encoded images held for shuffling streamed splits

log = logging.getLogger(__name__)


@dataclasses.dataclass
class DataBundle:
    """Everything the trainer needs from the data layer.

    train:     one epoch per pass, reshuffled each epoch, augmented, batches of
               {"image": float32 [B, H, W, C], "label", "true_label", "index": int32 [B]}
               (drop_remainder=True; `index` in 0..num_train-1 is stable).
    meta:      infinite, shuffled, train-augmented (image float32 [Bm, H, W, C], label int32 [Bm]);
               None when num_meta = 0.
    meta_once: one pass over the meta set, batched, train-augmented; None when num_meta = 0.
    test:      one pass, not augmented, (image, label), last batch may be smaller.
    train_labels / train_true_labels / train_origin / meta_origin: int64 numpy arrays for
    in-memory sources (origin = position in the source's training split; meta_origin: in
    its meta split when it gives one), None for streams (whose meta_source="auto" bundles
    have train_labels / train_true_labels by record position, the order of train_in_order).
    train_true_labels is -1 where the truth is unknown; the training batches then have no
    "true_label".
    train_from(first, last): the training batches of global steps [first, last)
               (step = epoch * steps_per_epoch + batch), elements as `train`; every batch
               is a pure function of the seed and its step, so a run resumed at any
               step sees what an uninterrupted one sees (`pipeline.positional_array_dataset`;
               streamed sources: `pipeline.positional_record_dataset`, which reads the
               split's files by position). Its epochs are in another order than `train`'s.
    meta_from(first): the meta batches paired with global steps first, first + 1, ...
               (infinite, elements as `meta`); None without a meta set.
    meta_source: "given" (the dataset's clean meta set: held out, or the release's) or
               "auto" (none given: the trainer chooses training examples as the meta set,
               `gdw_tf.auto_meta`; num_meta is then the number it chooses, meta is None).
    train_in_order: one pass over the training examples in index order (streams, with
               meta_source="auto" only: record order), unaugmented (the test transform),
               (image, label) batches with the last one smaller; what a pass computing each
               example's loss reads.
    meta_from_train(indices, first, stage): in-memory sources and meta_source="auto"
               streams (indices: record positions): endless meta batches
               (elements as `meta`) over the training examples `indices` with their given
               labels, positioned like meta_from (batch k from `first` on is a pure function
               of seed, stage and k), for a meta set chosen from the training data.
    source_train_images: in-memory sources: the source's training split as loaded
               (uint8 [N0, H, W, C], pixel values in [0, pixel_max]), addressed by
               train_origin. What a report shows of an example (label_issues).
    train_files() -> the file of each training example (absolute paths) by stable
               index, listed on demand; None (or no train_files): not a file source,
               or the files are not known.
    fingerprint: the source's data as a run binds them (`gdw_tf.data.fingerprint`).
    """

    name: str
    train: tf.data.Dataset
    meta: tf.data.Dataset | None
    meta_once: tf.data.Dataset | None
    test: tf.data.Dataset
    num_classes: int
    image_shape: tuple
    num_train: int
    num_meta: int
    num_test: int
    batch_size: int
    meta_batch_size: int
    steps_per_epoch: int
    class_names: list[str]
    augment: str
    summary: dict
    train_labels: np.ndarray | None = None
    train_true_labels: np.ndarray | None = None
    train_origin: np.ndarray | None = None
    meta_origin: np.ndarray | None = None
    train_from: Callable[[int, int], tf.data.Dataset] | None = None
    meta_from: Callable[[int], tf.data.Dataset] | None = None
    meta_source: str = "given"
    train_in_order: tf.data.Dataset | None = None
    meta_from_train: Callable[[np.ndarray, int, str], tf.data.Dataset] | None = None
    source_train_images: tf.Tensor | None = None
    train_files: Callable[[], list[str] | None] | None = None
    pixel_max: float = 255.0
    fingerprint: DataFingerprint | None = None

    def write_summary(self, path: str) -> str:
        """Writes `summary` as JSON to `path`."""
        return write_summary(self.summary, path)


def _check_batch(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def build(name: str = DEFAULT_DATASET, *, data_dir: str | None = None,
          manual_dir: str | None = None, noise_type: str = "none", noise_rate: float = 0.0,
          imbalance_factor: float = 1.0,
          num_meta: int | None = None, seed: int = 0, batch_size: int = 100,
          meta_batch_size: int | None = None, augment: str | None = None,
          cache_dir: str | None = None, train_per_class: int | None = None,
          skip_bad_images: bool = False, labels: str | None = None,
          labels_missing: str = "error", meta_source: str = "given", label_key: str = "label",
          true_label_key: str | None = None, train_split: str = "train", test_split: str = "test",
          image_size: int | None = None) -> DataBundle:
    """Loads dataset `name` (see available_datasets()), applies the protocol, builds pipelines.

    Protocol (in-memory sources): hold out num_meta clean examples (num_meta / C
    per class; default per dataset), then long tail (imbalance_factor < 1), then
    label noise (noise_type, noise_rate); all draws seeded by `seed`.
    train_per_class caps the training examples per class after the meta split
    (a smaller, still balanced set for CPU-sized protocols; it is then img_max).
    augment: recipe name (available_augmentations()); default per dataset.
    A release with real noise (clothing1m) takes no protocol parameters; its build
    decodes every image first and fails listing the bad ones, unless
    skip_bad_images leaves them out.
    A source may give its own meta set (a folder's ROOT/meta): it is used as is
    (num_meta=None) or subsampled to num_meta / C per class, never mixed with train;
    the protocol then applies to train only. labels / labels_missing: a file of
    training labels and what to do with images it lacks (folder only, see
    gdw_tf.data.sources.folder).
    meta_source="truth" (in-memory sources whose training labels have a known truth, e.g. a
    labels file with a true_label column): the meta set of num_meta / C examples per class
    is held out of train by TRUE label (an example of unknown truth is never chosen) and
    labelled with it; train_per_class then caps the rest per given label (protocol.split_meta).
    meta_source="auto" (every source): no meta set is held out and a source's own meta split
    is not used; every training example stays noisy training data and num_meta is how
    many of them the trainer chooses as its meta set (DataBundle.meta_from_train;
    streamed sources: default the release's meta split size, rounded down to a multiple
    of the classes). A folder with ROOT/meta is refused: it has a clean meta set.
    label_key, true_label_key, train_split, test_split: a TFDS dataset's (name
    "tfds:NAME[/CONFIG]", gdw_tf.data.sources.tfds_any) training label feature, true label
    feature (with it, meta_source="given" holds the meta set out by true label, as "truth";
    without it no meta set is held out: num_meta 0) and splits.
    image_size: in-memory sources: every image (train, meta, test) resized to image_size x
    image_size when loaded (bilinear, antialiased); None: as stored.
    Every parameter is checked here, once, before any data is read (the protocol's
    by ProtocolConfig; only the num_meta checks that need the class sizes come
    later); errors name the parameter and value.
    """
    spec = get_source(name)
    if meta_source not in META_SOURCES:
        raise ValueError(f"unknown meta_source={meta_source!r} "
                         f"(expected one of {', '.join(META_SOURCES)})")
    if meta_source == "truth" and spec.fixed_protocol:
        raise ValueError(f"meta_source=truth holds a clean meta set out of the training split by "
                         f"true label, but {spec.name} has {spec.fixed_protocol}; "
                         "leave meta_source unset")
    if image_size is not None:
        _check_batch("image_size", image_size)
    options = SourceOptions(data_dir, manual_dir, cache_dir, bool(skip_bad_images), labels,
                            labels_missing, label_key, true_label_key, train_split, test_split,
                            image_size)
    # First: what this source cannot take.
    _check_source_options(spec, options, noise_type=(noise_type, "none"),
                          noise_rate=(noise_rate, 0.0),
                          imbalance_factor=(imbalance_factor, 1.0),
                          num_meta=(num_meta if meta_source != "auto" else None, None),
                          train_per_class=(train_per_class, None))
    config = ProtocolConfig(noise_type, noise_rate, imbalance_factor,
                            0 if num_meta is None else num_meta, seed, train_per_class)
    batch_size = _check_batch("batch_size", batch_size)
    meta_batch_given = meta_batch_size is not None
    meta_batch_size = (batch_size if meta_batch_size is None
                       else _check_batch("meta_batch_size", meta_batch_size))
    if meta_batch_given and num_meta is not None:
        _check_meta_batch(meta_batch_size, num_meta)
    if augment is not None:
        AUGMENTATIONS.get(augment)  # fail before reading any data
    splits = spec.load(options)
    if isinstance(splits, ArraySplits) and image_size is not None:
        splits = _resized(splits, image_size)
    assemble = _ASSEMBLERS[type(splits)]
    return assemble(spec, splits, config, num_meta=num_meta, batch_size=batch_size,
                    auto_meta=meta_source == "auto", meta_by_truth=meta_source == "truth",
                    meta_batch_size=meta_batch_size, augment=augment, options=options,
                    check_meta_batch=meta_batch_given and num_meta is None)


def _check_source_options(spec: SourceSpec, options: SourceOptions, **protocol):
    """Rejects what the source cannot take, before it reads anything.

    protocol: parameter name -> (value, its neutral value), rejected unless neutral
    by a source with a fixed protocol.
    """
    if spec.fixed_protocol:
        for name, (value, neutral) in protocol.items():
            if value != neutral:
                hint = (" (or meta_source='auto' to choose one from its training data)"
                        if name == "num_meta" else "")
                raise ValueError(f"{name}={value!r} is not supported: {spec.name} has "
                                 f"{spec.fixed_protocol}; leave {name} unset{hint}")
    used = (*(spec.options if spec.options is not None else GENERAL_OPTIONS),
            *(() if spec.fixed_protocol else (IMAGE_SIZE_OPTION,)))
    for field in dataclasses.fields(SourceOptions):
        value = getattr(options, field.name)
        if value != field.default and field.name not in used:
            raise ValueError(f"{field.name}={value} does not apply to dataset {spec.name!r} "
                             f"(it reads {', '.join(used) or 'no files'})")


def known_input(name: str, augment: str | None = None,
                image_size: int | None = None) -> tuple[int, tuple] | None:
    """(num_classes, model input shape) of dataset `name`, when known without reading data."""
    spec = get_source(name)
    if spec.num_classes is None or spec.stored_shape is None:
        return None
    stored = (spec.stored_shape if image_size is None
              else (image_size, image_size, spec.stored_shape[-1]))
    aug = make_augmentation(augment or spec.default_augment(stored), stored, 255.0)
    return None if None in aug.output_shape else (spec.num_classes, tuple(aug.output_shape))


def _augmentation(spec: SourceSpec, splits, augment: str | None) -> Augmentation:
    aug = make_augmentation(augment or spec.default_augment(splits.image_shape), splits.image_shape,
                            splits.pixel_max)
    if None in aug.output_shape:
        raise ValueError(
            f"augment={aug.name} keeps {spec.name} images at their stored, varying size "
            f"{splits.image_shape}; batching needs one size (e.g. augment=imagenet)"
        )
    return aug


def _resized(splits: ArraySplits, size: int) -> ArraySplits:
    """`splits` with every image resized to size x size (resize_images; a no-op for images of
    that size already, e.g. resized by the source while decoding)."""
    def resized(images):
        if images is None or images.shape[1:3] == (size, size):
            return images
        return np.concatenate([resize_images(images[i:i + 1024], size).numpy()
                               for i in range(0, len(images), 1024)] or [images[:0, :size, :size]])

    return dataclasses.replace(splits, train_images=resized(splits.train_images),
                               test_images=resized(splits.test_images),
                               meta_images=resized(splits.meta_images))


def _check_meta_batch(meta_batch_size: int, num_meta: int) -> None:
    """A meta batch set explicitly must fit in the meta set (a default one may repeat examples)."""
    if num_meta and meta_batch_size > num_meta:
        raise ValueError(f"meta_batch_size={meta_batch_size} exceeds the {num_meta} meta examples")


def _steps(num_train: int, batch_size: int) -> int:
    if num_train < batch_size:
        raise ValueError(f"batch_size={batch_size} exceeds the {num_train} training examples")
    return num_train // batch_size


def _protocol_params(spec, config, num_meta, aug, batch_size, meta_batch_size, options, meta_source,
                     meta_by_truth=False):
    return {
        "order": list(ORDER), "seed": config.seed, "num_meta": num_meta, "meta_source": meta_source,
        "meta_by_truth": meta_by_truth,
        "train_per_class": config.train_per_class,
        "augment": aug.name, "batch_size": batch_size, "meta_batch_size": meta_batch_size,
        "data_dir": options.data_dir, "manual_dir": options.manual_dir,
        "cache_dir": options.cache_dir,
        "skip_bad_images": options.skip_bad_images, "labels": options.labels,
        "labels_missing": options.labels_missing, "label_key": options.label_key,
        "true_label_key": options.true_label_key, "train_split": options.train_split,
        "test_split": options.test_split, "image_size": options.image_size,
    }


@dataclasses.dataclass(frozen=True)
class Role:
    """How the bundle reads one of its pipelines; the role's name is its seed stage.

    split: the examples it reads ("train", "meta" or "test"); training: train-time
    augmentation, else the test transform; shuffle: a new order every pass (streams:
    files too); repeat: endless; batch: which batch size ("train": batch_size,
    "meta": meta_batch_size); output: the element's structure.
    """

    split: Literal["train", "meta", "test"]
    training: bool
    shuffle: bool
    repeat: bool
    drop_remainder: bool
    batch: Literal["train", "meta"]
    output: Callable[[dict], object]


ROLES = {
    "train": Role("train", training=True, shuffle=True, repeat=False, drop_remainder=True,
                  batch="train", output=pipeline.as_train_element),
    "meta": Role("meta", training=True, shuffle=True, repeat=True, drop_remainder=True,
                 batch="meta", output=pipeline.as_pair),
    "meta_once": Role("meta", training=True, shuffle=True, repeat=False, drop_remainder=False,
                      batch="meta", output=pipeline.as_pair),
    "test": Role("test", training=False, shuffle=False, repeat=False, drop_remainder=False,
                 batch="train", output=pipeline.as_pair),
}


@dataclasses.dataclass(frozen=True)
class _Pipelines:
    """Builds the bundle's pipelines from ROLES with a source's dataset functions.

    batch: "train" / "meta" -> batch size; sizes: split -> examples (a split absent
    from `sizes`, e.g. no meta set, gives None pipelines).
    """

    augmentation: Augmentation
    seed: int
    batch: dict[str, int]
    sizes: dict[str, int]

    def roles(self, dataset: Callable[..., tf.data.Dataset]) -> dict[str, tf.data.Dataset | None]:
        """role name -> dataset(split, role, training=, repeat=, batch_size=, ...): the role's
        pipeline (dataset turns role.shuffle into its own arguments); None without its split."""
        return {name: dataset(role.split, role, training=role.training, repeat=role.repeat,
                              batch_size=self.batch[role.batch], drop_remainder=role.drop_remainder,
                              stage=name, output=role.output, augmentation=self.augmentation,
                              seed=self.seed)
                if role.split in self.sizes else None
                for name, role in ROLES.items()}

    def positional(self, dataset: Callable[..., tf.data.Dataset]) -> dict[str, Callable | None]:
        """DataBundle's train_from(first, last) and meta_from(first), over dataset(split, ...).

        Steps count batches of the role ("train", "meta"). A role read once per epoch
        has epochs of whole batches; a repeated one is one endless stream whose
        permutations follow each other across batch boundaries.
        """
        def from_step(name, first, last=None):
            role = ROLES[name]
            b, n = self.batch[role.batch], self.sizes[role.split]
            return dataset(role.split, batch_size=b, per_epoch=n if role.repeat else n // b * b,
                           first=first * b, last=None if last is None else last * b, stage=name,
                           output=role.output, augmentation=self.augmentation, seed=self.seed)

        return {"train_from": functools.partial(from_step, "train"),
                "meta_from": functools.partial(from_step, "meta") if "meta" in self.sizes else None}


def _from_arrays(spec: SourceSpec, splits: ArraySplits, config: ProtocolConfig, *, num_meta,
                 batch_size, meta_batch_size, augment, options, check_meta_batch,
                 auto_meta=False, meta_by_truth=False) -> DataBundle:
    c = splits.num_classes
    truth = _truth_text(splits)
    if meta_by_truth and splits.meta_images is not None:
        raise ValueError(f"meta_source=truth holds a clean meta set out of the training split, but "
                         f"{splits.meta_dir} is a clean meta set: drop meta_source=truth to use it")
    if meta_by_truth and not (splits.train_true_labels >= 0).any():
        raise ValueError(f"meta_source=truth draws the meta set by true label, "
                         f"but the training labels "
                         f"of {spec.name} have no known truth "
                         f"(a labels file needs a true_label column; "
                         f"a tfds: dataset --true_label_key)")
    no_clean_meta = splits.given_meta == "none" and not (auto_meta or meta_by_truth)
    if no_clean_meta and num_meta:
        raise ValueError(f"num_meta={num_meta}: {spec.name}'s labels may be noisy and their "
                         f"truth is unknown, so no clean meta set can be held out: "
                         f"pass --true_label_key=FEATURE "
                         f"(a clean label feature) or --meta_source=auto")
    meta_by_truth = meta_by_truth or (splits.given_meta == "truth" and not auto_meta)
    aug = _augmentation(spec, splits, augment)
    train_images = tf.constant(splits.train_images)
    features = pixel_features(splits.train_images, splits.pixel_max)
    if splits.meta_images is None:  # the meta set is held out of train (auto: none is)
        if num_meta is None:
            num_meta = 0 if no_clean_meta else spec.default_num_meta(c)
        if check_meta_batch:
            _check_meta_batch(meta_batch_size, num_meta)
        if auto_meta and num_meta % c:
            raise ValueError(f"num_meta={num_meta} is not divisible by the number of classes "
                             f"({c}); "
                             "meta_source='auto' chooses num_meta / C examples of each class")
        config = dataclasses.replace(config, num_meta=0 if auto_meta else num_meta)
        result = apply_protocol(splits.train_labels, c, config, features, splits.train_true_labels,
                                meta_by_truth=meta_by_truth)
        meta_images, meta_origin, meta_labels = train_images, result.meta_origin, result.meta_labels
        meta_source = ("auto: the smallest-loss training examples of each class, chosen by the "
                       "trainer during training (they stay training data)" if auto_meta else
                       f"held out of the training split by true label ({truth})"
                       if meta_by_truth else
                       "none: the labels' truth is unknown" if no_clean_meta else
                       "held out of the training split before corruption")
        if splits.labels_file is not None and not (auto_meta or meta_by_truth):
            log.warning("labels=%s without a meta split: the meta set is held out of the training "
                        "images with the file's labels, which may be noisy; put clean images in "
                        "ROOT/meta/<class>/%s", splits.labels_file.path,
                        " or pass meta_source=truth (drawn by the file's true_label column)"
                        if splits.labels_file.true_label else "")
    else:  # the source's own meta split, as is or subsampled per class; never mixed with train
        if auto_meta:
            raise ValueError(f"meta_source='auto' chooses a meta set from noisy training data, but "
                             f"{splits.meta_dir} is a clean meta set: "
                             "drop meta_source=auto to use it")
        meta_origin = sample_given_meta(splits.meta_labels, num_meta, config.seed,
                                        [os.path.join(splits.meta_dir, name)
                                         for name in splits.class_names])
        result = apply_protocol(splits.train_labels, c, dataclasses.replace(config, num_meta=0),
                                features, splits.train_true_labels)
        meta_images, meta_labels = tf.constant(splits.meta_images), splits.meta_labels[meta_origin]
        meta_source = f"the folder's meta/ split ({splits.meta_dir})"
        num_meta = int(meta_origin.size)
        if check_meta_batch:
            _check_meta_batch(meta_batch_size, num_meta)
    n = result.train_origin.size
    steps = _steps(n, batch_size)

    known = result.true_labels >= 0
    train_fields = {"label": result.labels, "true_label": result.true_labels, "index": np.arange(n)}
    if not known.any():  # the truth is unknown: no clean/noisy diagnostics
        del train_fields["true_label"]
    num_test = len(splits.test_labels)
    examples = {  # split -> (images, their rows, fields per example)
        "train": (train_images, result.train_origin, train_fields),
        "meta": (meta_images, meta_origin, {"label": meta_labels}),
        "test": (tf.constant(splits.test_images), np.arange(num_test),
                 {"label": splits.test_labels}),
    }
    if not meta_origin.size:
        del examples["meta"]
    pipes = _Pipelines(aug, config.seed, {"train": batch_size, "meta": meta_batch_size},
                       {split: len(rows) for split, (_, rows, _) in examples.items()})
    roles = pipes.roles(lambda split, role, **kw: pipeline.array_dataset(
        *examples[split], shuffle=role.shuffle, **kw))
    positional = pipes.positional(
        lambda split, **kw: pipeline.positional_array_dataset(*examples[split], **kw))

    rate, per_class = realised_noise(result.labels, result.true_labels, c)
    labels_file = splits.labels_file
    summary = {
        "dataset": spec.name, "num_classes": c, "class_names": splits.class_names,
        "image_shape": aug.output_shape, "stored_image_shape": splits.image_shape,
        "num_train": n, "num_meta": int(meta_origin.size), "num_test": num_test,
        "steps_per_epoch": steps,
        "counts": {
            "train": np.bincount(result.labels, minlength=c),
            "train_true": (np.bincount(result.true_labels[known], minlength=c)
                           if known.any() else None),
            "meta": np.bincount(meta_labels, minlength=c),
            "test": np.bincount(splits.test_labels, minlength=c),
        },
        "labels_file": None if labels_file is None else dataclasses.asdict(labels_file),
        "noise": {
            "type": config.noise_type, "rate": float(config.noise_rate),
            "truth": truth,
            "expected_rate": expected_noise_rate(
                result.transition,
                np.bincount(splits.train_labels[result.train_origin], minlength=c)),
            "realised_rate": rate, "realised_rate_per_class": per_class,
            "transition_matrix": result.transition,
            "empirical_transition_matrix": (
                empirical_transition(result.labels, result.true_labels, c)
                if known.any() else None),
        },
        "imbalance": {
            "factor": float(config.imbalance_factor), "img_max": result.img_max,
            "target_counts": result.long_tail_targets,
            "shortfall": {c_: list(v) for c_, v in result.shortfall.items()},
        },
        "protocol": _protocol_params(spec, config, num_meta, aug, batch_size, meta_batch_size,
                                     options, meta_source, meta_by_truth),
        "provenance": splits.provenance,
    }
    train_rows, given = result.train_origin, {"label": result.labels}

    def meta_from_train(indices, first, stage):
        idx = np.asarray(indices, np.int64)
        return pipeline.positional_array_dataset(
            train_images, train_rows[idx], {"label": given["label"][idx]},
            augmentation=aug, batch_size=meta_batch_size, per_epoch=idx.size,
            first=first * meta_batch_size, last=None, seed=config.seed, stage=stage,
            output=pipeline.as_pair)

    train_in_order = pipeline.array_dataset(
        train_images, train_rows, given, augmentation=aug, training=False,
        batch_size=batch_size, drop_remainder=False, shuffle=False, repeat=False, seed=config.seed,
        stage="train_in_order", output=pipeline.as_pair)
    if auto_meta:
        summary["num_meta"], summary["counts"]["meta"] = num_meta, None
    return DataBundle(
        spec.name, roles["train"], roles["meta"], roles["meta_once"], roles["test"], c,
        aug.output_shape, n, num_meta if auto_meta else int(meta_origin.size), num_test,
        batch_size, meta_batch_size, steps, list(splits.class_names), aug.name,
        jsonable(summary), result.labels, result.true_labels, result.train_origin, meta_origin,
        **positional,
        meta_source="auto" if auto_meta else "given", train_in_order=train_in_order,
        meta_from_train=meta_from_train, source_train_images=train_images,
        train_files=_files_by_index(splits.train_files, result.train_origin),
        pixel_max=splits.pixel_max,
        fingerprint=fingerprint.of_arrays(spec.name, splits, options.data_dir))


def _from_stream(spec: SourceSpec, splits: StreamSplits, config: ProtocolConfig, *, num_meta,
                 batch_size, meta_batch_size, augment, options, check_meta_batch,
                 auto_meta=False, meta_by_truth=False) -> DataBundle:
    aug = _augmentation(spec, splits, augment)
    seed, c = config.seed, splits.num_classes
    n, m, num_test = splits.sizes["train"], splits.sizes["meta"], splits.sizes["test"]
    sizes = dict(splits.sizes)
    if auto_meta:  # the release's meta split is left unused: the trainer chooses from train
        del sizes["meta"]
        m = m // c * c if num_meta is None else num_meta  # default: as many as the release's
        if not m or m % c:
            raise ValueError(f"num_meta={m} is not a positive multiple of the number of classes "
                             f"({c}); meta_source='auto' chooses num_meta / C examples of each "
                             "class")
    if check_meta_batch:
        _check_meta_batch(meta_batch_size, m)
    steps = _steps(n, batch_size)
    pipes = _Pipelines(aug, seed, {"train": batch_size, "meta": meta_batch_size}, sizes)
    roles = pipes.roles(lambda split, role, **kw: pipeline.stream_dataset(
        splits.read(split, role.shuffle, seed),
        shuffle_buffer=min(splits.sizes[split], STREAM_SHUFFLE_BUFFER) if role.shuffle else 0,
        **kw))
    positional = pipes.positional(
        lambda split, **kw: pipeline.positional_record_dataset(splits.records(split), **kw))
    meta_source = (f"auto: the smallest-loss training examples of each class, "
                   f"chosen by the trainer "
                   f"during training (they stay training data; the release's "
                   f"{splits.split_names['meta']} split is not used)" if auto_meta
                   else f"the release's {splits.split_names['meta']} split")
    summary = {
        "dataset": spec.name, "num_classes": c, "class_names": splits.class_names,
        "image_shape": aug.output_shape, "stored_image_shape": splits.image_shape,
        "num_train": n, "num_meta": m, "num_test": num_test, "steps_per_epoch": steps,
        "counts": {"train": splits.counts["train"], "train_true": splits.counts["train_true"],
                   "meta": None if auto_meta else splits.counts["meta"],
                   "test": splits.counts["test"]},
        "noise": {"rate": None, "expected_rate": None, "transition_matrix": None, **splits.noise},
        "imbalance": {"factor": 1.0, "img_max": None, "target_counts": None, "shortfall": {}},
        "skipped_images": {"count": len(splits.skipped_images), "keys": splits.skipped_images},
        "protocol": {**_protocol_params(spec, config, m, aug, batch_size, meta_batch_size, options,
                                        meta_source),
                     "order": [], "splits": splits.split_names},
    }
    chosen = _stream_choice(splits, aug, seed, batch_size, meta_batch_size) if auto_meta else {}
    return DataBundle(spec.name, roles["train"], roles["meta"], roles["meta_once"], roles["test"],
                      c, aug.output_shape, n, m, num_test, batch_size, meta_batch_size, steps,
                      list(splits.class_names), aug.name, jsonable(summary), **positional,
                      meta_source="auto" if auto_meta else "given",
                      train_files=splits.train_files,
                      fingerprint=fingerprint.of_stream(spec.name, splits),
                      **chosen)


def _truth_text(splits: ArraySplits) -> str:
    """What the true labels of an in-memory source's training split are (data_summary.json's
    noise.truth)."""
    known = splits.train_true_labels >= 0
    if not known.all():
        return ("unknown (the source's own labels, without their truth)" if not known.any() else
                f"known for {int(known.sum())} of {known.size} training examples")
    if splits.labels_file is not None:
        return f"the true_label column of {splits.labels_file.path}"
    if (splits.provenance or {}).get("true_label_key"):
        return (f"the {splits.provenance['true_label_key']} feature of tfds "
                f"{splits.provenance['tfds']}")
    return "the labels before synthetic noise"


def _files_by_index(source_files, origin):
    """DataBundle.train_files of an in-memory source whose training split has `source_files`
    (None: not a file source) and keeps the examples `origin` (source positions)."""
    if source_files is None:
        return None
    return lambda: [source_files[int(o)] for o in origin]


def _stream_choice(splits: StreamSplits, aug, seed, batch_size, meta_batch_size) -> dict:
    """DataBundle's fields for choosing a meta set from a streamed training split (auto):
    examples are addressed by record position (the split's records in file order), for
    train_labels / train_true_labels (read once here, images not decoded), train_in_order
    and meta_from_train (which reads the chosen records into memory once per choice)."""
    records = splits.records("train")
    fields = pipeline.record_fields(records, ("label", "true_label"))

    def meta_from_train(positions, first, stage):
        chosen = np.asarray(positions, np.int64)
        return pipeline.positional_serialized_dataset(
            pipeline.records_at(records, chosen), records.parse, augmentation=aug,
            batch_size=meta_batch_size, per_epoch=chosen.size, first=first * meta_batch_size,
            last=None, seed=seed, stage=stage, output=pipeline.as_pair)

    return {"train_labels": fields["label"], "train_true_labels": fields["true_label"],
            "train_in_order": pipeline.records_in_order(records, augmentation=aug,
                                                        batch_size=batch_size,
                                                        output=pipeline.as_pair),
            "meta_from_train": meta_from_train}


_ASSEMBLERS = {ArraySplits: _from_arrays, StreamSplits: _from_stream}


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


def write_summary(summary: dict, path: str) -> str:
    """Writes `summary` as indented JSON to `path` (parent folders created); returns path."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with atomic_open(path, encoding="utf-8") as f:
        json.dump(jsonable(summary), f, indent=2, allow_nan=False)
        f.write("\n")
    return path
