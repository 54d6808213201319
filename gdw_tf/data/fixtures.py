"""Writers of tiny, synthetic on-disk datasets in the real formats (for tests and demos).

- write_image_folder: ROOT/{train,test}/<class>/<i>.{png,jpg}
- write_clothing1m_release: a miniature Clothing1M release with the official file names
- write_cifar_binary: CIFAR-10/100 binary batches as the TFDS cifar builders read them
Pixel content is random; only the formats are real.
"""
from __future__ import annotations

import os

import numpy as np


def _save(path: str, array: np.ndarray, mode: str = "RGB") -> None:
    """Saves RGB uint8 `array` as an image file (format from the extension) in `mode`."""
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.fromarray(array)
    (image if mode == image.mode else image.convert(mode)).save(path)


def write_image_folder(root: str, class_names, counts: dict[str, list[int]], size=(12, 12),
                       seed: int = 0, ext: str = ".png") -> dict[str, np.ndarray]:
    """Writes counts[split][c] images of class_names[c] per split; returns {split: labels in listing order}."""
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
                _save(os.path.join(root, key), rng.integers(0, 256, (h, w, 3), dtype=np.uint8), mode)
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
        kv.extend(f"{new_key()} {rng.integers(0, len(CLOTHING1M_CLASSES))}" for _ in range(extra_labels))
    files = {"noisy_label_kv.txt": noisy_kv, "clean_label_kv.txt": clean_kv,
             "category_names_eng.txt": CLOTHING1M_CLASSES}
    files.update({f"{split}_key_list.txt": keys[split] for split in keys})
    for name, lines in files.items():
        with open(os.path.join(root, name), "w", newline="\r\n") as f:
            f.write("\n".join(lines) + "\n")
    return {"keys": keys, "true": truth, "noisy_kv": dict(l.split() for l in noisy_kv),
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
