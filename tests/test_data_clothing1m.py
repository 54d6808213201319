"""Clothing1M: a miniature release with the official file names, built through the TFDS builder."""
import os
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

import gdw_tf.data as data
from gdw_tf.data.fixtures import CLOTHING1M_CLASSES, write_clothing1m_release
from gdw_tf.data.sources.clothing1m import clothing1m_builder
from gdw_tf.data.sources.clothing1m_tfds import KEY_LISTS, read_release

PER_CLASS = {"noisy_train": 4, "clean_train": 1, "clean_val": 2, "clean_test": 2}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("c1m") / "release")
    info = write_clothing1m_release(root, PER_CLASS, overlap=2)
    return root, info


@pytest.fixture(scope="module")
def data_dir(release, tmp_path_factory):
    return str(tmp_path_factory.mktemp("c1m_tfds"))


@pytest.fixture(scope="module")
def bundle(release, data_dir):
    return data.build("clothing1m", data_dir=data_dir, manual_dir=release[0], batch_size=8, meta_batch_size=4)


def test_tfds_splits_and_features(bundle, data_dir, release):
    _, info = release
    builder = clothing1m_builder(data_dir)
    assert builder.is_prepared()
    assert builder.info.features["label"].names == CLOTHING1M_CLASSES
    for split, n in PER_CLASS.items():
        assert builder.info.splits[split].num_examples == 14 * n
    rows = list(tfds.as_numpy(builder.as_dataset(split="noisy_train")))
    assert sorted(r["index"] for r in rows) == list(range(14 * 4))      # stable 0..N-1
    for r in rows:
        key = r["file_name"].decode()
        assert key == info["keys"]["noisy_train"][r["index"]]            # index = key-list position
        assert r["label"] == int(info["noisy_kv"][key])                  # noisy label
        clean_known = int(key.rsplit("_", 1)[1].split(".")[0]) < 2       # first 2 per class overlap
        assert r["true_label"] == (info["true"]["noisy_train"][r["index"]] if clean_known else -1)
        assert r["image"].ndim == 3 and r["image"].shape[2] == 3
    val = list(tfds.as_numpy(builder.as_dataset(split="clean_val")))
    assert all(r["label"] == r["true_label"] for r in val)


def test_bundle_roles_and_shapes(bundle):
    assert bundle.num_classes == 14 and bundle.image_shape == (224, 224, 3)
    assert bundle.num_train == 56 and bundle.num_meta == 28 and bundle.num_test == 28
    assert bundle.steps_per_epoch == 7 and bundle.augment == "imagenet"
    batches = list(bundle.train)
    assert len(batches) == 7
    idx = np.concatenate([b["index"].numpy() for b in batches])
    assert sorted(idx) == list(range(56))
    b = batches[0]
    assert b["image"].shape == (8, 224, 224, 3) and b["label"].dtype.name == "int32"
    image, label = next(iter(bundle.meta))
    assert image.shape == (4, 224, 224, 3) and label.shape == (4,)
    test_sizes = [x.shape[0] for x, _ in bundle.test]
    assert sum(test_sizes) == 28 and test_sizes[-1] == 4                 # no drop_remainder


def test_summary_reports_real_noise(bundle):
    s = bundle.summary
    assert s["counts"]["meta"] == [2] * 14 and s["counts"]["test"] == [2] * 14
    assert sum(s["counts"]["train"]) == 56 and s["counts"]["train_true"] == [2] * 14
    assert s["noise"]["type"] == "real" and s["noise"]["known_true_label"] == 28
    assert 0 <= s["noise"]["realised_rate"] <= 1
    assert s["protocol"]["splits"] == {"train": "noisy_train", "meta": "clean_val", "test": "clean_test"}


def test_prepared_dataset_is_reused_without_manual_dir(bundle, data_dir):
    again = data.build("clothing1m", data_dir=data_dir, batch_size=8)
    assert again.num_train == 56


@pytest.mark.parametrize("kw, flag", [
    ({"noise_type": "uniform", "noise_rate": 0.2}, "--noise_type='uniform'"),
    ({"imbalance_factor": 0.5}, "--imbalance_factor=0.5"),
    ({"num_meta": 100}, "--num_meta=100"),
    ({"augment": "cifar"}, "--augment=cifar needs fixed-size images"),
    ({"augment": "none"}, "--augment=none keeps clothing1m images"),
])
def test_protocol_flags_are_rejected(bundle, data_dir, kw, flag):
    with pytest.raises(ValueError) as err:
        data.build("clothing1m", data_dir=data_dir, **kw)
    assert flag in str(err.value)


def test_unprepared_without_manual_dir_says_how(tmp_path):
    with pytest.raises(FileNotFoundError, match="--manual_dir"):
        data.build("clothing1m", data_dir=str(tmp_path))


def test_missing_release_dir_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"--manual_dir={tmp_path}/none"):
        data.build("clothing1m", data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path / "none"))


@pytest.mark.parametrize("missing", list(KEY_LISTS.values()) + ["noisy_label_kv.txt", "category_names_eng.txt"])
def test_missing_release_file_is_named(release, tmp_path, missing):
    root = str(tmp_path / "rel")
    os.makedirs(os.path.join(root, "images"))
    for f in os.listdir(release[0]):
        if f.endswith(".txt") and f != missing:
            shutil.copy(os.path.join(release[0], f), root)
    with pytest.raises(FileNotFoundError, match=f"missing file {root}/{missing}"):
        read_release(root)


def test_malformed_and_unlabelled_lines_are_named(release, tmp_path):
    root = str(tmp_path / "rel")
    shutil.copytree(release[0], root)
    kv = os.path.join(root, "clean_label_kv.txt")
    with open(kv, "a") as f:
        f.write("images/x.jpg fourteen\n")
    with pytest.raises(ValueError, match=r"clean_label_kv.txt:\d+: expected '<image path> <label>'"):
        read_release(root)
    shutil.copy(os.path.join(release[0], "clean_label_kv.txt"), kv)
    with open(os.path.join(root, "clean_test_key_list.txt"), "a") as f:
        f.write("images/unknown.jpg\n")
    with pytest.raises(ValueError, match=r"clean_test_key_list.txt:29: image 'images/unknown.jpg' has no label"):
        read_release(root)


def test_bad_image_file_is_named(release, tmp_path):
    root = str(tmp_path / "rel")
    shutil.copytree(release[0], root)
    key = open(os.path.join(root, "clean_val_key_list.txt")).readline().strip()
    open(os.path.join(root, key), "wb").write(b"garbage")
    with pytest.raises(ValueError, match=f"Clothing1M image file {root}/{key} is not a readable image"):
        data.build("clothing1m", data_dir=str(tmp_path / "tfds"), manual_dir=root)
