"""``tfds:NAME[/CONFIG]``: any prepared TFDS image-classification dataset, read offline.

Nothing is downloaded: `tfds.builder(NAME, data_dir=--data_dir)` must find the dataset
prepared (made with `tfds build NAME` on a machine with internet, plus the files a
builder with a manual download asks for). Read into memory as arrays:

- images: the feature `image` of --train_split / --test_split (default train / test),
  RGB or grayscale uint8; resized to --image_size x --image_size (bilinear, antialiased)
  while decoding, which a dataset whose images vary in size needs;
- training labels: the ClassLabel feature --label_key (default `label`); -1 (no label)
  in the training split is an error;
- truth: --true_label_key (optional), a ClassLabel feature with the same classes: the
  true class of each training image (-1 there: unknown), what every diagnostic that
  needs the truth compares against (realised noise, target weights clean vs noisy,
  label-issue ROC-AUC). Without it the truth is unknown (-1);
- test labels: --true_label_key's when given (CIFAR-N's noisy-label features are -1 in
  its test split), else --label_key's; a -1 among them is an error naming the key.

The meta set (`ArraySplits.given_meta`): with --true_label_key, meta_source=given is the
clean set of --num_meta training images drawn by their true label and held out of the
training split (meta_source=truth, the meta-learning papers' convention); without it the
labels' truth is unknown, so no meta set is held out (num_meta 0) and a method that needs
one needs --true_label_key or --meta_source=auto (checked by gdw_tf.config).
Decoded arrays are cached as the other sources' are, keyed by the prepared files (names,
sizes, mtimes), the splits, the label keys and --image_size.
"""
from __future__ import annotations

import os

import numpy as np

from gdw_tf.data.sources.base import (
    TFDS_PREFIX,
    ArraySplits,
    SourceOptions,
    cached_arrays,
    register_source,
    resize_images,
)

CACHE_FORMAT = 1
IMAGE_FEATURE = "image"
NO_LABEL = -1  # what CIFAR-N's noisy-label features hold in its test split
DECODE_BATCH = 256


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _builder(dataset: str, name: str, data_dir: str | None):
    """The prepared builder of tfds NAME[/CONFIG] under data_dir; one-line errors otherwise."""
    import tensorflow_datasets as tfds

    if not name:
        raise ValueError(f"--dataset={dataset}: name a TFDS dataset, "
                         f"e.g. --dataset={TFDS_PREFIX}cifar10_n")
    base, _, config = name.partition("/")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(f"--dataset={dataset}: TFDS knows no dataset {base!r}, "
                         "and none is prepared "
                         f"under --data_dir={data_dir or '~/tensorflow_datasets'}") from None
    except ValueError as error:
        configs = [c.name for c in getattr(tfds.builder_cls(base), "BUILDER_CONFIGS", [])]
        if config and config not in configs:
            listed = (f"configs: {', '.join(configs)}" if configs
                      else f"it has none: --dataset={TFDS_PREFIX}{base}")
            raise ValueError(f"--dataset={dataset}: {base} has no config {config!r} "
                             f"({listed})") from None
        raise ValueError(f"--dataset={dataset}: {_one_line(error)}") from None
    if not builder.is_prepared():
        manual = _one_line(getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None) or "")
        configs = [c.name for c in getattr(builder, "BUILDER_CONFIGS", [])]
        hint = (f" (configs: {', '.join(configs)}; pick one as {TFDS_PREFIX}{base}/CONFIG)"
                if configs and not config else "")
        raise FileNotFoundError(
            f"--dataset={dataset} is not prepared under "
            f"--data_dir={data_dir or '~/tensorflow_datasets'} "
            f"(looked in {builder.data_dir}); nothing is downloaded here: "
            f"prepare it with `tfds build "
            f"{name} --data_dir=DIR{' --manual_dir=MANUAL' if manual else ''}` on a machine with "
            f"internet, then pass --data_dir=DIR{hint}"
            + (f"; MANUAL must hold the files TFDS asks for: {manual}" if manual else ""))
    return builder


def _class_label_keys(features) -> list[str]:
    import tensorflow_datasets as tfds

    return sorted(k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel))


def _check_keys(dataset: str, features, label_key: str, true_label_key: str | None) -> None:
    import tensorflow_datasets as tfds

    keys = _class_label_keys(features)
    for flag, key in (("label_key", label_key), ("true_label_key", true_label_key)):
        if key is not None and key not in keys:
            what = ("is no feature" if key not in features
                    else f"is a {type(features[key]).__name__}")
            raise ValueError(f"--{flag}={key} {what} of {dataset}; its ClassLabel features are: "
                             f"{', '.join(keys) or 'none'}")
    if true_label_key is not None and features[true_label_key].names != features[label_key].names:
        raise ValueError(f"--true_label_key={true_label_key} has other classes than --label_key="
                         f"{label_key} in {dataset} ({features[true_label_key].num_classes} vs "
                         f"{features[label_key].num_classes})")
    image = features[IMAGE_FEATURE] if IMAGE_FEATURE in features else None
    if not isinstance(image, tfds.features.Image):
        raise ValueError(f"--dataset={dataset} has no Image feature {IMAGE_FEATURE!r} "
                         f"(features: {', '.join(sorted(features))})")


def _check_split(dataset: str, flag: str, split: str, splits) -> None:
    if split.split("[")[0] not in splits:
        raise ValueError(f"--{flag}={split}: {dataset} has no such split "
                         f"(splits: {', '.join(sorted(splits))})")


def _decode(builder, split: str, keys: list[str], size: int | None) -> dict[str, np.ndarray]:
    """{"images": uint8 [N, H, W, C], key: int64 [N] for each of keys} of one split, in order."""
    import tensorflow as tf

    ds = builder.as_dataset(split=split, shuffle_files=False)

    def pick(example):
        image = example[IMAGE_FEATURE]
        if size is not None:
            image = resize_images(image[None], size)[0]
        return {"images": image, **{k: example[k] for k in keys}}

    ds = ds.map(pick, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(DECODE_BATCH)
    parts = list(ds.as_numpy_iterator())
    if not parts:
        raise ValueError(f"split {split} of {builder.name} has no examples")
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    out["images"] = out["images"].astype(np.uint8)
    return {k: v if k == "images" else v.astype(np.int64) for k, v in out.items()}


def _check_labeled(flag: str, key: str, split: str, labels: np.ndarray, hint: str = "") -> None:
    missing = np.flatnonzero(labels < 0)
    if missing.size:
        raise ValueError(f"--{flag}={key}: {missing.size} of the {labels.size} examples of split "
                         f"{split} have no label (-1), e.g. example {int(missing[0])}{hint}")


def load_tfds_any(dataset: str, options: SourceOptions) -> ArraySplits:
    """Reads `dataset` ("tfds:NAME[/CONFIG]") as the module doc says."""
    name = dataset[len(TFDS_PREFIX):]
    label_key, true_key = options.label_key, options.true_label_key
    train_split, test_split, size = options.train_split, options.test_split, options.image_size
    builder = _builder(dataset, name, options.data_dir)
    features = builder.info.features
    _check_keys(dataset, features, label_key, true_key)
    for flag, split in (("train_split", train_split), ("test_split", test_split)):
        _check_split(dataset, flag, split, builder.info.splits)
    shape = features[IMAGE_FEATURE].shape
    if size is None and None in shape[:2]:
        raise ValueError(f"--dataset={dataset}: its images vary in size "
                         f"(feature {IMAGE_FEATURE} has "
                         f"shape {tuple(shape)}); pass --image_size=N to resize them to N x N")
    test_key = true_key or label_key
    version_dir = os.fspath(builder.data_dir)
    files = sorted(os.listdir(version_dir))
    key = {
        "format": CACHE_FORMAT, "dir": os.path.abspath(version_dir),
        "files": [[f, os.path.getsize(os.path.join(version_dir, f)),
                   os.stat(os.path.join(version_dir, f)).st_mtime_ns] for f in files],
        "splits": [train_split, test_split], "label_key": label_key, "true_label_key": true_key,
        "image_size": size,
    }

    def compute():
        train = _decode(builder, train_split,
                        sorted({label_key, *([true_key] if true_key else [])}), size)
        test = _decode(builder, test_split, [test_key], size)
        return {"train_images": train["images"], "train_labels": train[label_key],
                "train_true_labels": (train[true_key] if true_key
                                      else np.full(len(train["images"]), -1)),
                "test_images": test["images"], "test_labels": test[test_key]}

    arrays = cached_arrays(options.cache_dir, f"tfds-{name}", key, compute)
    _check_labeled("label_key", label_key, train_split, arrays["train_labels"])
    hint = ("" if true_key else
            "; pass --true_label_key=FEATURE to read the test labels from a clean feature")
    _check_labeled("true_label_key" if true_key else "label_key", test_key, test_split,
                   arrays["test_labels"], hint)
    return ArraySplits(
        list(features[label_key].names), arrays["train_images"], arrays["train_labels"],
        arrays["test_images"], arrays["test_labels"], train_true_labels=arrays["train_true_labels"],
        given_meta="truth" if true_key else "none",
        provenance={"tfds": builder.name, "config": builder.builder_config.name
                    if builder.builder_config else None, "version": str(builder.version),
                    "splits": {"train": train_split, "test": test_split},
                    "label_key": label_key, "true_label_key": true_key, "image_size": size})


def _default_augment(image_shape: tuple) -> str:
    """cifar for 32x32 RGB, imagenet for RGB of side >= 224, else none (the folder's rule)."""
    if tuple(image_shape) == (32, 32, 3):
        return "cifar"
    return "imagenet" if min(image_shape[:2]) >= 224 else "none"


@register_source(TFDS_PREFIX + "NAME[/CONFIG]", default_num_meta=lambda c: 1000 // c * c,
                 default_augment=_default_augment,
                 options=("data_dir", "cache_dir", "label_key", "true_label_key", "train_split",
                          "test_split"))
def load_tfds(options: SourceOptions, dataset: str) -> ArraySplits:
    """Any prepared TFDS image-classification dataset by name (--data_dir, --label_key, --true_label_key).

    Default num_meta: the largest multiple of C <= 1000, held out by true label
    (--true_label_key); none without it.
    """  # noqa: E501  (the first line is the source's description in the dataset list: one line)
    return load_tfds_any(dataset, options)
