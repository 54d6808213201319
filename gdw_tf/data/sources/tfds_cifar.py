"""``cifar10`` / ``cifar100``: prepared TFDS datasets, read offline.

Nothing is ever downloaded: the data must already be prepared (by
``tfds build cifar10`` on a connected machine, then copied) under --data_dir
(default ~/tensorflow_datasets). Decoded arrays are cached like the folder
source's, keyed by the TFRecord files' names, sizes and mtimes.
"""
from __future__ import annotations

import os

import numpy as np

from gdw_tf.data.sources.base import ArraySplits, SourceOptions, cached_arrays, register_source

CACHE_FORMAT = 1


def _not_prepared(tfds_name: str, data_dir: str | None, where: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{tfds_name} is not prepared under data_dir={data_dir or where!s} (looked for "
        f"{where}); this code never downloads. Point data_dir at a directory holding a "
        f"prepared TFDS copy ({tfds_name}/<version>/...), e.g. one made with "
        f"`tfds build {tfds_name} --data_dir=DIR` on a machine with internet, or use "
        f"dataset folder with data_dir=ROOT for an image folder "
        f"ROOT/{{train,test}}/<class>/<image>."
    )


def load_tfds_arrays(tfds_name: str, data_dir: str | None, cache_dir: str | None) -> ArraySplits:
    """Loads a prepared TFDS image classification dataset's train/test splits as arrays."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(tfds_name, data_dir=data_dir)
    if not builder.is_prepared():
        raise _not_prepared(tfds_name, data_dir, str(builder.data_dir))
    version_dir = os.fspath(builder.data_dir)
    files = sorted(os.listdir(version_dir))
    key = {
        "format": CACHE_FORMAT,
        "dir": os.path.abspath(version_dir),
        "files": [[f, os.path.getsize(os.path.join(version_dir, f)),
                   os.stat(os.path.join(version_dir, f)).st_mtime_ns] for f in files],
    }

    def compute():
        out = {}
        for split in ("train", "test"):
            images, labels = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1,
                                                              as_supervised=True))
            out[f"{split}_images"] = images.astype(np.uint8)
            out[f"{split}_labels"] = labels.astype(np.int64)
        return out

    arrays = cached_arrays(cache_dir, f"tfds-{tfds_name}", key, compute)
    return ArraySplits(list(builder.info.features["label"].names), arrays["train_images"],
                       arrays["train_labels"], arrays["test_images"], arrays["test_labels"],
                       provenance={"tfds": tfds_name, "version": str(builder.info.version)})


@register_source("cifar10", default_num_meta=1000, default_augment="cifar")
def load_cifar10(options: SourceOptions) -> ArraySplits:
    """CIFAR-10 from a prepared TFDS directory (--data_dir), offline."""
    return load_tfds_arrays("cifar10", options.data_dir, options.cache_dir)


@register_source("cifar100", default_num_meta=1000, default_augment="cifar")
def load_cifar100(options: SourceOptions) -> ArraySplits:
    """CIFAR-100 from a prepared TFDS directory (--data_dir), offline."""
    return load_tfds_arrays("cifar100", options.data_dir, options.cache_dir)
