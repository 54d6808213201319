"""The label-issue report for every method and any Keras classifier: the record (p(given
label), suggested label) without learned weights, the trainer's and the audit's report,
the Python function, and the cleanlab-compatible arrays."""
import csv
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import gdw_tf
from gdw_tf import label_issues
from tests import tiny

FAST = ("--dataset=digits", "--verbose=0", "--train_per_class=10", "--epochs=3")


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["base", "coteaching"])
def test_a_run_of_a_method_without_weights_writes_the_report_and_audit_rewrites_it(
        tmp_path, method):
    out = str(tmp_path / "run")
    proc = tiny.train(*FAST, f"--method={method}", f"--output_dir={out}")
    assert "Label issues: label_issues.csv" in proc.stdout and "ROC-AUC" in proc.stdout
    rows = _read(os.path.join(out, label_issues.CSV_FILE))
    assert len(rows) == 100 and {r["weight_score"] for r in rows} == {""}  # no weights: empty
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert scores == pytest.approx([1 - float(r["given_probability"]) for r in rows], abs=2e-6)
    entry = json.load(open(os.path.join(out, "results.json")))["label_issues"]
    noisy = sum(r["given_label"] != r["true_label"] for r in rows)
    assert entry["noisy"] == noisy > 0 and 0.5 < entry["auc"] <= 1
    assert list(entry["auc_by_signal"]) == ["probability"]

    probs = np.load(os.path.join(out, label_issues.PRED_PROBS_FILE))
    given = np.load(os.path.join(out, label_issues.LABELS_FILE))
    assert probs.shape == (100, 10) and probs.dtype == np.float32 and given.dtype == np.int64
    for row in rows:  # row i of the arrays is the example of index i
        i = int(row["index"])
        assert given[i] == int(row["given_label"])
        assert probs[i, given[i]] == pytest.approx(float(row["given_probability"]), abs=2e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)

    for name in (label_issues.CSV_FILE, label_issues.PRED_PROBS_FILE):
        os.remove(os.path.join(out, name))
    proc = subprocess.run([sys.executable, "-m", "gdw_tf.audit", f"--output_dir={out}"],
                          cwd=tiny.ROOT, env=tiny.subprocess_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _read(os.path.join(out, label_issues.CSV_FILE)) == rows
    np.testing.assert_array_equal(np.load(os.path.join(out, label_issues.PRED_PROBS_FILE)), probs)


def _clusters(n_per_class=40, flip=24, seed=0):
    """Three separated Gaussian clusters in 4-d; `flip` labels moved to the next class."""
    rng = np.random.default_rng(seed)
    true = np.repeat(np.arange(3), n_per_class)
    x = (3.0 * np.eye(3, 4)[true] + 0.7 * rng.normal(size=(true.size, 4))).astype("float32")
    given = true.copy()
    flipped = rng.choice(true.size, flip, replace=False)
    given[flipped] = (true[flipped] + 1) % 3
    return x, given, true


def test_any_keras_classifier_gets_the_report_from_python(tmp_path):
    x, given, true = _clusters()
    # The documented example (docs/label_issues.md), on a plain Keras classifier.
    classifier = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"),
                                   keras.layers.Dense(3)])
    data = gdw_tf.data.with_index(tf.data.Dataset.from_tensor_slices(
        {"image": x, "label": given, "true_label": true}))  # true_label: optional
    model = gdw_tf.GDWModel(classifier, num_classes=3, method="base", record_examples=len(x))
    model.compile(keras.optimizers.Adam(1e-2), metrics=["accuracy"])
    model.fit(data.shuffle(len(x), seed=0).batch(20), epochs=40, verbose=0)
    issues, found = gdw_tf.write_label_issues(model, str(tmp_path / "report"),
                                              class_names=["a", "b", "c"])

    assert found.noisy == 24 and found.auc > 0.9, found
    rows = _read(tmp_path / "report" / label_issues.CSV_FILE)
    assert [int(r["index"]) for r in rows] == issues.index.tolist()
    np.testing.assert_array_equal(np.load(tmp_path / "report" / label_issues.LABELS_FILE), given)
    probs = np.load(tmp_path / "report" / label_issues.PRED_PROBS_FILE)
    np.testing.assert_allclose(probs, model.example_record.arrays().probabilities, rtol=1e-6)
    cleanlab_filter = pytest.importorskip("cleanlab.filter")
    flagged = cleanlab_filter.find_label_issues(given, probs)  # the arrays as cleanlab takes them
    assert flagged.shape == given.shape and (given != true)[flagged].mean() > 0.8


def test_without_a_record_the_function_says_how_to_keep_one(tmp_path):
    model = gdw_tf.GDWModel(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]), 3,
                            method="base")
    with pytest.raises(ValueError, match=r"record_examples=N"):
        gdw_tf.write_label_issues(model, str(tmp_path))


def test_with_index_numbers_single_examples_and_refuses_batches():
    x, given, _ = _clusters(n_per_class=2, flip=0)
    indexed = list(gdw_tf.data.with_index(tf.data.Dataset.from_tensor_slices((x, given))))
    assert [int(e["index"]) for e in indexed] == list(range(6))
    np.testing.assert_array_equal([int(e["label"]) for e in indexed], given)
    with pytest.raises(ValueError, match=r"add the index before \.batch"):
        gdw_tf.data.with_index(tf.data.Dataset.from_tensor_slices((x, given)).batch(2))
