"""Writers of tiny, synthetic files in the real formats the tests read.

- write_image_folder: ROOT/{train,test}/<class>/<i>.{png,jpg}
- write_clothing1m_release: a miniature Clothing1M release with the official file names
- write_cifar_binary: CIFAR-10/100 binary batches as the TFDS cifar builders read them
- fake_resnet18_state_dict, write_torch_zip: torchvision's resnet18 weights as torch.save
  writes them
- write_tfds_cifar10_n, write_tfds_images: miniature prepared TFDS datasets (TFDS's own
  format, written by tfds.dataset_builders.store_as_tfds_dataset; cifar10_n with the real
  builder's features)
Pixel content and weights are random; only the formats are real.
"""
from __future__ import annotations

import os
import sys

import numpy as np


def _save(path: str, array: np.ndarray, mode: str = "RGB") -> None:
    """Saves RGB uint8 `array` as an image file (format from the extension) in `mode`."""
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.fromarray(array)
    (image if mode == image.mode else image.convert(mode)).save(path)


def write_image_folder(root: str, class_names, counts: dict[str, list[int]], size=(12, 12),
                       seed: int = 0, ext: str = ".png") -> dict[str, np.ndarray]:
    """Writes counts[split][c] images of class_names[c] per split; returns {split: labels in
    listing order}."""
    rng = np.random.default_rng(seed)
    labels = {}
    for split, per_class in counts.items():
        labels[split] = np.repeat(np.arange(len(per_class)), per_class)
        for c, n in enumerate(per_class):
            for i in range(n):
                image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                _save(os.path.join(root, split, class_names[c], f"{i:04d}{ext}"), image)
    return labels


CLOTHING1M_CLASSES = ["T-Shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker",
                      "Jacket", "Downcoat", "Suit", "Shawl", "Dress", "Vest", "Underwear"]


def write_clothing1m_release(root: str, per_class: dict[str, int], noisy_flip: float = 0.4,
                             overlap: int = 2, seed: int = 0, extra_labels: int = 3) -> dict:
    """A miniature Clothing1M release under `root`, in the official file names and layout.

    per_class: split name (noisy_train, clean_train, clean_val, clean_test) -> images per
    class. As in the real release: keys look like images/<d>/<dd>/<a>,<b>.jpg; noisy
    labels of noisy_train are the true class shifted by one with probability `noisy_flip`;
    the first `overlap` noisy_train images of each class are also in clean_label_kv.txt;
    each label file also labels `extra_labels` images that are in no key list (and not on
    disk); text files have CRLF line ends; JPEGs vary in size around 40x30 and every 5th
    is grayscale, every 7th CMYK.
    Returns {"keys": {split: [key]}, "true": {split: [class]}, "noisy_kv": {key: label},
    "clean_known": set of noisy_train keys that also have a clean label}.
    """
    rng = np.random.default_rng(seed)
    noisy_kv, clean_kv, keys, truth, clean_known = [], [], {}, {}, set()
    serial = 0

    def new_key():
        nonlocal serial
        serial += 1
        a, b = 1_000_000 + 7919 * serial, int(rng.integers(10**9, 10**10))
        return f"images/{a % 10}/{a // 10 % 100:02d}/{a},{b}.jpg"

    for split, n in per_class.items():
        keys[split], truth[split] = [], []
        for c in range(len(CLOTHING1M_CLASSES)):
            for i in range(n):
                key = new_key()
                h, w = rng.integers(28, 48, 2)
                mode = "L" if serial % 5 == 0 else "CMYK" if serial % 7 == 0 else "RGB"
                _save(os.path.join(root, key), rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                      mode)
                keys[split].append(key)
                truth[split].append(c)
                if split == "noisy_train":
                    noisy = (c + 1) % len(CLOTHING1M_CLASSES) if rng.random() < noisy_flip else c
                    noisy_kv.append(f"{key} {noisy}")
                    if i < overlap:
                        clean_kv.append(f"{key} {c}")
                        clean_known.add(key)
                else:
                    clean_kv.append(f"{key} {c}")
    for kv in (noisy_kv, clean_kv):
        kv.extend(f"{new_key()} {rng.integers(0, len(CLOTHING1M_CLASSES))}"
                  for _ in range(extra_labels))
    files = {"noisy_label_kv.txt": noisy_kv, "clean_label_kv.txt": clean_kv,
             "category_names_eng.txt": CLOTHING1M_CLASSES}
    files.update({f"{split}_key_list.txt": keys[split] for split in keys})
    for name, lines in files.items():
        with open(os.path.join(root, name), "w", newline="\r\n") as f:
            f.write("\n".join(lines) + "\n")
    return {"keys": keys, "true": truth, "noisy_kv": dict(line.split() for line in noisy_kv),
            "clean_known": clean_known}


def write_cifar_binary(folder: str, class_names, train_labels, test_labels, seed: int = 0) -> None:
    """CIFAR-10 binary release files (cifar-10-batches-bin/): 5 train batches, 1 test batch.

    Each record is 1 label byte + 3072 pixel bytes (channel-major 32x32).
    """
    rng = np.random.default_rng(seed)
    out = os.path.join(folder, "cifar-10-batches-bin")
    os.makedirs(out, exist_ok=True)

    def records(labels):
        labels = np.asarray(labels, np.uint8)
        pixels = rng.integers(0, 256, (labels.size, 3072), dtype=np.uint8)
        return np.concatenate([labels[:, None], pixels], axis=1).tobytes()

    for i, part in enumerate(np.array_split(np.asarray(train_labels), 5), 1):
        with open(os.path.join(out, f"data_batch_{i}.bin"), "wb") as f:
            f.write(records(part))
    with open(os.path.join(out, "test_batch.bin"), "wb") as f:
        f.write(records(test_labels))
    with open(os.path.join(out, "batches.meta.txt"), "w") as f:
        f.write("\n".join(class_names) + "\n")


def fake_resnet18_state_dict(num_classes=1000, seed=0):
    """Random tensors under torchvision's resnet18 names and (PyTorch-layout) shapes."""
    rng = np.random.default_rng(seed)
    sd = {}

    def conv(name, out, inp, k):
        sd[f"{name}.weight"] = rng.normal(0, 0.1, (out, inp, k, k)).astype("float32")

    def bn(name, c):
        sd[f"{name}.weight"] = rng.uniform(0.5, 1.5, c).astype("float32")
        sd[f"{name}.bias"] = rng.normal(0, 0.1, c).astype("float32")
        sd[f"{name}.running_mean"] = rng.normal(0, 0.1, c).astype("float32")
        sd[f"{name}.running_var"] = rng.uniform(0.5, 2.0, c).astype("float32")
        sd[f"{name}.num_batches_tracked"] = np.array(1234, dtype="int64")

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    inp = 64
    for stage, width in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            p = f"layer{stage}.{block}"
            conv(f"{p}.conv1", width, inp if block == 0 else width, 3)
            bn(f"{p}.bn1", width)
            conv(f"{p}.conv2", width, width, 3)
            bn(f"{p}.bn2", width)
            if block == 0 and stage > 1:
                conv(f"{p}.downsample.0", width, inp, 1)
                bn(f"{p}.downsample.1", width)
        inp = width
    sd["fc.weight"] = rng.normal(0, 0.1, (num_classes, 512)).astype("float32")
    sd["fc.bias"] = rng.normal(0, 0.1, num_classes).astype("float32")
    return sd


# numpy dtype name -> the torch storage type holding it (ComplexFloatStorage: one the
# converter does not support)
TORCH_STORAGES = {"float32": "FloatStorage", "float64": "DoubleStorage", "float16": "HalfStorage",
                  "bfloat16": "BFloat16Storage", "int64": "LongStorage", "int32": "IntStorage",
                  "int16": "ShortStorage", "int8": "CharStorage", "uint8": "ByteStorage",
                  "bool": "BoolStorage", "complex64": "ComplexFloatStorage"}


def write_torch_zip(path, tensors, monkeypatch, extra=None, views=None):
    """Writes name -> numpy array as ``torch.save(state_dict)`` does (zip: data.pkl + storages).

    Built without PyTorch from stand-ins pickled under torch's own names; fc.weight is
    stored transposed (a non-contiguous view) and fc.bias at an offset in a shared storage.
    ``views``: more entries, name -> (1-D storage array, offset, size, stride), pickled as
    given, unchecked (to build malformed files).
    """
    import collections
    import pickle
    import types
    import zipfile

    import ml_dtypes

    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    names = {np.dtype(ml_dtypes.bfloat16 if k == "bfloat16" else k): v
             for k, v in TORCH_STORAGES.items()}
    for name in names.values():
        setattr(torch, name, type(name, (), {"__module__": "torch", "__qualname__": name}))

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only pickled")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)

    storages = []

    class Storage:
        def __init__(self, flat):
            self.key, self.flat = str(len(storages)), flat
            storages.append(self)

    class Tensor:
        def __init__(self, storage, offset, size, stride):
            self.args = (storage, offset, size, stride)

        def __reduce_ex__(self, protocol):
            return _rebuild_tensor_v2, (*self.args, False, collections.OrderedDict())

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                return ("storage", getattr(torch, names[obj.flat.dtype]), obj.key, "cpu",
                        obj.flat.size)
            return None

    sd = collections.OrderedDict()
    for name, a in tensors.items():
        if name == "fc.weight":  # column-major: strides (1, rows)
            sd[name] = Tensor(Storage(np.ascontiguousarray(a.T).ravel()), 0, a.shape,
                              (1, a.shape[0]))
        elif name == "fc.bias":
            sd[name] = Tensor(Storage(np.concatenate([np.zeros(3, a.dtype), a])), 3, a.shape, (1,))
        else:
            strides = tuple(int(s) // a.itemsize for s in a.strides)
            sd[name] = Tensor(Storage(a.ravel()), 0, a.shape, strides)
    for name, (flat, offset, size, stride) in (views or {}).items():
        sd[name] = Tensor(Storage(flat), offset, size, stride)
    if extra is not None:
        sd["extra"] = extra
    buffer = __import__("io").BytesIO()
    Pickler(buffer, protocol=2).dump(sd)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", buffer.getvalue())
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
        for s in storages:
            z.writestr(f"archive/data/{s.key}", s.flat.tobytes())
    monkeypatch.setitem(sys.modules, "torch", None)  # from here on: torch not installed
    monkeypatch.delitem(sys.modules, "torch._utils")


CIFAR_N_NOISY_KEYS = ("worse_label", "aggre_label", "random_label1", "random_label2",
                      "random_label3")


def write_tfds_cifar10_n(data_dir: str, train_per_class: int = 20, test_per_class: int = 5,
                         flipped_per_class: int = 8, seed: int = 0) -> list[tuple[int, int]]:
    """A prepared miniature of TFDS's cifar10_n under data_dir, with the real builder's features
    (`tfds.builder("cifar10_n").info.features`) and version.

    Train: train_per_class images of each class; in each class the first flipped_per_class
    have worse_label = (label + 1) % 10, the others worse_label = label; aggre_label and
    random_label1..3 are the label. Test: as CIFAR-N's, -1 in every noisy-label feature.
    Images: 32x32 RGB, a class-dependent grey level plus noise (learnable). Returns the
    training split's (worse_label, label) pairs, in writing order (TFDS stores them shuffled).
    """
    import tensorflow_datasets as tfds

    builder = tfds.builder("cifar10_n")
    rng = np.random.default_rng(seed)
    pairs = []

    def examples(split, per_class):
        for i in range(per_class * 10):
            label, rank = i % 10, i // 10
            image = np.clip(label * 25 + rng.integers(0, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
            worse = (label + 1) % 10 if rank < flipped_per_class else label
            noisy = dict.fromkeys(CIFAR_N_NOISY_KEYS, label) | {"worse_label": worse}
            if split == "test":
                noisy = dict.fromkeys(CIFAR_N_NOISY_KEYS, -1)
            else:
                pairs.append((worse, label))
            yield i, {"id": f"{split}_{i:05d}", "image": image, "label": label, **noisy,
                      **{f"worker{k}_id": k for k in (1, 2, 3)},
                      **{f"worker{k}_time": 1.0 for k in (1, 2, 3)}}

    tfds.dataset_builders.store_as_tfds_dataset(
        name="cifar10_n", version=str(builder.version), features=builder.info.features,
        split_datasets={"train": list(examples("train", train_per_class)),
                        "test": list(examples("test", test_per_class))}, data_dir=data_dir)
    return pairs


def write_tfds_images(data_dir: str, name: str, sizes: list[tuple[int, int]], num_classes: int = 3,
                      seed: int = 0) -> None:
    """A prepared TFDS dataset `name` (not one TFDS knows) of RGB images of the given sizes
    (feature image of shape (None, None, 3), label a ClassLabel): splits train and test,
    each with one image per size, labelled in turn."""
    import tensorflow_datasets as tfds

    rng = np.random.default_rng(seed)
    features = tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3)),
        "label": tfds.features.ClassLabel(num_classes=num_classes)})
    split = [(i, {"image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                  "label": i % num_classes})
             for i, (h, w) in enumerate(sizes)]
    tfds.dataset_builders.store_as_tfds_dataset(
        name=name, version="1.0.0", features=features,
        split_datasets={"train": split, "test": split},
        data_dir=data_dir)
