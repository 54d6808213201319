"""The folder source with labels of its own: a clean ROOT/meta split, a --labels CSV, hidden
folders."""
import csv
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import gdw_tf.data as data
from gdw_tf.config import RunConfig
from gdw_tf.data.sources import folder as folder_source

CLASSES = ["ant", "bee", "cat"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR = os.path.join(REPO, "..", "shared", "data", "cifar10-jpeg")


def _png(path, rng):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)


def _pixels(paths):
    return {np.asarray(Image.open(p).convert("RGB")).tobytes() for p in paths}


def _files(folder):
    return sorted(os.path.join(d, f) for d, _, names in os.walk(folder) for f in names)


def make_folder(root, train=6, meta=3, test=2, classes=CLASSES, seed=0):
    """ROOT/{train,meta,test}/<class>/<i>.png with `train`/`meta`/`test` random 8x8 images per
    class."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("meta", meta), ("test", test)):
        for name in classes:
            for i in range(n):
                _png(os.path.join(root, split, name, f"{i:03d}.png"), rng)
    return str(root)


def build(root, cache, **kw):
    kw = {"batch_size": 4, "augment": "none", "cache_dir": str(cache), **kw}
    return data.build("folder", data_dir=str(root), **kw)


def _images(dataset, key=None):
    """uint8 pixel bytes of every image a pipeline (augment=none) yields."""
    out = []
    for element in dataset:
        x = element[key] if key else element[0]
        out += [np.round(img * 255).astype(np.uint8).tobytes() for img in x.numpy()]
    return out


# ----- ROOT/meta ------------------------------------------------------------------------------

def test_meta_folder_is_the_meta_set_as_is_never_mixed_with_train(tmp_path):
    root = make_folder(tmp_path / "imgs")
    bundle = build(root, tmp_path / "cache")
    meta_files, train_files = _pixels(_files(f"{root}/meta")), _pixels(_files(f"{root}/train"))
    meta_seen = _images(bundle.meta_once)
    # exactly the meta/ images, once each
    assert sorted(meta_seen) == sorted(meta_files)
    train_seen = set(_images(bundle.train_from(0, bundle.steps_per_epoch * 3), "image"))
    assert train_seen <= train_files and not train_seen & meta_files
    s = bundle.summary
    assert bundle.num_meta == 9 and bundle.num_train == 18        # nothing carved out of train
    assert s["counts"]["meta"] == [3, 3, 3] and s["counts"]["train"] == [6, 6, 6]
    assert s["protocol"]["meta_source"] == f"the folder's meta/ split ({root}/meta)"
    # the train folder's labels are the user's own: their truth is unknown
    assert (bundle.train_true_labels == -1).all() and "true_label" not in bundle.train.element_spec
    assert s["noise"]["realised_rate"] is None and s["noise"]["empirical_transition_matrix"] is None
    assert s["noise"]["truth"].startswith("unknown") and s["counts"]["train_true"] is None
    json.dumps(s)


def test_num_meta_subsamples_the_meta_folder_per_class_with_the_seed(tmp_path):
    root = make_folder(tmp_path / "imgs", meta=5)
    meta_files = _pixels(_files(f"{root}/meta"))
    picks = []
    for seed in (0, 0, 1, 2, 3):
        bundle = build(root, tmp_path / "cache", num_meta=6, seed=seed)
        assert bundle.num_meta == 6 and bundle.summary["counts"]["meta"] == [2, 2, 2]
        assert bundle.num_train == 18
        seen = _images(bundle.meta_once)
        assert set(seen) <= meta_files and len(set(seen)) == 6
        picks.append(tuple(bundle.meta_origin))
    assert picks[0] == picks[1] and len(set(picks)) > 1        # seeded: same seed, same subset
    with pytest.raises(ValueError, match=f"num_meta=18 asks 6 meta examples per class, but "
                                         f"{root}/meta/ant has only 5"):
        build(root, tmp_path / "cache", num_meta=18)
    with pytest.raises(ValueError, match="num_meta=7 is not divisible"):
        build(root, tmp_path / "cache", num_meta=7)


@pytest.mark.parametrize("split", ["meta", "test"])
def test_a_meta_or_test_class_absent_from_train_is_named(tmp_path, split):
    root = make_folder(tmp_path / "imgs")
    _png(f"{root}/{split}/wasp/0.png", np.random.default_rng(1))
    with pytest.raises(ValueError, match=f"class folder {root}/{split}/wasp "
                                         f"has no counterpart in {root}/train"):
        build(root, tmp_path / "cache")


def _settings(**kw):
    return {"dataset": "folder", "data_dir": None, "labels": None, "noise_type": None,
            "noise_rate": None, "model": None, "lr": None, "epochs": None, **kw}


def test_noise_defaults_to_none_with_meta_or_labels_and_explicit_noise_is_recorded(tmp_path):
    root = make_folder(tmp_path / "imgs")
    plain = make_folder(tmp_path / "plain", meta=0)              # no ROOT/meta
    assert not os.path.exists(f"{plain}/meta")

    def noise(**kw):
        data = RunConfig.from_flag_values(_settings(**kw)).data
        return data.noise_type, data.noise_rate

    # the folder names are the truth
    assert noise(data_dir=plain) == ("uniform", 0.4)
    assert noise(data_dir=root) == noise(data_dir=plain, labels="x.csv") == ("none", 0.0)
    assert noise(data_dir=root, noise_type="uniform") == ("uniform", 0.4)
    bundle = build(root, tmp_path / "cache", noise_type="uniform", noise_rate=0.4, seed=1)
    noise = bundle.summary["noise"]
    assert noise["type"] == "uniform" and noise["rate"] == 0.4
    assert noise["expected_rate"] == pytest.approx(0.4 * 2 / 3) and noise["realised_rate"] is None
    assert bundle.summary["counts"]["meta"] == [3, 3, 3]         # the meta set is not corrupted


# ----- --labels=FILE.csv ----------------------------------------------------------------------

def flat_folder(root, n=12, seed=0):
    """ROOT/train/batch_<k>/img_<i>.png (no class layout), ROOT/{meta,test}/<class>/."""
    rng = np.random.default_rng(seed)
    rels = []
    for i in range(n):
        rel = f"batch_{i % 3}/img_{i:05d}.png"
        _png(os.path.join(root, "train", rel), rng)
        rels.append(rel)
    for split in ("meta", "test"):
        for name in CLASSES:
            _png(os.path.join(root, split, name, "0.png"), rng)
    return str(root), rels


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return str(path)


@pytest.fixture
def flat(tmp_path):
    root, rels = flat_folder(tmp_path / "imgs")
    rng = np.random.default_rng(5)
    true = np.arange(len(rels)) % 3
    given = np.where(rng.random(len(rels)) < 0.4, (true + 1) % 3, true)
    return root, rels, given, true


def test_labels_by_name_and_by_index_override_the_layout(tmp_path, flat):
    root, rels, given, true = flat
    by_name = write_csv(tmp_path / "names.csv", ["path", "label"],
                        [(r, CLASSES[g]) for r, g in zip(rels, given)])
    by_index = write_csv(tmp_path / "index.csv", ["label", "path"],
                         [(g, r) for r, g in zip(rels, given)])
    a = build(root, tmp_path / "cache", labels=by_name, num_meta=None)
    b = build(root, tmp_path / "cache", labels=by_index)
    assert a.class_names == CLASSES
    order = np.argsort(rels)                                    # training images in path order
    np.testing.assert_array_equal(a.train_labels, given[order])
    np.testing.assert_array_equal(b.train_labels, given[order])
    assert a.summary["labels_file"] == {"path": by_name, "rows": 12, "true_label": False,
                                        "unlisted_skipped": 0}
    assert (a.train_true_labels == -1).all() and a.summary["noise"]["type"] == "none"
    assert a.summary["protocol"]["labels"] == by_name


def test_true_label_column_is_the_truth_of_the_summary_and_the_batches(tmp_path, flat):
    root, rels, given, true = flat
    path = write_csv(tmp_path / "l.csv", ["path", "label", "true_label"],
                     [(r, CLASSES[g], CLASSES[t]) for r, g, t in zip(rels, given, true)])
    bundle = build(root, tmp_path / "cache", labels=path)
    order = np.argsort(rels)
    g, t = given[order], true[order]
    np.testing.assert_array_equal(bundle.train_true_labels, t)
    noise = bundle.summary["noise"]
    assert noise["truth"] == f"the true_label column of {path}"
    assert noise["realised_rate"] == pytest.approx(np.mean(g != t)) and np.mean(g != t) > 0
    empirical = np.zeros((3, 3))
    np.add.at(empirical, (t, g), 1)
    np.testing.assert_allclose(noise["empirical_transition_matrix"],
                               empirical / empirical.sum(1, keepdims=True))
    assert bundle.summary["counts"]["train_true"] == np.bincount(t, minlength=3).tolist()
    batch = next(iter(bundle.train))
    np.testing.assert_array_equal(batch["true_label"].numpy(), t[batch["index"].numpy()])
    np.testing.assert_array_equal(batch["label"].numpy(), g[batch["index"].numpy()])
    # synthetic noise on top: measured against the CSV's truth
    noisier = build(root, tmp_path / "cache", labels=path, noise_type="flip", noise_rate=1.0)
    assert (noisier.summary["noise"]["realised_rate"]
            == pytest.approx(np.mean(noisier.train_labels != t)))


@pytest.mark.parametrize("case, line, needle", [
    ("unknown_path", 3, "no image batch_0/nope.png under"),
    ("unknown_class", 3, "unknown class 'wasp'"),
    ("index_range", 3, "class index 3 is out of range: the 3 classes are numbered 0..2"),
    ("twice", 4, "path batch_1/img_00001.png is listed twice (first on line 3)"),
    ("escape", 3, "path '../train/batch_0/img_00000.png' is not a file inside ROOT/train"),
    ("no_header", 1, "the header must name the columns path,label[,true_label]"),
    ("no_label_column", 1, "the header must name the columns path,label[,true_label]"),
    ("unknown_column", 1, "unexpected column 'truelabel'"),
    ("bad_true_label", 2, "unknown class 'dgo'"),
    ("missing_row", None, "1 training image(s) under"),
])
def test_every_labels_file_problem_names_file_and_line(tmp_path, flat, case, line, needle):
    root, rels, given, _ = flat
    header, rows = ["path", "label"], [[r, CLASSES[g]] for r, g in zip(rels, given)]
    if case == "unknown_path":
        rows[1][0] = "batch_0/nope.png"
    elif case == "unknown_class":
        rows[1][1] = "wasp"
    elif case == "index_range":
        rows[1][1] = "3"
    elif case == "twice":
        rows[2][0] = rows[1][0]
    elif case == "escape":
        rows[1][0] = "../train/" + rows[0][0]
    elif case == "no_header":
        header = None
    elif case == "no_label_column":
        header, rows = ["path", "class"], rows
    elif case == "unknown_column":
        header, rows = ["path", "label", "truelabel"], [r + ["ant"] for r in rows]
    elif case == "bad_true_label":
        header, rows = ["path", "label", "true_label"], [r + ["dgo"] for r in rows]
    elif case == "missing_row":
        rows = rows[:-1]
    path = write_csv(tmp_path / "l.csv", header, rows)
    with pytest.raises(ValueError) as error:
        build(root, tmp_path / "cache", labels=path)
    message = str(error.value)
    assert message.startswith(f"{path}:{line}: " if line else f"{path}: "), message
    assert needle in message and "\n" not in message
    if case == "missing_row":
        assert rels[-1] in message and "labels_missing=skip" in message


def test_labels_missing_skip_leaves_unlisted_images_out_and_counts_them(tmp_path, flat):
    root, rels, given, _ = flat
    path = write_csv(tmp_path / "l.csv", ["path", "label"],
                     [(r, CLASSES[g]) for r, g in zip(rels, given)][:9])
    bundle = build(root, tmp_path / "cache", labels=path, labels_missing="skip")
    assert bundle.num_train == 9 and bundle.summary["labels_file"]["unlisted_skipped"] == 3
    assert bundle.summary["protocol"]["labels_missing"] == "skip"
    listed = _pixels([os.path.join(root, "train", r) for r in rels[:9]])
    assert set(_images(bundle.train_from(0, bundle.steps_per_epoch * 3), "image")) <= listed
    with pytest.raises(ValueError, match="labels_missing=skip needs labels=FILE.csv"):
        build(root, tmp_path / "cache", labels_missing="skip")


def test_a_class_without_training_image_in_the_file_is_named(tmp_path, flat):
    root, rels, _, _ = flat
    rows = [(r, "ant" if i % 2 else "bee") for i, r in enumerate(rels)]  # no "cat"
    path = write_csv(tmp_path / "l.csv", ["path", "label"], rows)
    with pytest.raises(ValueError, match=f"class folder {root}/test/cat: "
                                         "no training image is labelled 'cat'"):
        build(root, tmp_path / "cache", labels=path)


def test_an_edited_labels_file_relabels_without_decoding_again(tmp_path, flat, monkeypatch):
    root, rels, given, _ = flat
    path = write_csv(tmp_path / "l.csv", ["path", "label"],
                     [(r, CLASSES[g]) for r, g in zip(rels, given)])
    first = folder_source.load_image_folder(root, str(tmp_path / "cache"), path)
    monkeypatch.setattr(folder_source, "decode_images",
                        lambda *a: pytest.fail("decoded although cached"))
    write_csv(path, ["path", "label"], [(r, CLASSES[(g + 1) % 3]) for r, g in zip(rels, given)])
    again = folder_source.load_image_folder(root, str(tmp_path / "cache"), path)
    np.testing.assert_array_equal(again.train_labels, (first.train_labels + 1) % 3)
    np.testing.assert_array_equal(again.train_images, first.train_images)
    _png(os.path.join(root, "meta", "ant", "1.png"), np.random.default_rng(9))  # a new meta image
    with pytest.raises(pytest.fail.Exception, match="decoded although cached"):
        folder_source.load_image_folder(root, str(tmp_path / "cache"), path)


@pytest.mark.parametrize("dataset", ["digits", "cifar10"])
def test_other_datasets_refuse_labels(dataset):
    with pytest.raises(ValueError, match=f"labels=x.csv does not apply to dataset '{dataset}'"):
        data.build(dataset, labels="x.csv")
    with pytest.raises(ValueError,
                       match=f"labels_missing=skip does not apply to dataset '{dataset}'"):
        data.build(dataset, labels_missing="skip")


# ----- hidden folders ---------------------------------------------------------------------------

def test_hidden_class_folders_are_skipped_with_a_warning_naming_them(tmp_path, caplog):
    root = make_folder(tmp_path / "imgs")
    rng = np.random.default_rng(3)
    for hidden in ("train/..x", "test/.ipynb_checkpoints", "meta/.git"):
        _png(os.path.join(root, hidden, "0.png"), rng)
    with caplog.at_level(logging.WARNING, logger=folder_source.__name__):
        listing = folder_source.list_image_folder(root)
    assert listing.classes == CLASSES and len(listing.files["train"]) == 18
    warned = [r.getMessage() for r in caplog.records]
    for hidden in ("train/..x", "test/.ipynb_checkpoints", "meta/.git"):
        assert any(f"skipping hidden folder {root}/{hidden}" in m for m in warned), warned


def test_hidden_folders_under_a_labelled_train_tree_are_skipped(tmp_path, flat, caplog):
    root, rels, given, _ = flat
    _png(os.path.join(root, "train", ".cache", "x.png"), np.random.default_rng(4))
    path = write_csv(tmp_path / "l.csv", ["path", "label"],
                     [(r, CLASSES[g]) for r, g in zip(rels, given)])
    with caplog.at_level(logging.WARNING, logger=folder_source.__name__):
        # no missing row
        assert len(folder_source.list_image_folder(root, path).files["train"]) == 12
    assert any(f"skipping hidden folder {root}/train/.cache" in r.getMessage()
               for r in caplog.records)


# ----- end to end: the user's noisy CIFAR folder, labels from a CSV -------------------------------

def cifar_folder(root, rng, train_per_class=100, meta_per_class=10, test_per_class=20, noise=0.35):
    """ROOT/train/batch_<k>/img_<i>.jpg (shuffled, no class layout), ROOT/{meta,test}/<class>/,
    symlinks to the shared CIFAR-10 JPEGs; returns the labels CSV (noisy label, true_label)."""
    classes = sorted(os.listdir(os.path.join(CIFAR, "train")))
    rows = []
    order = rng.permutation(len(classes) * train_per_class)
    for c, name in enumerate(classes):
        files = sorted(os.listdir(os.path.join(CIFAR, "train", name)))
        for i, f in enumerate(files[:train_per_class]):
            k = int(order[c * train_per_class + i])
            rel = f"batch_{k % 7}/img_{k:05d}.jpg"
            os.makedirs(os.path.join(root, "train", os.path.dirname(rel)), exist_ok=True)
            os.symlink(os.path.join(CIFAR, "train", name, f), os.path.join(root, "train", rel))
            label = (c if rng.random() >= noise
                     else int((c + rng.integers(1, len(classes))) % len(classes)))
            rows.append((rel, classes[label], name))
        test_files = sorted(os.listdir(os.path.join(CIFAR, "test", name)))
        for split, picked in (("meta", files[train_per_class:train_per_class + meta_per_class]),
                              ("test", test_files[:test_per_class])):
            os.makedirs(os.path.join(root, split, name))
            source = "train" if split == "meta" else "test"
            for f in picked:
                os.symlink(os.path.join(CIFAR, source, name, f), os.path.join(root, split, name, f))
    return write_csv(os.path.join(os.path.dirname(root), "labels.csv"),
                     ["path", "label", "true_label"],
                     rng.permutation(np.array(rows, dtype=object)).tolist())


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(CIFAR), reason="cifar10-jpeg not present")
def test_train_on_a_noisy_cifar_folder_with_labels_from_a_csv(tmp_path):
    root = str(tmp_path / "mine")
    labels = cifar_folder(root, np.random.default_rng(0))
    with open(labels) as f:
        rows = list(csv.DictReader(f))
    noisy = {os.path.join(root, "train", r["path"]) for r in rows if r["label"] != r["true_label"]}
    assert 0.3 < len(noisy) / len(rows) < 0.4
    out = str(tmp_path / "run")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
    run = lambda *args: subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env,  # noqa: E731
                                       capture_output=True, text=True, timeout=300)
    proc = run("gdw_tf.train", "--dataset=folder", f"--data_dir={root}", f"--labels={labels}",
               "--method=gdw", "--epochs=2", "--model=strided_cnn", "--batch_size=50",
               "--hidden_units=16", "--verbose=0", f"--cache_dir={tmp_path / 'cache'}",
               f"--output_dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "detection ROC-AUC" in proc.stdout
    with open(os.path.join(out, "results.json")) as f:
        entry = json.load(f)["label_issues"]
    assert entry["noisy"] == len(noisy) and 0.0 <= entry["auc"] <= 1.0   # from the CSV's truth
    with open(os.path.join(out, "data_summary.json")) as f:
        summary = json.load(f)
    assert summary["protocol"]["meta_source"] == f"the folder's meta/ split ({root}/meta)"
    assert summary["num_meta"] == 100 and summary["counts"]["meta"] == [10] * 10
    assert summary["num_train"] == 1000
    assert summary["noise"]["type"] == "none"
    assert summary["noise"]["realised_rate"] == pytest.approx(len(noisy) / len(rows))
    with open(os.path.join(out, "label_issues.csv")) as f:
        issues = list(csv.DictReader(f))
    assert {r["path"] for r in issues} == {os.path.join(root, "train", r["path"]) for r in rows}
    assert {r["path"] for r in issues if r["given_label"] != r["true_label"]} == noisy

    export = str(tmp_path / "relabel")
    proc = run("gdw_tf.audit", f"--output_dir={out}", "--top=20", f"--export={export}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(export, "relabel.csv")) as f:
        relabel = list(csv.DictReader(f))
    # Paths as the labels file has them (relative to ROOT/train), so the two can be merged.
    assert [f"{root}/train/{r['path']}" for r in relabel] == [r["path"] for r in issues[:20]]
    assert {r["path"] for r in relabel} <= {r["path"] for r in rows}


def test_an_unknown_true_label_counts_as_neither_clean_nor_noisy():
    import tensorflow as tf

    from gdw_tf import diagnostics

    # clean, noisy, unknown x2
    labels, true = tf.constant([0, 1, 2, 1]), tf.constant([0, 2, -1, -1])
    weights = tf.constant([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0], [0, 4.0, 0]])
    stats = diagnostics.target_weight_stats(weights, labels, true)
    np.testing.assert_array_equal(stats["target_weight_clean"][1].numpy(), [1, 0, 0, 0])
    np.testing.assert_array_equal(stats["target_weight_noisy"][1].numpy(), [0, 1, 0, 0])
    fractions = diagnostics.increase_fractions(weights, weights + 1, labels, true)
    for name in ("increased_nontarget_clean", "increased_truetarget_noisy",
                 "increased_nontarget_noisy"):
        assert fractions[name][1].numpy()[6:].sum() == 0, name  # rows of the unknown examples


def test_a_resumed_run_compares_labels_as_a_path(tmp_path, monkeypatch):
    from gdw_tf import run_dir

    monkeypatch.chdir(tmp_path)
    assert run_dir.differing_flags({"labels": "l.csv"}, {"labels": str(tmp_path / "l.csv")}) == []
    assert run_dir.differing_flags({"labels": "l.csv"}, {"labels": "other.csv"}) == ["labels"]
    assert (run_dir.differing_flags({"labels_missing": "error"}, {"labels_missing": "skip"})
            == ["labels_missing"])


def test_labels_without_a_meta_folder_hold_the_meta_set_out_of_train_with_a_warning(
        tmp_path, flat, caplog):
    import shutil

    root, rels, given, _ = flat
    shutil.rmtree(f"{root}/meta")
    path = write_csv(tmp_path / "l.csv", ["path", "label"],
                     [(r, CLASSES[g]) for r, g in zip(rels, given)])
    with caplog.at_level(logging.WARNING, logger=data.bundle.__name__):
        bundle = build(root, tmp_path / "cache", labels=path, num_meta=3)
    assert (bundle.summary["protocol"]["meta_source"]
            == "held out of the training split before corruption")
    assert bundle.num_meta == 3 and bundle.num_train == 9
    assert any(f"labels={path} without a meta split" in r.getMessage() for r in caplog.records)
    caplog.clear()  # meta_source=auto holds nothing out: no such warning
    with caplog.at_level(logging.WARNING, logger=data.bundle.__name__):
        bundle = build(root, tmp_path / "cache", labels=path, num_meta=3, meta_source="auto")
    assert bundle.num_train == 12 and not caplog.records


# ----- --meta_source=truth --------------------------------------------------------------------

def test_meta_source_truth_holds_out_a_balanced_clean_meta_set_by_true_label(tmp_path):
    import shutil

    root, rels = flat_folder(tmp_path / "imgs", n=60)
    shutil.rmtree(f"{root}/meta")
    rng = np.random.default_rng(3)
    true = rng.permutation(np.arange(60) % 3)
    given = np.where(rng.random(60) < 0.5, (true + 1) % 3, true)      # half the labels wrong
    path = write_csv(tmp_path / "l.csv", ["path", "label", "true_label"],
                     [(r, CLASSES[g], CLASSES[t]) for r, g, t in zip(rels, given, true)])
    bundle = build(root, tmp_path / "cache", labels=path, num_meta=12, meta_source="truth",
                   train_per_class=10)
    order = np.argsort(rels)                                          # source position -> CSV row
    t_src, g_src = true[order], given[order]
    meta = bundle.meta_origin
    assert meta.size == 12 and not set(meta) & set(bundle.train_origin)   # held out of train
    # balanced by truth
    np.testing.assert_array_equal(np.bincount(t_src[meta], minlength=3), [4, 4, 4])
    # not drawn by the given labels
    assert (g_src[meta] != t_src[meta]).any()
    meta_labels = np.concatenate([y.numpy() for _, y in bundle.meta_once])
    meta_pixels = _images(bundle.meta_once)
    train_images = np.asarray(bundle.source_train_images)
    by_pixels = {train_images[o].tobytes(): t_src[o] for o in meta}
    assert sorted(meta_pixels) == sorted(by_pixels)                   # exactly the chosen images
    assert sorted(meta_labels) == sorted(t_src[meta])                 # labelled by their true label
    # train_per_class caps the rest per given label, as training sees them
    assert bundle.summary["counts"]["train"] == [10, 10, 10]
    s = bundle.summary
    assert s["counts"]["meta"] == [4, 4, 4] and s["protocol"]["meta_by_truth"] is True
    assert s["protocol"]["meta_source"] == f"held out of the training split by true label " \
                                           f"(the true_label column of {path})"
    # by the given labels (the default), the meta set differs
    plain = build(root, tmp_path / "cache", labels=path, num_meta=12, train_per_class=10)
    assert plain.summary["protocol"]["meta_by_truth"] is False
    np.testing.assert_array_equal(np.bincount(g_src[plain.meta_origin], minlength=3), [4, 4, 4])


def test_meta_source_truth_never_chooses_an_example_of_unknown_truth():
    from gdw_tf.data.protocol import ProtocolConfig, apply_protocol

    given = np.array([0, 1, 2] * 6)
    truth = np.array([0, 1, 2] * 6)
    truth[:9] = -1                                                    # unknown for the first 9
    for seed in range(5):
        r = apply_protocol(given, 3, ProtocolConfig(num_meta=9, seed=seed), true_labels=truth,
                           meta_by_truth=True)
        np.testing.assert_array_equal(np.sort(r.meta_origin), np.arange(9, 18))  # all 9 known ones
        np.testing.assert_array_equal(r.meta_labels, truth[r.meta_origin])
    with pytest.raises(ValueError, match="num_meta=12 asks 4 meta examples per class, "
                                         "drawn by true label, but class 0 has only 3 training "
                                         "examples whose true label is known"):
        apply_protocol(given, 3, ProtocolConfig(num_meta=12), true_labels=truth, meta_by_truth=True)


def test_meta_source_truth_errors_name_the_flag(tmp_path, flat):
    root, rels, given, true = flat
    no_truth = write_csv(tmp_path / "n.csv", ["path", "label"],
                         [(r, CLASSES[g]) for r, g in zip(rels, given)])
    import shutil
    shutil.copytree(root, tmp_path / "nometa")
    shutil.rmtree(tmp_path / "nometa" / "meta")
    with pytest.raises(ValueError, match="meta_source=truth draws the meta set by true label, "
                                         "but the training labels of folder have no known truth"):
        build(str(tmp_path / "nometa"), tmp_path / "cache", labels=no_truth, num_meta=3,
              meta_source="truth")
    with_truth = write_csv(tmp_path / "t.csv", ["path", "label", "true_label"],
                           [(r, CLASSES[g], CLASSES[t]) for r, g, t in zip(rels, given, true)])
    with pytest.raises(ValueError,
                       match=f"but {root}/meta is a clean meta set: drop meta_source=truth"):
        build(root, tmp_path / "cache", labels=with_truth, meta_source="truth")
