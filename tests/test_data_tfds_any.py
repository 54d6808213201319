"""--dataset=tfds:NAME[/CONFIG] on TFDS's own format: a miniature cifar10_n prepared with the real
builder's features, trained through the command line (truth diagnostics, kill + resume bit for
bit, 2 replicas), and every mistake as one line naming its flag; --image_size."""
import csv
import json
import os
from collections import Counter

import numpy as np
import pytest

import gdw_tf.data as data
from gdw_tf.config import RunConfig
from tests.fixtures import write_tfds_cifar10_n, write_tfds_images
from tests.tiny import train, uninterrupted_and_killed_at_second_checkpoint, user_error_line

TRAIN_PER_CLASS, FLIPPED = 20, 8  # per class: 8 of 20 worse_labels wrong (40%)
C10N = ["--dataset=tfds:cifar10_n", "--label_key=worse_label", "--true_label_key=label"]
FAST = ["--model=mlp", "--image_size=8", "--num_meta=20", "--batch_size=20", "--hidden_units=16",
        "--verbose=0"]


@pytest.fixture(scope="module")
def cifar10_n(tmp_path_factory):
    """(data_dir, the training split's (worse_label, label) pairs as written)."""
    folder = str(tmp_path_factory.mktemp("tfds"))
    pairs = write_tfds_cifar10_n(folder, TRAIN_PER_CLASS, flipped_per_class=FLIPPED)
    return folder, pairs


def build(data_dir, tmp_path, **kw):
    kw = {"label_key": "worse_label", "true_label_key": "label", "batch_size": 10,
          "cache_dir": str(tmp_path / "cache"), "augment": "none", **kw}
    return data.build("tfds:cifar10_n", data_dir=data_dir, **kw)


def _read(path):
    with open(path) as f:
        return json.load(f)


def test_label_key_is_trained_on_true_label_key_is_the_truth_and_the_clean_meta_set(
        cifar10_n, tmp_path):
    data_dir, pairs = cifar10_n
    bundle = build(data_dir, tmp_path, num_meta=30)
    # every training example kept its (worse_label, label) pair; 3 per class held out as meta
    read = list(zip(bundle.train_labels.tolist(), bundle.train_true_labels.tolist()))
    meta = bundle.meta_origin
    assert len(read) + meta.size == len(pairs) and not set(meta) & set(bundle.train_origin)
    s = bundle.summary
    assert s["counts"]["meta"] == [3] * 10 and s["protocol"]["meta_by_truth"] is True
    assert s["protocol"]["meta_source"] == ("held out of the training split by true label "
                                            "(the label feature of tfds cifar10_n)")
    meta_labels = np.concatenate([y.numpy() for _, y in bundle.meta_once])
    assert sorted(meta_labels.tolist()) == sorted(list(range(10)) * 3)   # labelled by their truth
    wrong = np.mean([g != t for g, t in read])
    assert s["noise"]["realised_rate"] == pytest.approx(wrong) and 0.3 < wrong < 0.5
    assert s["noise"]["type"] == "none"
    assert s["noise"]["truth"] == "the label feature of tfds cifar10_n"
    assert not Counter(read) - Counter(pairs)                          # the pairs as written
    assert (np.bincount(bundle.train_true_labels, minlength=10).tolist()
            == [TRAIN_PER_CLASS - 3] * 10)
    # the test split's labels are the clean key's (its noisy keys hold -1 there)
    assert s["counts"]["test"] == [5] * 10 and s["provenance"] == {
        "tfds": "cifar10_n", "config": None, "version": "1.0.4",
        "splits": {"train": "train", "test": "test"}, "label_key": "worse_label",
        "true_label_key": "label", "image_size": None}


@pytest.mark.slow
def test_trains_from_the_command_line_with_the_truth_diagnostics_and_resumes_bit_for_bit(
        cifar10_n, tmp_path):
    data_dir, _ = cifar10_n
    args = [*C10N, f"--data_dir={data_dir}", *FAST, "--epochs=2", "--checkpoint_steps=2",
            "--deterministic", f"--cache_dir={tmp_path / 'c'}"]
    a, b = uninterrupted_and_killed_at_second_checkpoint(tmp_path, args,
                                                         r"at epoch 0 of 2, step [468] of 9")
    assert a["optimizer_iterations"] == b["optimizer_iterations"] == 18
    out = str(tmp_path / "whole")
    summary = _read(f"{out}/data_summary.json")
    assert summary["image_shape"] == [8, 8, 3] and summary["stored_image_shape"] == [8, 8, 3]
    assert summary["num_train"] == 180 and summary["num_meta"] == 20
    with open(f"{out}/label_issues.csv") as f:
        rows = list(csv.DictReader(f))
    noisy = sum(r["given_label"] != r["true_label"] for r in rows)
    assert len(rows) == 180 and summary["noise"]["realised_rate"] == pytest.approx(noisy / 180)
    assert 0.3 < noisy / 180 < 0.5
    issues = a["label_issues"]
    assert issues["noisy"] == noisy and 0.0 <= issues["auc"] <= 1.0      # ROC-AUC from the truth
    assert a["flags"]["label_key"] == "worse_label" and a["flags"]["true_label_key"] == "label"
    assert "target_weight_clean" in a["history"] and "target_weight_noisy" in a["history"]


@pytest.mark.slow
def test_two_replicas(cifar10_n, tmp_path):
    data_dir, _ = cifar10_n
    out = str(tmp_path / "run")
    train(*C10N, f"--data_dir={data_dir}", *FAST, "--epochs=1", "--strategy=mirrored",
          "--num_cpu_devices=2", f"--cache_dir={tmp_path / 'c'}", f"--output_dir={out}")
    results = _read(f"{out}/results.json")
    assert results["num_replicas"] == 2 and results["epochs_completed"] == 1


# ----- mistakes: one line naming the flag -------------------------------------------------------

@pytest.mark.slow
def test_an_unprepared_dataset_is_one_line_exit_2_saying_how_to_prepare_it(tmp_path):
    proc = train(*C10N, f"--data_dir={tmp_path / 'empty'}", *FAST, f"--output_dir={tmp_path / 'r'}",
                 check=False)
    line = user_error_line(proc)
    assert f"--dataset=tfds:cifar10_n is not prepared under --data_dir={tmp_path / 'empty'}" in line
    assert "tfds build cifar10_n --data_dir=DIR --manual_dir=MANUAL" in line
    assert "CIFAR-10_human_ordered.npy" in line          # the manual files TFDS asks for
    assert not os.path.exists(tmp_path / "r" / "results.json")


@pytest.mark.parametrize("dataset, kw, message", [
    ("tfds:no_such_dataset", {},
     "--dataset=tfds:no_such_dataset: TFDS knows no dataset 'no_such_dataset'"),
    ("tfds:cifar10_n/big", {}, "--dataset=tfds:cifar10_n/big: cifar10_n has no config 'big'"),
    ("tfds:", {}, "--dataset=tfds:: name a TFDS dataset"),
    ("tfds:cifar10_n", {"train_split": "train_40"},
     "--train_split=train_40: tfds:cifar10_n has no such split (splits: test, train)"),
    ("tfds:cifar10_n", {"test_split": "validation"},
     "--test_split=validation: tfds:cifar10_n has no such split (splits: test, train)"),
    ("tfds:cifar10_n", {"label_key": "worker1_id"},
     "--label_key=worker1_id is a Tensor of tfds:cifar10_n; its ClassLabel features are: "
     "aggre_label, label, random_label1, random_label2, random_label3, worse_label"),
    ("tfds:cifar10_n", {"true_label_key": "clean"},
     "--true_label_key=clean is no feature of tfds:cifar10_n"),
    ("tfds:cifar10_n", {"train_split": "test"},           # CIFAR-N's test split: -1 worse_labels
     "--label_key=worse_label: 50 of the 50 examples of split test have no label (-1), "
     "e.g. example 0"),
    ("tfds:cifar10_n", {"true_label_key": None},
     "--label_key=worse_label: 50 of the 50 examples of split test have no label (-1), "
     "e.g. example 0; pass --true_label_key=FEATURE to read the test labels from a clean feature"),
    ("folder", {"true_label_key": None, "label_key": "noisy"},
     "label_key=noisy does not apply to dataset 'folder'"),
])
def test_each_mistake_is_one_line_naming_its_flag(cifar10_n, tmp_path, dataset, kw, message):
    data_dir, _ = cifar10_n
    kw = {"label_key": "worse_label", "true_label_key": "label", **kw}
    with pytest.raises((ValueError, FileNotFoundError)) as error:
        data.build(dataset, data_dir=data_dir, cache_dir=str(tmp_path), **kw)
    assert message in str(error.value) and len(str(error.value).splitlines()) == 1


def test_without_a_true_label_there_is_no_clean_meta_set(cifar10_n, tmp_path):
    data_dir, _ = cifar10_n
    # base trains without one (num_meta 0; test labels read from the training split here)
    bundle = build(data_dir, tmp_path, true_label_key=None, test_split="train")
    assert bundle.num_meta == 0 and bundle.meta is None and (bundle.train_true_labels == -1).all()
    assert bundle.summary["protocol"]["meta_source"] == "none: the labels' truth is unknown"
    assert bundle.summary["noise"]["realised_rate"] is None
    with pytest.raises(ValueError, match="num_meta=10: tfds:cifar10_n's labels may be noisy "
                                         "and their truth is unknown"
                                         ".*--true_label_key=FEATURE.*--meta_source=auto"):
        build(data_dir, tmp_path, true_label_key=None, test_split="train", num_meta=10)
    auto = build(data_dir, tmp_path, true_label_key=None, test_split="train", meta_source="auto",
                 num_meta=10)
    assert auto.meta_source == "auto" and auto.num_meta == 10 and auto.num_train == 200

    def config(**kw):
        return RunConfig.from_flag_values({"dataset": "tfds:cifar10_n",
                                           "label_key": "worse_label", **kw})

    for method in ("gdw", "mwnet", "glc"):  # a method that needs a clean meta set
        with pytest.raises(ValueError, match=f"--method={method} needs a clean meta set, and "
                                             "--dataset=tfds:cifar10_n has none without its "
                                             "true labels: pass --true_label_key=FEATURE .* "
                                             "or --meta_source=auto"):
            config(method=method)
    config(method="base")
    config(method="gdw", meta_source="auto")
    config(method="gdw", true_label_key="label")


def test_tfds_names_keep_the_dataset_defaults_and_make_valid_run_directories():
    from gdw_tf.defaults import DATASET_DEFAULTS, OTHER_DATASET_DEFAULTS
    from gdw_tf.methods import data_options

    c10n = RunConfig.from_flag_values(
        {"dataset": "tfds:controlled_noisy_web_labels/mini_imagenet_red", "method": "base"})
    assert c10n.data.noise_type == "none" and c10n.data.noise_rate == 0.0     # real noise as it is
    assert c10n.method.model == OTHER_DATASET_DEFAULTS.model
    assert c10n.run.directory == os.path.join(
        "runs", "tfds-controlled_noisy_web_labels-mini_imagenet_red_clean_base_seed0")
    c100 = RunConfig.from_flag_values({"dataset": "tfds:cifar100", "method": "gdw",
                                       "true_label_key": "label"})
    assert c100.optim.epochs == DATASET_DEFAULTS["cifar100"].epochs
    assert c100.data.noise_type == "none"

    class Bundle:  # what data_options reads of the DataBundle
        name = "tfds:cifar100"

    assert data_options("gdw", Bundle) == {"outer_lr": 1000.0}  # as the paper's CIFAR-100


# ----- --image_size -----------------------------------------------------------------------------

def test_images_of_varying_size_need_image_size_and_are_resized_to_it(tmp_path):
    data_dir = str(tmp_path / "tfds")
    write_tfds_images(data_dir, "varying_images",
                      [(10, 12), (8, 8), (20, 9), (7, 7), (9, 9), (12, 12)])
    kw = {"data_dir": data_dir, "cache_dir": str(tmp_path / "cache"), "batch_size": 2,
          "augment": "none"}
    with pytest.raises(ValueError, match=r"--dataset=tfds:varying_images: its images vary in size "
                                         r"\(feature image has shape \(None, None, 3\)\); pass "
                                         r"--image_size=N"):
        data.build("tfds:varying_images", **kw)
    for size in (8, 5):                                        # the cache keys on the size
        bundle = data.build("tfds:varying_images", image_size=size, **kw)
        assert bundle.summary["image_shape"] == [size, size, 3] and bundle.num_train == 6
        assert next(iter(bundle.test))[0].shape[1:] == (size, size, 3)


def test_image_size_resizes_every_in_memory_source(tmp_path):
    from tests.fixtures import write_image_folder

    digits = data.build("digits", image_size=16, batch_size=10, num_meta=10)
    assert digits.summary["image_shape"] == [16, 16, 1]
    assert digits.summary["stored_image_shape"] == [16, 16, 1]
    assert next(iter(digits.meta))[0].shape[1:] == (16, 16, 1)
    root = str(tmp_path / "imgs")
    write_image_folder(root, ["a", "b"], {"train": [4, 4], "test": [2, 2]}, size=(12, 12))
    from tests.fixtures import _save
    # another size
    _save(os.path.join(root, "train", "a", "9999.png"), np.zeros((20, 16, 3), np.uint8))
    kw = {"cache_dir": str(tmp_path / "cache"), "batch_size": 2, "num_meta": 2, "augment": "none"}
    with pytest.raises(ValueError,
                       match="the folder source needs images of one size: pass --image_size=N"):
        data.build("folder", data_dir=root, **kw)
    bundle = data.build("folder", data_dir=root, image_size=6, **kw)
    assert bundle.summary["image_shape"] == [6, 6, 3] and bundle.num_train == 7
    with pytest.raises(ValueError, match="image_size=64 does not apply to dataset 'clothing1m'"):
        data.build("clothing1m", image_size=64)
