"""Clothing1M as a TFDS dataset (``clothing1m``), built from the official release.

The release (obtained from its authors) is read from the manual directory:

    noisy_label_kv.txt, clean_label_kv.txt   "<image path> <label>" per line
    noisy_train_key_list.txt, clean_train_key_list.txt,
    clean_val_key_list.txt, clean_test_key_list.txt   one image path per line
    category_names_eng.txt                    14 class names, one per line
    images/...                                the JPEGs (paths like images/0/00/x.jpg)

Splits (features: image, label, true_label, index, file_name):
    noisy_train  label = noisy label; true_label = clean label where the image
                 is also in clean_label_kv.txt, else -1
    clean_train, clean_val, clean_test
                 label = true_label = clean label
`index` is the position in the split's key list (0..N-1, stable). Every image
is decoded before anything is written: undecodable ones fail the build in one
error listing them, or are left out with skip_bad_images (their keys are kept
in the metadata). Examples are written as sharded TFRecords, so the 1M-image
split streams from disk.
"""
from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from gdw_tf.data.protocol import empirical_transition, realised_noise
from gdw_tf.data.sources.clothing1m import NUM_CLASSES

KV_FILES = {"noisy": "noisy_label_kv.txt", "clean": "clean_label_kv.txt"}
KEY_LISTS = {
    "noisy_train": "noisy_train_key_list.txt",
    "clean_train": "clean_train_key_list.txt",
    "clean_val": "clean_val_key_list.txt",
    "clean_test": "clean_test_key_list.txt",
}
CLASS_NAMES_FILE = "category_names_eng.txt"
IMAGES_DIR = "images"


def _lines(path: str) -> list[tuple[int, str]]:
    with open(path, encoding="utf-8") as f:
        return [(n, line.strip()) for n, line in enumerate(f, 1) if line.strip()]


def _read_kv(path: str) -> dict[str, int]:
    """Parses "<image path> <label>" lines; errors name file and line."""
    out = {}
    for n, line in _lines(path):
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise ValueError(f"{path}:{n}: expected '<image path> <label>', got {line!r}")
        key, label = parts[0], int(parts[1])
        if not 0 <= label < NUM_CLASSES:
            raise ValueError(f"{path}:{n}: label {label} outside [0, {NUM_CLASSES - 1}]")
        if out.get(key, label) != label:
            raise ValueError(f"{path}:{n}: image {key!r} listed again with another label")
        out[key] = label
    return out


@dataclasses.dataclass
class Release:
    """The parsed release: per split, [(key, label, true_label)] in key-list order."""

    root: str
    class_names: list[str]
    splits: dict[str, list[tuple[str, int, int]]]

    def metadata(self) -> dict:
        """JSON-serialisable per-split class counts and the noisy_train noise statistics."""
        counts = {s: np.bincount([e[1] for e in v], minlength=NUM_CLASSES).tolist()
                  for s, v in self.splits.items()}
        noisy = np.array([e[1] for e in self.splits["noisy_train"]], np.int64)
        true = np.array([e[2] for e in self.splits["noisy_train"]], np.int64)
        rate, per_class = realised_noise(noisy, true, NUM_CLASSES)
        return {
            "class_names": self.class_names,
            "counts": counts,
            "noisy_train_known_true_label": int((true >= 0).sum()),
            "noisy_train_true_counts": np.bincount(true[true >= 0], minlength=NUM_CLASSES).tolist(),
            "noisy_train_noise_rate": None if np.isnan(rate) else rate,
            "noisy_train_noise_rate_per_class": [None if np.isnan(r) else r for r in per_class],
            "noisy_train_empirical_transition":
                empirical_transition(noisy, true, NUM_CLASSES).tolist(),
        }


def read_release(root) -> Release:
    """Reads and cross-checks the release files under `root` (not the images).

    Raises FileNotFoundError naming a missing directory/file and ValueError
    naming file:line of malformed content or a key without a label.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"manual_dir={root}: Clothing1M release directory does not exist")
    needed = [*KV_FILES.values(), *KEY_LISTS.values(), CLASS_NAMES_FILE]
    for name in needed:
        if not os.path.isfile(os.path.join(root, name)):
            raise FileNotFoundError(f"Clothing1M release {root}: "
                                    f"missing file {os.path.join(root, name)}")
    if not os.path.isdir(os.path.join(root, IMAGES_DIR)):
        raise FileNotFoundError(f"Clothing1M release {root}: "
                                f"missing image folder {os.path.join(root, IMAGES_DIR)}")
    names_path = os.path.join(root, CLASS_NAMES_FILE)
    class_names = [line for _, line in _lines(names_path)]
    if len(class_names) != NUM_CLASSES:
        raise ValueError(f"{names_path}: expected {NUM_CLASSES} class names, "
                         f"found {len(class_names)}")
    noisy = _read_kv(os.path.join(root, KV_FILES["noisy"]))
    clean = _read_kv(os.path.join(root, KV_FILES["clean"]))
    splits = {}
    for split, file_name in KEY_LISTS.items():
        path = os.path.join(root, file_name)
        labels, kv_name = ((noisy, KV_FILES["noisy"]) if split == "noisy_train"
                           else (clean, KV_FILES["clean"]))
        entries = []
        for n, key in _lines(path):
            if key not in labels:
                raise ValueError(f"{path}:{n}: image {key!r} has no label in "
                                 f"{os.path.join(root, kv_name)}")
            true = clean.get(key, -1) if split == "noisy_train" else labels[key]
            entries.append((key, labels[key], true))
        if not entries:
            raise ValueError(f"{path}: key list is empty")
        splits[split] = entries
    return Release(root, class_names, splits)


MAX_LISTED_BAD_IMAGES = 20  # the error lists this many bad images, and counts them all


def image_error(path: str) -> str | None:
    """Why the image file `path` cannot be trained on, or None if it decodes.

    Decodes it fully, as the training pipeline does (tf.io.decode_image to RGB),
    so grayscale and CMYK JPEGs pass and truncated or corrupt files do not.
    """
    import tensorflow as tf

    try:
        with open(path, "rb") as f:
            encoded = f.read()
    except FileNotFoundError:
        return "file does not exist"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    try:
        tf.io.decode_image(encoded, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
        reason = e.message.split("}}")[-1].split("[Op:")[0].strip()
        return f"cannot be decoded ({reason or type(e).__name__})"
    return None


def find_bad_images(release: Release, workers: int | None = None) -> dict[str, str]:
    """key -> reason for every image of the release's key lists that does not decode."""
    from concurrent.futures import ThreadPoolExecutor

    keys = sorted({key for entries in release.splits.values() for key, _, _ in entries})
    with ThreadPoolExecutor(workers or min(32, os.cpu_count() or 1)) as pool:
        reasons = pool.map(lambda key: image_error(os.path.join(release.root, key)), keys)
        return {key: reason for key, reason in zip(keys, reasons) if reason is not None}


def screen_images(release: Release, skip_bad: bool) -> tuple[Release, list[str]]:
    """The release without undecodable images, and their keys (sorted).

    Every image is decoded before anything is written. Bad images raise one
    ValueError listing them (up to MAX_LISTED_BAD_IMAGES, with the total) unless
    `skip_bad`; skipped ones leave their key lists, so `index` stays 0..N-1.
    """
    bad = find_bad_images(release)
    if not bad:
        return release, []
    if not skip_bad:
        listed = [f"  {key}: {reason}" for key, reason in list(bad.items())[:MAX_LISTED_BAD_IMAGES]]
        more = len(bad) - len(listed)
        raise ValueError("\n".join([
            f"Clothing1M release {release.root}: {len(bad)} image(s) in the key lists cannot be "
            "used (nothing was written; fix or remove them, or pass skip_bad_images=True to leave "
            "them out):", *listed, *([f"  ... and {more} more"] if more > 0 else [])]))
    splits = {}
    for split, entries in release.splits.items():
        splits[split] = [e for e in entries if e[0] not in bad]
        if not splits[split]:
            raise ValueError(f"Clothing1M release {release.root}: every image of {split} is bad")
    return Release(release.root, release.class_names, splits), sorted(bad)


class Clothing1m(tfds.core.GeneratorBasedBuilder):
    """Clothing1M (Xiao et al., 2015): 1M clothing images, 14 classes, real noisy labels."""

    name = "clothing1m"
    # TFDS 4.9.10 derives code_path via importlib_resources, which it only declares as a
    # dependency for Python < 3.9; setting it avoids that import (no checksums file is used).
    code_path = epath.Path(__file__)
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Official release: noisy_train, clean_train, clean_val, clean_test."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Clothing1M is distributed by its authors on request (see
    https://github.com/Cysu/noisy_label). Unpack the release into one directory
    and pass it as --manual_dir (tfds: --manual_dir / DownloadConfig.manual_dir).
    It must contain noisy_label_kv.txt, clean_label_kv.txt,
    noisy_train_key_list.txt, clean_train_key_list.txt, clean_val_key_list.txt,
    clean_test_key_list.txt, category_names_eng.txt and the images/ folder.
    """

    def __init__(self, *, skip_bad_images: bool = False, **kwargs):
        """skip_bad_images: a build leaves undecodable images out instead of failing."""
        self.skip_bad_images = skip_bad_images
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
                "true_label": tfds.features.Scalar(dtype=np.int64),
                "index": tfds.features.Scalar(dtype=np.int64),
                "file_name": tfds.features.Text(),
            }),
            supervised_keys=("image", "label"),
            homepage="https://github.com/Cysu/noisy_label",
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        release, skipped = screen_images(read_release(dl_manager.manual_dir), self.skip_bad_images)
        if skipped:
            logging.warning("clothing1m: left out %d image(s) that cannot be decoded: %s%s",
                            len(skipped), skipped[:MAX_LISTED_BAD_IMAGES],
                            " ..." if len(skipped) > MAX_LISTED_BAD_IMAGES else "")
        self.info.features["label"].names = release.class_names
        self.info.metadata.update(release.metadata())
        self.info.metadata["skipped_images"] = skipped
        return {split: self._generate_examples(release.root, entries)
                for split, entries in release.splits.items()}

    def _generate_examples(self, root, entries):
        for index, (key, label, true_label) in enumerate(entries):
            yield index, {"image": os.path.join(root, key), "label": label,
                          "true_label": true_label, "index": index, "file_name": key}
