"""Clothing1M: a miniature release with the official file names, built through the TFDS builder."""
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import gdw_tf.data as data
from gdw_tf.data.sources.clothing1m import clothing1m_builder
from gdw_tf.data.sources.clothing1m_tfds import KEY_LISTS, read_release
from tests.fixtures import CLOTHING1M_CLASSES, write_clothing1m_release

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
    return data.build("clothing1m", data_dir=data_dir, manual_dir=release[0], batch_size=8,
                      meta_batch_size=4)


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
        # also in clean_label_kv.txt
        clean_known = key in info["clean_known"]
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


def _assert_same_batches(expected, got):
    assert len(expected) == len(got)
    for a, b in zip(expected, got):
        for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
            np.testing.assert_array_equal(x.numpy(), y.numpy())   # images too: same augmentation


def test_positioned_pipelines_restart_anywhere_with_the_same_batches(bundle, release):
    _, info = release
    steps = bundle.steps_per_epoch                                       # 7 batches of 8 out of 56
    whole = list(bundle.train_from(0, 3 * steps))
    assert len(whole) == 3 * steps
    epochs = [np.concatenate([b["index"].numpy() for b in whole[e * steps:(e + 1) * steps]])
              for e in range(3)]
    for idx in epochs:
        # an epoch: each example once
        assert sorted(idx) == list(range(56))
    assert not np.array_equal(epochs[0], epochs[1])                      # reshuffled
    for b in whole[:2]:                                                  # records parsed right
        keys = [info["keys"]["noisy_train"][i] for i in b["index"].numpy()]
        assert b["label"].numpy().tolist() == [int(info["noisy_kv"][k]) for k in keys]
        assert b["image"].shape == (8, 224, 224, 3)
    for first in (3, steps, steps + 4):                                  # mid-epoch, epoch start
        _assert_same_batches(whole[first:], list(bundle.train_from(first, 3 * steps)))
    # 7 batches of 4 a meta epoch
    meta = list(bundle.meta_from(0).take(10))
    _assert_same_batches(meta[5:], list(bundle.meta_from(5).take(5)))    # across its boundary
    labels = np.concatenate([y.numpy() for _, y in meta[:7]])
    assert sorted(labels) == sorted(info["true"]["clean_val"])


def test_records_are_positioned_across_files_blocks_and_groups(bundle, data_dir, tmp_path):
    from gdw_tf.data import pipeline
    from gdw_tf.data.augment import make_augmentation
    from gdw_tf.data.sources import SOURCES, RecordFiles, SourceOptions
    splits = SOURCES.get("clothing1m").load(SourceOptions(data_dir))
    stored = splits.records("train")
    serialized = [r.numpy() for r in tf.data.TFRecordDataset(list(stored.files))]
    # three files, as TFDS shards
    counts, files = (20, 5, 31), []
    for i, (start, count) in enumerate(zip(np.cumsum((0,) + counts[:-1]), counts)):
        files.append(str(tmp_path / f"part-{i}.tfrecord"))
        with tf.io.TFRecordWriter(files[-1]) as writer:
            for record in serialized[start:start + count]:
                writer.write(record)
    records = RecordFiles(tuple(files), counts, stored.parse)
    # blocks of 4 (5 + 2 + 8 = 15, shorter ones at file ends), groups of 3 blocks; 50 of 56 a epoch
    kw = dict(augmentation=make_augmentation("imagenet", (None, None, 3)), batch_size=5,
              per_epoch=50, seed=3, stage="train", output=pipeline.as_train_element,
              block=4, window=3)
    whole = list(pipeline.positional_record_dataset(records, first=0, last=150, **kw))
    assert len(whole) == 30
    epochs = [np.concatenate([b["index"].numpy() for b in whole[e * 10:(e + 1) * 10]])
              for e in range(3)]
    for idx in epochs:
        # no repeats within an epoch
        assert len(set(idx)) == 50
    assert len({tuple(idx) for idx in epochs}) == 3
    file_order = [int(stored.parse(tf.constant(r))["index"]) for r in serialized]
    assert all(not np.array_equal(idx, file_order[:50]) for idx in epochs)
    for step in (1, 3, 10, 17):                                          # in a group, epoch start
        tail = list(pipeline.positional_record_dataset(records, first=5 * step, last=150, **kw))
        _assert_same_batches(whole[step:], tail)
    other_seed = list(pipeline.positional_record_dataset(records, first=0, last=50,
                                                         **{**kw, "seed": 4}))
    assert not np.array_equal(other_seed[0]["index"].numpy(), whole[0]["index"].numpy())


def test_summary_reports_real_noise(bundle):
    s = bundle.summary
    assert s["counts"]["meta"] == [2] * 14 and s["counts"]["test"] == [2] * 14
    assert sum(s["counts"]["train"]) == 56 and s["counts"]["train_true"] == [2] * 14
    assert s["noise"]["type"] == "real" and s["noise"]["known_true_label"] == 28
    assert 0 <= s["noise"]["realised_rate"] <= 1
    assert s["protocol"]["splits"] == {"train": "noisy_train", "meta": "clean_val",
                                       "test": "clean_test"}


def test_prepared_dataset_is_reused_without_manual_dir(bundle, data_dir):
    again = data.build("clothing1m", data_dir=data_dir, batch_size=8)
    assert again.num_train == 56


def test_release_in_the_official_layout_is_read_as_written(release):
    root, info = release
    with open(os.path.join(root, "noisy_label_kv.txt"), "rb") as f:
        assert f.readline().endswith(b"\r\n")                            # CRLF, as released
    # images/<d>/<dd>/<a>,<b>.jpg
    assert all("," in k for k in info["keys"]["clean_test"])
    parsed = read_release(root)
    for split, keys in info["keys"].items():
        # extra labelled keys ignored
        assert [e[0] for e in parsed.splits[split]] == keys
        if split != "noisy_train":
            assert [e[2] for e in parsed.splits[split]] == info["true"][split]


@pytest.mark.parametrize("kw, flag", [
    ({"noise_type": "uniform", "noise_rate": 0.2}, "noise_type='uniform' is not supported"),
    ({"noise_rate": 0.4}, "noise_rate=0.4 is not supported"),
    ({"imbalance_factor": 0.5}, "imbalance_factor=0.5 is not supported"),
    ({"num_meta": 100}, "num_meta=100 is not supported"),
    ({"cache_dir": "/tmp/cache"}, "cache_dir=/tmp/cache does not apply to dataset 'clothing1m'"),
])
def test_flags_it_cannot_take_fail_before_reading_anything(tmp_path, kw, flag):
    # An unprepared --data_dir and no --manual_dir: only a check before loading can answer.
    with pytest.raises(ValueError) as err:
        data.build("clothing1m", data_dir=str(tmp_path), **kw)
    assert flag in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("kw, flag", [
    ({"augment": "cifar"}, "augment=cifar needs fixed-size images"),
    ({"augment": "none"}, "augment=none keeps clothing1m images"),
])
def test_augmentations_that_cannot_batch_are_rejected(bundle, data_dir, kw, flag):
    with pytest.raises(ValueError) as err:
        data.build("clothing1m", data_dir=data_dir, **kw)
    assert flag in str(err.value)


def test_skip_bad_images_is_rejected_where_it_does_nothing():
    with pytest.raises(ValueError, match="skip_bad_images=True does not apply to dataset 'digits'"):
        data.build("digits", skip_bad_images=True)


def test_known_input_before_reading_data():
    assert data.known_input("clothing1m") == (14, (224, 224, 3))
    assert data.known_input("digits") is None


def test_unprepared_without_manual_dir_says_how(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"data_dir={tmp_path} .*manual_dir="):
        data.build("clothing1m", data_dir=str(tmp_path))


def test_missing_release_dir_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"manual_dir={tmp_path}/none"):
        data.build("clothing1m", data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path / "none"))


@pytest.mark.parametrize("missing", list(KEY_LISTS.values())
                         + ["noisy_label_kv.txt", "category_names_eng.txt"])
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
    with pytest.raises(ValueError,
                       match=r"clean_label_kv.txt:\d+: expected '<image path> <label>'"):
        read_release(root)
    shutil.copy(os.path.join(release[0], "clean_label_kv.txt"), kv)
    with open(os.path.join(root, "clean_test_key_list.txt"), "a") as f:
        f.write("images/unknown.jpg\n")
    with pytest.raises(ValueError, match=r"clean_test_key_list.txt:29: "
                                         r"image 'images/unknown.jpg' has no label"):
        read_release(root)


def _damage(root, split, n):
    """Truncates the first n images of `split` to 70% of their bytes; deletes the next one."""
    keys = read_release(root).splits[split]
    for key, _, _ in keys[:n]:
        path = os.path.join(root, key)
        data_ = open(path, "rb").read()
        open(path, "wb").write(data_[:int(0.7 * len(data_))])
    os.remove(os.path.join(root, keys[n][0]))
    return [k for k, _, _ in keys[:n + 1]]


def _tfrecords(folder):
    return [f for _, _, files in os.walk(folder) for f in files if ".tfrecord" in f]


def test_bad_images_fail_in_one_error_before_anything_is_written(release, tmp_path, monkeypatch):
    from gdw_tf.data.sources import clothing1m_tfds
    root = str(tmp_path / "rel")
    shutil.copytree(release[0], root)
    bad = _damage(root, "clean_val", 3) + _damage(root, "noisy_train", 1)
    monkeypatch.setattr(clothing1m_tfds, "MAX_LISTED_BAD_IMAGES", 4)
    tfds_dir = str(tmp_path / "tfds")
    with pytest.raises(ValueError) as err:
        data.build("clothing1m", data_dir=tfds_dir, manual_dir=root)
    message = str(err.value)
    assert message.startswith(f"Clothing1M release {root}: "
                              "6 image(s) in the key lists cannot be used")
    assert "skip_bad_images=True" in message and "... and 2 more" in message
    listed = [line.split(":")[0].strip() for line in message.splitlines()[1:-1]]
    assert listed == sorted(bad)[:4]
    assert "cannot be decoded" in message or "does not exist" in message
    assert not _tfrecords(tfds_dir) and not clothing1m_builder(tfds_dir).is_prepared()


def test_skip_bad_images_leaves_them_out_and_counts_them(release, tmp_path):
    root = str(tmp_path / "rel")
    shutil.copytree(release[0], root)
    bad = _damage(root, "clean_val", 2)
    b = data.build("clothing1m", data_dir=str(tmp_path / "tfds"), manual_dir=root, batch_size=8,
                   skip_bad_images=True)
    assert b.num_meta == 28 - 3
    assert b.summary["skipped_images"] == {"count": 3, "keys": sorted(bad)}
    builder = clothing1m_builder(str(tmp_path / "tfds"))
    rows = list(tfds.as_numpy(builder.as_dataset(split="clean_val")))
    assert sorted(r["index"] for r in rows) == list(range(25))          # still 0..N-1
    assert not {r["file_name"].decode() for r in rows} & set(bad)
    images = [image for image, _ in b.meta_once]                         # every kept image decodes
    assert sum(x.shape[0] for x in images) == 25


@pytest.fixture(scope="module")
def auto_bundle(bundle, data_dir):  # after `bundle`, which builds the TFDS dataset
    return data.build("clothing1m", data_dir=data_dir, batch_size=8, meta_batch_size=4,
                      meta_source="auto")


def test_auto_meta_on_a_stream_addresses_training_records_by_position(auto_bundle, data_dir):
    from gdw_tf.data import pipeline
    from gdw_tf.data.sources import SOURCES, SourceOptions
    b = auto_bundle
    assert b.meta_source == "auto"
    assert b.meta is None and b.meta_once is None and b.meta_from is None
    # clean_val's 28: a multiple of 14
    assert b.num_meta == 28
    assert b.summary["protocol"]["meta_source"].startswith("auto: ")
    assert "clean_val split is not used" in b.summary["protocol"]["meta_source"]
    assert b.summary["counts"]["meta"] is None and b.summary["num_meta"] == 28
    records = SOURCES.get("clothing1m").load(SourceOptions(data_dir)).records("train")
    parsed = [records.parse(s) for s in tf.data.TFRecordDataset(list(records.files))]
    labels = np.array([int(p["label"]) for p in parsed])             # record order, independently
    np.testing.assert_array_equal(b.train_labels, labels)
    np.testing.assert_array_equal(b.train_true_labels, [int(p["true_label"]) for p in parsed])
    in_order = list(b.train_in_order)
    assert [y.shape[0] for _, y in in_order] == [8] * 7 and in_order[0][0].shape == (8, 224, 224, 3)
    np.testing.assert_array_equal(np.concatenate([y.numpy() for _, y in in_order]), labels)
    rows = np.array([0, 3, 7, 20, 21, 40, 55])
    at = pipeline.records_at(records, rows[::-1])                     # in the order asked for
    assert ([int(records.parse(s)["index"]) for s in at]
            == [int(parsed[r]["index"]) for r in rows[::-1]])
    with pytest.raises(ValueError, match="distinct"):
        pipeline.records_at(records, [1, 1])
    with pytest.raises(ValueError, match=r"in \[0, 56\)"):
        pipeline.records_at(records, [56])


def test_auto_meta_batches_of_a_stream_are_the_chosen_records_and_restart_anywhere(auto_bundle):
    b = auto_bundle
    rows = np.flatnonzero(b.train_labels < 7)[:12]                   # any 12 records
    # 12 records: 3 batches of 4 an epoch
    whole = list(b.meta_from_train(rows, 0, "meta_auto_1").take(9))
    assert whole[0][0].shape == (4, 224, 224, 3)
    for e in range(3):                                               # each record once an epoch
        labels = np.concatenate([y.numpy() for _, y in whole[3 * e:3 * e + 3]])
        assert sorted(labels) == sorted(b.train_labels[rows])
    _assert_same_batches(whole[4:], list(b.meta_from_train(rows, 4, "meta_auto_1").take(5)))
    other = list(b.meta_from_train(rows, 0, "meta_auto_2").take(3))  # another choice, another order
    assert any(not np.array_equal(x.numpy(), y.numpy()) for (x, _), (y, _) in zip(whole, other))


@pytest.mark.parametrize("num_meta, match", [(27, "num_meta=27 is not a positive multiple"),
                                             (0, "num_meta=0 is not a positive multiple")])
def test_auto_meta_on_a_stream_needs_a_multiple_of_the_classes(bundle, data_dir, num_meta, match):
    with pytest.raises(ValueError, match=match):
        data.build("clothing1m", data_dir=data_dir, meta_source="auto", num_meta=num_meta)


def test_train_files_are_the_release_images_by_training_index(bundle, release, data_dir, tmp_path):
    root, info = release
    assert bundle.train_files() == [os.path.join(os.path.abspath(root), key)
                                    for key in info["keys"]["noisy_train"]]
    assert data.build("clothing1m", data_dir=data_dir, batch_size=8).train_files is None
    changed = str(tmp_path / "changed")  # a release that no longer lists what the build holds
    shutil.copytree(root, changed)
    key_list = os.path.join(changed, KEY_LISTS["noisy_train"])
    lines = open(key_list).read().splitlines()
    open(key_list, "w").write("\n".join(lines[:-1]) + "\n")
    again = data.build("clothing1m", data_dir=data_dir, manual_dir=changed, batch_size=8)
    assert again.num_train == 56 and again.train_files() is None
