"""``folder``: an image-folder tree ROOT/<split>/<class>/<image>, splits train and test.

Classes are the sub-folders of ROOT/train sorted by name (label = position).
All images must decode to one shape; they are decoded to RGB uint8 once and
cached as .npz under --cache_dir, keyed by the root path and every file's
relative path, size and modification time (any change triggers a re-decode).
"""
from __future__ import annotations

import logging
import os

import numpy as np
import tensorflow as tf

from gdw_tf.data.sources.base import ArraySplits, SourceOptions, cached_arrays, register_source

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
CACHE_FORMAT = 1


def _scan_class(class_dir: str) -> list[tuple[str, int, int]]:
    """[(file name, size, mtime_ns)] of the images in one class folder, sorted by name."""
    files, skipped = [], []
    with os.scandir(class_dir) as entries:
        for e in entries:
            if e.name.startswith(".") or not e.is_file():
                continue
            if os.path.splitext(e.name)[1].lower() not in IMAGE_EXTENSIONS:
                skipped.append(e.name)
                continue
            st = e.stat()
            files.append((e.name, st.st_size, st.st_mtime_ns))
    if skipped:
        log.warning("skipping %d non-image file(s) in %s, e.g. %s", len(skipped), class_dir, skipped[0])
    return sorted(files)


def list_image_folder(root: str) -> tuple[list[str], dict[str, list[tuple[str, int, int, int]]]]:
    """Lists ROOT/{train,test}/<class>/<image>.

    Returns (class names sorted, {split: [(relative path, label, size, mtime_ns)]}).
    Raises FileNotFoundError / ValueError naming the missing or offending path.
    """
    if root is None:
        raise ValueError("dataset folder needs data_dir=ROOT with ROOT/train/<class>/<image> and ROOT/test/...")
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"data_dir={root}: image-folder root does not exist")
    class_dirs = {}
    for split in SPLITS:
        split_dir = os.path.join(root, split)
        if not os.path.isdir(split_dir):
            raise FileNotFoundError(f"image folder {root}: missing split folder {split_dir}")
        class_dirs[split] = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
        if not class_dirs[split]:
            raise ValueError(f"image folder {split_dir} has no class sub-folders")
    classes = class_dirs["train"]
    unknown = sorted(set(class_dirs["test"]) - set(classes))
    if unknown:
        raise ValueError(
            f"class folder {os.path.join(root, 'test', unknown[0])} has no counterpart in "
            f"{os.path.join(root, 'train')} (test classes absent from train: {unknown})"
        )
    listing = {}
    for split in SPLITS:
        entries = []
        for label, name in enumerate(classes):
            class_dir = os.path.join(root, split, name)
            if not os.path.isdir(class_dir):
                continue  # a class may be absent from test
            files = _scan_class(class_dir)
            if not files and split == "train":
                raise ValueError(f"class folder {class_dir} contains no images ({', '.join(IMAGE_EXTENSIONS)})")
            entries += [(f"{split}/{name}/{f}", label, size, mtime) for f, size, mtime in files]
        listing[split] = entries
    return classes, listing


def _decode_bytes(data):
    """Encoded JPEG/PNG/BMP/GIF bytes -> RGB uint8 [H, W, 3] (JPEG decoded like PIL/libjpeg)."""
    return tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(data, channels=3, expand_animations=False),
    )


def _decode_file(path: str) -> np.ndarray:
    try:
        return _decode_bytes(tf.io.read_file(path)).numpy()
    except (tf.errors.OpError, ValueError) as e:
        raise ValueError(f"cannot decode image file {path}: {getattr(e, 'message', e)}") from None


def decode_images(paths: list[str], shape: tuple | None = None) -> np.ndarray:
    """Decodes image files to RGB uint8 [N, H, W, 3], in parallel TF ops.

    All images must have `shape` (default: the first image's). A file that
    cannot be read or decoded, or has another shape, raises ValueError naming it.
    """
    if shape is None:
        if not paths:
            raise ValueError("decode_images needs a shape when there are no paths")
        shape = _decode_file(paths[0]).shape
    shape = tuple(int(d) for d in shape)
    expected = tf.constant(shape, tf.int32)

    def decode(i, path):  # a wrong shape gives zeros and ok=False (reported below)
        image = _decode_bytes(tf.io.read_file(path))
        ok = tf.reduce_all(tf.equal(tf.shape(image), expected))
        image = tf.cond(ok, lambda: image, lambda: tf.zeros(shape, tf.uint8))
        return i, tf.ensure_shape(image, shape), ok

    ds = tf.data.Dataset.from_tensor_slices((np.arange(len(paths), dtype=np.int64), np.asarray(paths, str)))
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors().batch(1024).prefetch(2)  # undecodable files drop out; found by index
    ids, images, oks = [np.zeros(0, np.int64)], [np.zeros((0, *shape), np.uint8)], [np.zeros(0, bool)]
    for i, image, ok in ds.as_numpy_iterator():
        ids.append(i)
        images.append(image)
        oks.append(ok)
    ids, oks = np.concatenate(ids), np.concatenate(oks)
    if ids.size != len(paths):
        bad = paths[int(np.setdiff1d(np.arange(len(paths)), ids)[0])]
        _decode_file(bad)  # raises with the decoder's message
        raise ValueError(f"cannot decode image file {bad}")
    if not oks.all():
        bad = paths[int(np.flatnonzero(~oks)[0])]
        raise ValueError(
            f"image file {bad} has shape {_decode_file(bad).shape}, but the folder's images have "
            f"shape {shape} (that of {paths[0]}); the folder source needs images of one size"
        )
    return np.concatenate(images)


def load_image_folder(root: str, cache_dir: str | None = None) -> ArraySplits:
    """Reads (from cache when unchanged) the image folder at `root`."""
    classes, listing = list_image_folder(root)
    root = os.path.abspath(root)
    key = {
        "format": CACHE_FORMAT,
        "root": root,
        "classes": classes,
        "files": {s: [[rel, size, mtime] for rel, _, size, mtime in listing[s]] for s in SPLITS},
    }

    def compute():
        log.info("decoding %d images under %s (cached afterwards)", sum(map(len, listing.values())), root)
        paths = {s: [os.path.join(root, rel) for rel, *_ in listing[s]] for s in SPLITS}
        train = decode_images(paths["train"])
        return {
            "train_images": train,
            "train_labels": np.array([label for _, label, *_ in listing["train"]], np.int64),
            "test_images": decode_images(paths["test"], train.shape[1:]),
            "test_labels": np.array([label for _, label, *_ in listing["test"]], np.int64),
        }

    arrays = cached_arrays(cache_dir, f"folder-{os.path.basename(root)}", key, compute)
    return ArraySplits(classes, arrays["train_images"], arrays["train_labels"],
                       arrays["test_images"], arrays["test_labels"])


def _default_augment(image_shape: tuple) -> str:
    """cifar for 32x32 RGB, imagenet for RGB of side >= 224, else none."""
    if tuple(image_shape) == (32, 32, 3):
        return "cifar"
    return "imagenet" if min(image_shape[:2]) >= 224 else "none"


@register_source("folder", default_num_meta=lambda c: 1000 // c * c, default_augment=_default_augment)
def load_folder(options: SourceOptions) -> ArraySplits:
    """Image folder --data_dir=ROOT with ROOT/{train,test}/<class>/<image> (default num_meta: largest multiple of C <= 1000)."""
    return load_image_folder(options.data_dir, options.cache_dir)
