"""A run is bound to its data: other data are never resumed, re-reported or audited; the
report names only what was trained; meta/ and test/ are kept apart from train/; the labels
file's and the Python API's bad input is one clear line."""
import csv
import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import gdw_tf
from gdw_tf.data import fingerprint
from tests.fixtures import write_image_folder
from tests.tiny import ROOT, subprocess_env, train, user_error_line

CLASSES = ["cat", "dog", "owl"]
FAST = ("--dataset=folder", "--model=mlp", "--hidden_units=8", "--verbose=0", "--augment=none")


def _labelled_folder(tmp_path, per_class=20, flip_every=6):
    """ROOT/{train,test,meta}/<class>/ and a labels CSV (path,label,true_label) that flips
    every `flip_every`-th training label to the next class."""
    root = tmp_path / "images"
    write_image_folder(str(root), CLASSES, {"train": [per_class] * 3, "test": [2] * 3,
                                            "meta": [2] * 3}, size=(6, 6))
    rows = []
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            given = (c + 1) % 3 if i % flip_every == 0 else c
            rows.append((f"{name}/{i:04d}.png", CLASSES[given], name))
    return root, _write_labels(tmp_path / "labels.csv", rows), rows


def _write_labels(path, rows, header=("path", "label", "true_label")):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def _module(name, *args):
    return subprocess.run([sys.executable, "-m", name, *args], cwd=ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=400)


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _snapshot(out):
    """The run's files that a refused command must leave as they were: name -> bytes."""
    names = ("label_issues.csv", "data_summary.json", "results.json", "history.json",
             fingerprint.FILE)
    return {n: open(os.path.join(out, n), "rb").read() for n in names
            if os.path.exists(os.path.join(out, n))}


@pytest.mark.slow
def test_an_edited_labels_file_is_never_audited_rerun_or_resumed(tmp_path):
    root, labels, rows = _labelled_folder(tmp_path)
    out = str(tmp_path / "run")
    args = (*FAST, f"--data_dir={root}", f"--labels={labels}", "--labels_missing=skip",
            "--batch_size=10", "--epochs=1", f"--output_dir={out}")
    train(*args)
    saved = json.load(open(os.path.join(out, fingerprint.FILE)))
    assert len(saved["splits"]["train"]["keys"]) == 60 and "meta" in saved["splits"]
    before = _snapshot(out)

    # One row removed, one added (an image the run never trained on), one relabelled.
    write_image_folder(str(tmp_path / "extra"), CLASSES, {"train": [0, 0, 1]}, size=(6, 6))
    shutil.copy(tmp_path / "extra/train/owl/0000.png", root / "train/owl/new.png")
    edited = rows[1:] + [("owl/new.png", "owl", "owl")]
    edited[0] = (edited[0][0], "owl", edited[0][2])  # cat/0001.png: cat -> owl
    _write_labels(labels, edited)

    export = tmp_path / "export"
    proc = _module("gdw_tf.audit", f"--output_dir={out}", f"--export={export}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("gdw_tf.audit: error: the data differ from those the run in")
    for words in ("1 example added (train/owl/new.png)", "1 example removed (train/cat/0000.png)",
                  "1 example relabelled (train/cat/0001.png: cat -> owl)", labels):
        assert words in line, line
    assert not (export / "relabel.csv").exists()
    line = user_error_line(train(*args, check=False))  # re-running the finished run
    assert "1 example relabelled" in line and "Nothing was resumed or rewritten" in line
    line = user_error_line(train(*args[:-2], "--epochs=2", args[-1], check=False))  # extending it
    assert "1 example relabelled" in line
    assert _snapshot(out) == before

    _write_labels(labels, rows)  # the data restored: the run is the same run again
    written = os.stat(os.path.join(out, fingerprint.FILE)).st_mtime_ns
    train(*args[:-2], "--epochs=2", args[-1])
    assert json.load(open(os.path.join(out, "results.json")))["epochs_completed"] == 2
    assert os.stat(os.path.join(out, fingerprint.FILE)).st_mtime_ns == written  # checked, kept


@pytest.mark.slow
def test_images_added_to_train_are_named_as_a_data_change_not_a_flag_change(tmp_path):
    root = tmp_path / "images"
    write_image_folder(str(root), CLASSES, {"train": [8] * 3, "test": [2] * 3}, size=(6, 6))
    out = str(tmp_path / "run")
    args = (*FAST, f"--data_dir={root}", "--num_meta=3", "--batch_size=7", "--epochs=1",
            f"--output_dir={out}")
    train(*args)
    shutil.copy(root / "train/dog/0000.png", root / "train/dog/copy.png")
    line = user_error_line(train(*args, check=False))
    assert "train: 1 example added (train/dog/copy.png)" in line, line
    assert "flags" not in line


@pytest.mark.slow
def test_examples_never_visited_are_reported_as_such_and_the_truth_is_filled(tmp_path):
    root, labels, rows = _labelled_folder(tmp_path)
    out = str(tmp_path / "run")
    train(*FAST, f"--data_dir={root}", f"--labels={labels}", "--batch_size=7", "--epochs=1",
          f"--output_dir={out}")
    report = _read_csv(os.path.join(out, "label_issues.csv"))
    assert len(report) == 60
    unvisited = [r for r in report if r["visits"] == "0"]
    assert len(unvisited) == 60 - 60 // 7 * 7  # the last partial batch is dropped
    assert report[-len(unvisited):] == unvisited  # last, unranked, nothing invented
    for row in unvisited:
        assert (row["rank"] == row["score"] == row["suggested_label"]
                == row["given_probability"] == "")
    truth = {f"{root}/train/{path}": (CLASSES.index(given), CLASSES.index(true))
             for path, given, true in rows}
    for row in report:  # the given and true labels are the file's, visited or not
        assert (int(row["given_label"]), int(row["true_label"])) == truth[row["path"]]
    ranks = [int(r["rank"]) for r in report if r["visits"] != "0"]
    assert ranks == list(range(1, 57))
    entry = json.load(open(os.path.join(out, "results.json")))["label_issues"]
    assert entry["noisy"] == sum(g != t for p, (g, t) in truth.items()
                                 if p not in {r["path"] for r in unvisited})
    assert 0.0 <= entry["auc"] <= 1.0

    export = tmp_path / "export"
    proc = _module("gdw_tf.audit", f"--output_dir={out}", "--top=100", f"--export={export}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    relabel = _read_csv(export / "relabel.csv")
    assert len(relabel) == 56  # only the ranked examples, paths as in the labels file
    assert {r["path"] for r in relabel} <= {path for path, _, _ in rows}
    assert not {f"{root}/train/{r['path']}" for r in relabel} & {r["path"] for r in unvisited}


@pytest.mark.parametrize("split", ["meta", "test"])
def test_a_class_without_images_in_meta_or_test_is_named(tmp_path, split):
    root = tmp_path / "images"
    write_image_folder(str(root), CLASSES, {"train": [4] * 3, "test": [2] * 3, "meta": [2] * 3},
                       size=(6, 6))
    shutil.rmtree(root / split / "cat")
    os.makedirs(root / split / "cat")
    with pytest.raises(ValueError, match=rf"class folder {root}/{split}/cat has no images"):
        gdw_tf.data.build("folder", data_dir=str(root), cache_dir=str(tmp_path / "cache"))
    shutil.rmtree(root / split / "cat")  # a class folder missing altogether: the same
    with pytest.raises(ValueError, match=rf"class folder {root}/{split}/cat has no images"):
        gdw_tf.data.build("folder", data_dir=str(root), cache_dir=str(tmp_path / "cache"))


@pytest.mark.parametrize("split", ["meta", "test"])
def test_training_images_in_meta_or_test_are_named(tmp_path, split):
    root = tmp_path / "images"
    write_image_folder(str(root), CLASSES, {"train": [4] * 3, "test": [2] * 3, "meta": [2] * 3},
                       size=(6, 6))
    shutil.copy(root / "train/dog/0003.png", root / split / "dog/copy.png")  # a copy
    os.symlink(root / "train/owl/0001.png", root / split / "owl/link.png")  # the same file
    with pytest.raises(ValueError) as error:
        gdw_tf.data.build("folder", data_dir=str(root), cache_dir=str(tmp_path / "cache"))
    assert str(error.value).startswith(f"{root}/{split}/dog/copy.png and {root}/train/dog/0003.png "
                                       f"hold the same image (2 of the {split} images are also "
                                       "training images)")


def test_symlinked_class_folders_under_train_work_with_a_labels_file(tmp_path):
    root, labels, rows = _labelled_folder(tmp_path, per_class=4)
    elsewhere = tmp_path / "cats"
    shutil.move(root / "train/cat", elsewhere)
    os.symlink(elsewhere, root / "train/cat")
    os.symlink(root / "train", root / "train/loop")  # a link back up the tree is read once
    bundle = gdw_tf.data.build("folder", data_dir=str(root), labels=labels, augment="none",
                               cache_dir=str(tmp_path / "cache"), batch_size=4)
    assert bundle.num_train == 12


@pytest.mark.parametrize("content, message", [
    (b"path,label\ncat/0000.png,cat\ncat/0001.png,c\xffat\n",
     r"labels.csv:3: byte 0xff is not UTF-8"),
    (b"path,label,true_label\ncat/0000.png,,cat\n", r"labels.csv:2: the label cell is empty"),
    (b"path,label,true_label\ncat/0000.png,cat,\n", r"labels.csv:2: the true_label cell is empty"),
    (b"path,label,label\ncat/0000.png,cat,dog\n", r"labels.csv:1: column 'label' appears twice"),
])
def test_bad_labels_files_are_one_line_naming_file_and_line(tmp_path, content, message):
    root, labels, _ = _labelled_folder(tmp_path, per_class=2)
    with open(labels, "wb") as f:
        f.write(content)
    with pytest.raises(ValueError, match=message):
        gdw_tf.data.build("folder", data_dir=str(root), labels=labels, labels_missing="skip",
                          cache_dir=str(tmp_path / "cache"))


@pytest.mark.slow
def test_glc_prints_no_keras_shuffle_warning(tmp_path):
    root = tmp_path / "images"
    write_image_folder(str(root), CLASSES, {"train": [6] * 3, "test": [2] * 3}, size=(6, 6))
    proc = train(*(a for a in FAST if "hidden_units" not in a), f"--data_dir={root}",
                 "--method=glc", "--num_meta=6", "--batch_size=6",
                 "--epochs=1", f"--output_dir={tmp_path / 'run'}")
    assert "shuffle" not in proc.stderr, proc.stderr


# The Python API.
def _tiny_data(labels, meta_extra=()):
    x = np.random.default_rng(0).random((6, 4), dtype=np.float32)
    train_ds = tf.data.Dataset.from_tensor_slices((x, labels)).batch(3)
    meta_ds = tf.data.Dataset.from_tensor_slices((x, np.arange(6) % 3, *meta_extra)).batch(3)
    return train_ds, meta_ds


def _backbone():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])


@pytest.mark.parametrize("method", ["gdw", "mwnet", "base"])
def test_an_unbuilt_backbone_is_one_clear_error(method):
    with pytest.raises(ValueError, match="backbone 'unbuilt' is not built, so it has no weights"):
        gdw_tf.GDWModel(keras.Sequential([keras.layers.Dense(3)], name="unbuilt"), 3, method=method)


def test_float_labels_must_be_whole_numbers_and_meta_sample_weights_are_refused():
    model = gdw_tf.GDWModel(_backbone(), 3, method="gdw")
    model.compile(keras.optimizers.SGD(0.1))
    train_ds, meta_ds = _tiny_data(np.array([0.0, 1.0, 2.0, 0.0, 1.0, 2.0], np.float32))
    model.fit(gdw_tf.data.with_meta(train_ds, meta_ds), epochs=1, verbose=0)  # whole: fine
    train_ds, meta_ds = _tiny_data(np.array([0.0, 1.5, 2.0, 0.0, 1.0, 2.0], np.float32))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="training label is not a whole number"):
        model.fit(gdw_tf.data.with_meta(train_ds, meta_ds), epochs=1, verbose=0)
    train_ds, meta_ds = _tiny_data(np.arange(6) % 3, meta_extra=(np.ones(6, np.float32),))
    with pytest.raises(ValueError, match=r"with_meta\(meta_ds\): expected \(image, label\) pairs, "
                                         r"got 3 elements"):
        gdw_tf.data.with_meta(train_ds, meta_ds)
