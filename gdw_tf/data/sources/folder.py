"""``folder``: an image-folder tree ROOT/<split>/<class>/<image>: train and test, optionally meta.

Classes. Without --labels they are the sub-folders of ROOT/train sorted by name
(label = position), and the class folders of ROOT/test and ROOT/meta must be
among them. With --labels=FILE.csv they are the class folders of ROOT/test and
ROOT/meta (their union, sorted by name), and every class needs at least one
training image labelled with it. Every class needs test images, and meta images
when ROOT/meta exists (a class folder missing or empty there is an error naming it).
An image of ROOT/meta or ROOT/test that is also a training image (the same file,
a copy or a link: equal pixels) is an error naming the first pair and the count.

Labels file (--labels=FILE.csv). A header row `path,label` or
`path,label,true_label`, then one row per training image. path: relative to
ROOT/train, in any layout (e.g. batch_3/img_00017.jpg). label, true_label: a
class name, or else a number: the class's position in the sorted class list. The
file overrides the folder names for the training labels; the true_label column,
when present, is the truth the diagnostics compare against (realised noise in
data_summary.json, target weights clean vs noisy, label-issue ROC-AUC). Every
problem is a ValueError naming FILE:line (line 1 = the header): an unknown path
or class, an index out of range, a path that leaves ROOT/train or is listed
twice, a missing column; a training image without a row is one too, unless
--labels_missing=skip leaves such images out (counted in data_summary.json).

Meta split. ROOT/meta/<class>/<image>, when present, is the meta set as is,
labelled by its folders and taken as clean; it is never mixed with train
(--num_meta, if given, subsamples it per class). Without it the meta set is held
out of train as for the other datasets: by the file's labels (a warning says they may
be noisy), or, with --meta_source=truth, by its true_label column (gdw_tf.data.bundle).

Truth. The folder's own labels (a labels file or a meta split, `has_own_labels`)
are the user's, possibly noisy, so synthetic noise defaults to none and the truth
of the training images is unknown (-1) unless the labels file has a true_label
column; without either, the folder names are the truth that synthetic noise
corrupts.

Hidden entries. A file or folder whose name starts with "." (.ipynb_checkpoints,
.git, .DS_Store, ._img.jpg) is no data: it is skipped, and a skipped folder is
named in a warning (so ROOT/train/..cats is never read, and says so).

Decoding. All images must decode to one shape, unless --image_size=N resizes each to
N x N as it is decoded; they are decoded to RGB uint8 once and cached as .npz under
--cache_dir, keyed by the root path, --image_size and every decoded file's relative
path, size and modification time (any change triggers a re-decode). Labels are not cached:
the folders and the labels file are read again at every load, so an edited labels file
always takes effect.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
import posixpath
import re
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from gdw_tf.data.sources.base import (
    ArraySplits,
    LabelsFile,
    SourceOptions,
    cached_arrays,
    register_source,
    resize_images,
)

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
META = "meta"  # the optional split folder of a given meta set
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
LABELS_MISSING = ("error", "skip")
CACHE_FORMAT = 2
UNKNOWN = -1  # true label of an image whose truth is not known


class ImageFile(NamedTuple):
    """One image: path relative to ROOT (posix), label, size, mtime_ns, true label (-1 unknown)."""

    rel: str
    label: int
    size: int
    mtime: int
    true_label: int


@dataclasses.dataclass(frozen=True)
class FolderListing:
    """What an image folder holds, before decoding.

    classes: class names, sorted (label = position). files: split ("train",
    "test", and "meta" when ROOT/meta exists) -> its images, sorted by path.
    labels_file: the --labels file, if any.
    """

    root: str
    classes: list[str]
    files: dict[str, list[ImageFile]]
    labels_file: LabelsFile | None = None


def has_own_labels(root: str | None, labels: str | None) -> bool:
    """Whether a folder's labels are the user's own: a labels file, or a ROOT/meta split.

    Such labels are taken as they are: no synthetic noise unless asked for.
    """
    return labels is not None or (root is not None and os.path.isdir(os.path.join(root, META)))


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _warn_hidden(folders: list[str]) -> None:
    for path in folders:
        log.warning("skipping hidden folder %s (names starting with '.' are not data)", path)


def _class_folders(split_dir: str) -> list[str]:
    """Sorted names of the class sub-folders of `split_dir`; hidden ones skipped with a warning."""
    names, hidden = [], []
    with os.scandir(split_dir) as entries:
        for e in entries:
            if e.is_dir():
                (hidden if e.name.startswith(".") else names).append(e.name)
    _warn_hidden(sorted(os.path.join(split_dir, n) for n in hidden))
    return sorted(names)


def _scan_class(class_dir: str) -> list[tuple[str, int, int]]:
    """[(file name, size, mtime_ns)] of the images in one class folder, sorted by name."""
    files, skipped = [], []
    with os.scandir(class_dir) as entries:
        for e in entries:
            if e.name.startswith(".") or not e.is_file():
                continue
            if not _is_image(e.name):
                skipped.append(e.name)
                continue
            st = e.stat()
            files.append((e.name, st.st_size, st.st_mtime_ns))
    if skipped:
        log.warning("skipping %d non-image file(s) in %s, e.g. %s", len(skipped), class_dir,
                    skipped[0])
    return sorted(files)


def _scan_tree(top: str) -> list[tuple[str, int, int]]:
    """[(path relative to `top` (posix), size, mtime_ns)] of the images anywhere under `top`,
    sorted; symbolic links to folders are followed (a folder reached twice is read once)."""
    files, skipped, hidden, seen = [], [], [], set()
    for folder, dirs, names in os.walk(top, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link back up the tree, or two links to one folder
            dirs[:] = []
            continue
        seen.add(real)
        hidden += [os.path.join(folder, d) for d in dirs if d.startswith(".")]
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            if name.startswith("."):
                continue
            path = os.path.join(folder, name)
            if not _is_image(name):
                skipped.append(path)
                continue
            st = os.stat(path)
            files.append((os.path.relpath(path, top).replace(os.sep, "/"), st.st_size,
                          st.st_mtime_ns))
    _warn_hidden(sorted(hidden))
    if skipped:
        log.warning("skipping %d non-image file(s) under %s, e.g. %s", len(skipped), top,
                    skipped[0])
    return sorted(files)


def _split_files(root: str, split: str, classes: list[str], truth: bool) -> list[ImageFile]:
    """The images of ROOT/split/<class>/, labelled by folder (true label: the label, or -1)."""
    entries = []
    for label, name in enumerate(classes):
        class_dir = os.path.join(root, split, name)
        if not os.path.isdir(class_dir):
            continue  # an absent class folder is reported by list_image_folder
        entries += [ImageFile(f"{split}/{name}/{f}", label, size, mtime,
                              label if truth else UNKNOWN)
                    for f, size, mtime in _scan_class(class_dir)]
    return entries


def list_image_folder(root: str, labels: str | None = None,
                      labels_missing: str = "error") -> FolderListing:
    """Lists ROOT/{train,test,meta}/... and reads the labels file `labels` (module doc).

    Raises FileNotFoundError / ValueError naming the missing or offending path
    (FILE:line for the labels file).
    """
    if root is None:
        raise ValueError("dataset folder needs data_dir=ROOT with ROOT/train/<class>/<image> "
                         "and ROOT/test/...")
    if labels_missing not in LABELS_MISSING:
        raise ValueError(f"labels_missing={labels_missing!r}: "
                         f"expected one of {', '.join(LABELS_MISSING)}")
    if labels is None and labels_missing != "error":
        raise ValueError(f"labels_missing={labels_missing} needs labels=FILE.csv")
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"data_dir={root}: image-folder root does not exist")
    splits = SPLITS + ((META,) if os.path.isdir(os.path.join(root, META)) else ())
    for split in SPLITS:
        if not os.path.isdir(os.path.join(root, split)):
            raise FileNotFoundError(f"image folder {root}: "
                                    f"missing split folder {os.path.join(root, split)}")
    folders = {s: _class_folders(os.path.join(root, s))
               for s in splits if s != "train" or labels is None}
    for split, names in folders.items():
        if not names:
            raise ValueError(f"image folder {os.path.join(root, split)} has no class sub-folders")
    own = has_own_labels(root, labels)
    if labels is None:
        classes = folders["train"]
        for split in splits[1:]:
            unknown = sorted(set(folders[split]) - set(classes))
            if unknown:
                raise ValueError(
                    f"class folder {os.path.join(root, split, unknown[0])} has no counterpart in "
                    f"{os.path.join(root, 'train')} ({split} classes absent from train: {unknown})")
        files = {"train": _split_files(root, "train", classes, truth=not own)}
        present = {f.label for f in files["train"]}
        for label, name in enumerate(classes):
            if label not in present:
                raise ValueError(f"class folder {os.path.join(root, 'train', name)} "
                                 f"contains no images "
                                 f"({', '.join(IMAGE_EXTENSIONS)})")
        labels_file = None
    else:
        classes = sorted(set().union(*(folders[s] for s in splits[1:])))
        files, labels_file = _labelled_train(root, labels, labels_missing, classes)
        present = {f.label for f in files["train"]}
        for label, name in enumerate(classes):
            if label not in present:
                where = next(os.path.join(root, s, name) for s in splits[1:] if name in folders[s])
                raise ValueError(f"class folder {where}: no training image is labelled {name!r} "
                                 f"in {labels_file.path} (every class needs one)")
    for split in splits[1:]:
        files[split] = _split_files(root, split, classes, truth=True)
        present = {f.label for f in files[split]}
        empty = [name for label, name in enumerate(classes) if label not in present]
        if empty:
            raise ValueError(f"class folder {os.path.join(root, split, empty[0])} has no images "
                             f"({', '.join(IMAGE_EXTENSIONS)}): every class needs {split} images"
                             f"{f' ({len(empty)} classes have none)' if len(empty) > 1 else ''}")
    return FolderListing(root, classes, files, labels_file)


# The labels file.
LABEL_COLUMNS = ("path", "label")
TRUE_COLUMN = "true_label"


def _labelled_train(root: str, labels: str, missing: str,
                    classes: list[str]) -> tuple[dict[str, list[ImageFile]], LabelsFile]:
    """({"train": images under ROOT/train labelled by the file}, LabelsFile)."""
    path = os.path.abspath(labels)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"labels={labels}: no such file")
    train_dir = os.path.join(root, "train")
    on_disk = {rel: (size, mtime) for rel, size, mtime in _scan_tree(train_dir)}
    rows = _read_labels(path, {name: label for label, name in enumerate(classes)})
    given, first_line = {}, {}
    for line, rel, label, true_label in rows:
        where = f"{path}:{line}"
        if rel in first_line:
            raise ValueError(f"{where}: path {rel} is listed twice "
                             f"(first on line {first_line[rel]})")
        if rel not in on_disk:
            raise ValueError(f"{where}: no image {rel} under {train_dir} (paths are relative to "
                             f"ROOT/train; hidden files and folders are skipped)")
        first_line[rel] = line
        given[rel] = (label, true_label)
    unlisted = sorted(set(on_disk) - set(given))
    if unlisted and missing == "error":
        raise ValueError(f"{path}: {len(unlisted)} training image(s) under {train_dir} "
                         f"have no row, e.g. {unlisted[0]} "
                         f"(list them, or pass labels_missing=skip to leave them out)")
    if unlisted:
        log.warning("%s lists no label for %d training image(s) under %s, e.g. %s: left out "
                    "(labels_missing=skip)", path, len(unlisted), train_dir, unlisted[0])
    has_truth = all(true_label is not None for _, _, _, true_label in rows)
    train = [ImageFile(f"train/{rel}", given[rel][0], *on_disk[rel],
                       given[rel][1] if has_truth else UNKNOWN) for rel in sorted(given)]
    return {"train": train}, LabelsFile(path, len(rows), has_truth and bool(rows), len(unlisted))


def _read_labels(path: str, classes: dict[str, int]) -> list[tuple[int, str, int, int | None]]:
    """[(line, path relative to ROOT/train, label, true label or None)] of the labels file."""
    reader = csv.reader(_text_lines(path))
    header = [c.strip() for c in next(reader, [])]
    wanted = "path,label[,true_label]"
    if not header or set(LABEL_COLUMNS) - set(header):
        raise ValueError(f"{path}:1: the header must name the columns {wanted}, "
                         f"got {','.join(header)!r}")
    twice = [c for i, c in enumerate(header) if c in header[:i]]
    if twice:
        raise ValueError(f"{path}:1: column {twice[0]!r} appears twice (columns: {wanted})")
    extra = [c for c in header if c not in (*LABEL_COLUMNS, TRUE_COLUMN)]
    if extra:
        raise ValueError(f"{path}:1: unexpected column {extra[0]!r} (columns: {wanted})")
    column = {name: header.index(name) for name in header}
    rows = []
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue  # a blank line
        if len(row) != len(header):
            raise ValueError(f"{path}:{line}: {len(row)} field(s), the header has {len(header)}")
        cells = {name: row[i].strip() for name, i in column.items()}
        where = f"{path}:{line}"
        for name in (n for n in header if n != "path" and not cells[n]):
            raise ValueError(f"{where}: the {name} cell is empty (a class name or index)")
        rows.append((line, _train_path(cells["path"], where),
                     _class(cells["label"], classes, where),
                     _class(cells[TRUE_COLUMN], classes, where) if TRUE_COLUMN in cells else None))
    return rows


def _text_lines(path: str) -> io.StringIO:
    """The UTF-8 text file `path` (a BOM dropped, line ends as they are, for csv); bytes
    that are not UTF-8 are a ValueError naming FILE:line."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ValueError(f"{path}:{line}: byte 0x{data[error.start]:02x} is not UTF-8 text; save "
                         "the file as UTF-8") from None
    return io.StringIO(text, newline="")


def _train_path(text: str, where: str) -> str:
    """A path relative to ROOT/train, normalised (posix); one that leaves it is an error."""
    norm = posixpath.normpath(text.replace(os.sep, "/")) if text else ""
    if not text or norm == "." or norm.startswith("/") or norm == ".." or norm.startswith("../"):
        raise ValueError(f"{where}: path {text!r} is not a file inside ROOT/train "
                         "(paths are relative to it)")
    return norm


def _class(text: str, classes: dict[str, int], where: str) -> int:
    """The label of `text`: a class name (`classes`: name -> label), or else a label."""
    if text in classes:
        return classes[text]
    if re.fullmatch(r"[0-9]+", text):
        if int(text) < len(classes):
            return int(text)
        raise ValueError(f"{where}: class index {text} is out of range: the {len(classes)} classes "
                         f"are numbered 0..{len(classes) - 1} ({_listed(classes)})")
    raise ValueError(f"{where}: unknown class {text!r} (the classes, from the class folders of "
                     f"ROOT/test and ROOT/meta: {_listed(classes)})")


def _listed(names, most: int = 10) -> str:
    """'a, b, c', or the first `most` names and how many there are."""
    names = list(names)
    if len(names) <= most:
        return ", ".join(names)
    return f"{', '.join(names[:most])}, ... ({len(names)} in all)"


# Decoding.
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


def decode_images(paths: list[str], shape: tuple | None = None,
                  size: int | None = None) -> np.ndarray:
    """Decodes image files to RGB uint8 [N, H, W, 3], in parallel TF ops.

    All images must have `shape` (default: the first image's), or, with `size`, are
    each resized to size x size (resize_images). A file that cannot be read or decoded,
    or has another shape, raises ValueError naming it.
    """
    if size is not None:
        shape = (size, size, 3)
    if shape is None:
        if not paths:
            raise ValueError("decode_images needs a shape when there are no paths")
        shape = _decode_file(paths[0]).shape
    shape = tuple(int(d) for d in shape)
    expected = tf.constant(shape, tf.int32)

    def decode(i, path):  # a wrong shape gives zeros and ok=False (reported below)
        image = _decode_bytes(tf.io.read_file(path))
        if size is not None:
            image = resize_images(image[None], size)[0]
        ok = tf.reduce_all(tf.equal(tf.shape(image), expected))
        image = tf.cond(ok, lambda: image, lambda: tf.zeros(shape, tf.uint8))
        return i, tf.ensure_shape(image, shape), ok

    ds = tf.data.Dataset.from_tensor_slices((np.arange(len(paths), dtype=np.int64),
                                             np.asarray(paths, str)))
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors().batch(1024).prefetch(2)  # undecodable files drop out; found by index
    ids, images, oks = ([np.zeros(0, np.int64)], [np.zeros((0, *shape), np.uint8)],
                        [np.zeros(0, bool)])
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
            f"shape {shape} (that of {paths[0]}); the folder source needs images of one size: "
            f"pass --image_size=N to resize them to N x N"
        )
    return np.concatenate(images)


def load_image_folder(root: str, cache_dir: str | None = None, labels: str | None = None,
                      labels_missing: str = "error", image_size: int | None = None) -> ArraySplits:
    """Reads the image folder at `root` (module doc); images from the cache when unchanged.
    image_size: each image resized to image_size x image_size as it is decoded."""
    listing = list_image_folder(root, labels, labels_missing)
    root, files = listing.root, listing.files
    key = {
        "format": CACHE_FORMAT,
        "root": root,
        **({"image_size": image_size} if image_size is not None else {}),  # old entries stay valid
        "files": {s: [[f.rel, f.size, f.mtime] for f in entries] for s, entries in files.items()},
    }

    def compute():
        log.info("decoding %d images under %s (cached afterwards)",
                 sum(map(len, files.values())), root)
        train = decode_images([os.path.join(root, f.rel) for f in files["train"]], None, image_size)
        return {f"{s}_images": train if s == "train" else
                decode_images([os.path.join(root, f.rel) for f in entries], train.shape[1:],
                              image_size)
                for s, entries in files.items()}

    arrays = cached_arrays(cache_dir, f"folder-{os.path.basename(root)}", key, compute)

    def labels_of(split, field="label"):
        return np.array([getattr(f, field) for f in files[split]], np.int64)

    def paths(split):
        return [os.path.join(root, f.rel) for f in files[split]] if split in files else None

    meta = META in files
    splits = ArraySplits(listing.classes, arrays["train_images"], labels_of("train"),
                         arrays["test_images"], labels_of("test"),
                         train_true_labels=labels_of("train", "true_label"),
                         meta_images=arrays["meta_images"] if meta else None,
                         meta_labels=labels_of(META) if meta else None,
                         meta_dir=os.path.join(root, META) if meta else None,
                         train_files=paths("train"), test_files=paths("test"),
                         meta_files=paths(META), labels_file=listing.labels_file)
    for split in (META, "test") if meta else ("test",):
        _check_apart_from_train(splits, split)
    return splits


def _check_apart_from_train(splits: ArraySplits, split: str) -> None:
    """A ValueError naming the first image of `split` ("meta" or "test") that is also a
    training image (the same file, a copy or a link: equal pixels), and how many are."""
    train = {digest: i for i, digest in enumerate(splits.digests("train"))}
    shared = [(i, train[d]) for i, d in enumerate(splits.digests(split)) if d in train]
    if shared:
        i, j = shared[0]
        role = "the clean meta set" if split == META else "the test set"
        raise ValueError(f"{getattr(splits, f'{split}_files')[i]} and {splits.train_files[j]} hold "
                         f"the same image ({len(shared)} of the {split} images are also training "
                         f"images): {role} must be kept apart from the training images; remove "
                         f"them from one of the two folders")


def _default_augment(image_shape: tuple) -> str:
    """cifar for 32x32 RGB, imagenet for RGB of side >= 224, else none."""
    if tuple(image_shape) == (32, 32, 3):
        return "cifar"
    return "imagenet" if min(image_shape[:2]) >= 224 else "none"


@register_source("folder", default_num_meta=lambda c: 1000 // c * c,
                 default_augment=_default_augment,
                 options=("data_dir", "cache_dir", "labels", "labels_missing"))
def load_folder(options: SourceOptions) -> ArraySplits:
    """Image folder --data_dir=ROOT: ROOT/{train,test}/<class>/<image>, optional ROOT/meta and --labels.

    Default num_meta: all of ROOT/meta, else the largest multiple of C <= 1000 held out of train.
    """  # noqa: E501  (the first line is the source's description in the dataset list: one line)
    return load_image_folder(options.data_dir, options.cache_dir, options.labels,
                             options.labels_missing, options.image_size)
