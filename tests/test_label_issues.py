"""The per-example record, the label-issue report and `python -m gdw_tf.audit`."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import gdw_tf
from gdw_tf import example_record, label_issues
from gdw_tf.audit import audit
from gdw_tf.run_dir import UserError
from tests import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _indexed(steps, n):
    """tiny.batches with a stable `index` (batch k holds examples k*n .. k*n+n-1)."""
    for k, (train, meta) in enumerate(steps):
        train["index"] = np.arange(k * n, (k + 1) * n, dtype="int32")
    return steps


def test_record_is_the_mean_of_the_first_visits_then_a_moving_average():
    record = example_record.ExampleRecord(num_train=3, num_classes=2, decay=0.5)
    batch = {"index": tf.constant([2, 0]), "label": tf.constant([1, 0]),
             "true_label": tf.constant([0, 0])}
    for weight in (1.0, 0.0, 1.0):  # rates 1, 1/2, then 1 - decay = 1/2
        record.update(batch, tf.constant([weight, 2 * weight]),
                      tf.constant([[weight, 1 - weight]] * 2))
    rows = record.arrays()
    np.testing.assert_allclose(rows.target_weight, [1.5, 0.0, 0.75])  # (1+0)/2, then halfway to 1
    np.testing.assert_allclose(rows.probabilities[2], [0.75, 0.25])
    np.testing.assert_array_equal(rows.visits, [3, 0, 3])
    np.testing.assert_array_equal(rows.given_label[[0, 2]], [0, 1])
    np.testing.assert_array_equal(rows.true_label[[0, 2]], [0, 0])


def test_scores_rank_suggest_and_measure_detection():
    rows = example_record.RecordArrays(
        target_weight=np.array([1.0, 0.2, 0.6, 0.0, 5.0]), visits=np.array([4, 4, 4, 4, 0]),
        given_label=np.array([0, 1, 1, 0, 1]), true_label=np.array([0, 0, 1, 1, 1]),
        probabilities=np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.5, 0.5]]))
    issues = label_issues.label_issues(rows, "weight")
    np.testing.assert_array_equal(issues.index, [3, 1, 2, 0, 4])  # never visited: last, unranked
    np.testing.assert_allclose(issues.score, [1.0, 0.8, 0.4, 0.0, np.nan])
    np.testing.assert_array_equal(issues.suggested_label, [1, 0, 1, 0, -1])
    np.testing.assert_array_equal(issues.rank, [1, 2, 3, 4, 0])
    # from the data, visited or not
    np.testing.assert_array_equal(issues.true_label, [1, 0, 1, 0, 1])
    assert issues.num_ranked == 4
    found = label_issues.detection(issues)  # over the visited examples only
    assert found.auc == 1.0 and found.noisy == found.flagged == 2
    assert found.precision == found.recall == found.f1 == 1.0
    rows.visits[4], rows.target_weight[4] = 1, -1.0  # example 4 (clean, lowest weight) now first
    found = label_issues.detection(label_issues.label_issues(rows, "weight"))
    assert found.auc == pytest.approx(2 / 3) and found.noisy == found.flagged == 2
    assert found.precision == found.recall == found.f1 == 0.5
    rows.true_label[:] = -1  # unknown truth (clothing1m): no detection numbers
    assert label_issues.detection(label_issues.label_issues(rows)) is None


def test_every_method_keeps_a_record_and_only_those_with_learned_weights_have_the_weight_signal():
    names = label_issues.methods_with_weights()
    assert {"gdw", "mwnet", "l2rw", "insw", "soft_label", "gen_label"} <= set(names)
    assert not {"base", "focal", "coteaching", "glc"} & set(names)
    rows = example_record.RecordArrays(
        target_weight=np.ones(3), visits=np.array([1, 1, 1]), given_label=np.array([0, 1, 1]),
        true_label=np.array([0, 0, 1]),
        probabilities=np.array([[0.9, 0.1], [0.7, 0.3], [0.4, 0.6]]))
    issues = label_issues.label_issues(rows, with_weights=False)
    assert np.isnan(issues.weight_score).all() and issues.index.tolist() == [1, 2, 0]
    with pytest.raises(ValueError, match="signal='weight' needs a method with learned weights"):
        label_issues.label_issues(rows, "weight", with_weights=False)


def test_a_checkpoint_without_the_record_is_older_than_0_1_and_refused_in_one_line(tmp_path):
    """Run directories of gdw_tf 0.1 and later resume (docs/command_line.md); their
    checkpoints hold the per-example record, one without it is refused, not half-restored."""
    import keras

    from gdw_tf import checkpoints

    def compiled(**options):
        model = tiny.gdw_model("gdw", dtype="float32", **options)
        model.compile(keras.optimizers.SGD(0.1), metrics=["accuracy"])
        return model

    checkpoints.ResumableCheckpoint(str(tmp_path), compiled(), steps_per_epoch=2)._save(1, 0, {})
    latest = checkpoints.latest_intact_checkpoint(str(tmp_path))
    resumed = checkpoints.ResumableCheckpoint(str(tmp_path), compiled(record_examples=6),
                                              steps_per_epoch=2)
    with pytest.raises(UserError, match="older than 0.1") as error:
        resumed.restore(latest)
    assert latest in str(error.value) and "\n" not in str(error.value)


def _clusters(n_per_class, flip, seed):
    """Three separated Gaussian clusters in 4-d; `flip` labels moved to the next class."""
    rng = np.random.default_rng(seed)
    centres = 3.0 * np.eye(tiny.NUM_CLASSES, tiny.NUM_FEATURES)
    true = np.repeat(np.arange(tiny.NUM_CLASSES), n_per_class).astype("int32")
    x = (centres[true] + 0.7 * rng.normal(size=(true.size, tiny.NUM_FEATURES))).astype("float32")
    given = true.copy()
    flipped = rng.choice(true.size, flip, replace=False)
    given[flipped] = (true[flipped] + 1) % tiny.NUM_CLASSES
    return x, given, true


def test_scores_rank_planted_flipped_labels_above_clean_ones():
    x, given, true = _clusters(40, flip=24, seed=0)
    xm, ym, _ = _clusters(10, flip=0, seed=1)
    train = tf.data.Dataset.from_tensor_slices(
        {"image": x, "label": given, "true_label": true,
         "index": np.arange(x.shape[0], dtype="int32")}).shuffle(120, seed=0).batch(30)
    meta = tf.data.Dataset.from_tensor_slices((xm, ym)).shuffle(30, seed=0).repeat().batch(30)
    model = tiny.gdw_model("l2rw", dtype="float32", record_examples=x.shape[0], record_decay=0.9)
    model.fit(gdw_tf.data.with_meta(train, meta), epochs=30, verbose=0, shuffle=False)
    issues = label_issues.label_issues(model.example_record.arrays())
    np.testing.assert_array_equal(issues.given_label, given[issues.index])
    found = label_issues.detection(issues)
    assert found.noisy == 24 and found.auc > 0.9, found
    top = issues.given_label[:24] != issues.true_label[:24]
    assert (issues.suggested_label[:24][top] == issues.true_label[:24][top]).mean() > 0.8


def test_every_step_updates_the_record_and_keras_save_and_load_keep_it(tmp_path):
    """meta_interval=2: step 0 is a meta step, step 1 is not; both write their batch."""
    import keras

    steps = _indexed(tiny.batches(2, n=6, m=5, seed=3, dtype="float32"), n=6)
    model = tiny.gdw_model("mwnet", dtype="float32", record_examples=12, record_decay=0.7,
                           meta_interval=2)
    model.fit(tiny.paired_dataset(steps), epochs=1, verbose=0, shuffle=False)
    model.save(str(tmp_path / "m.keras"))
    loaded = keras.models.load_model(str(tmp_path / "m.keras"))
    assert loaded.example_record.decay == 0.7
    np.testing.assert_array_equal(loaded.example_record.table.numpy(),
                                  model.example_record.table.numpy())
    assert model.example_record.arrays().visits.tolist() == [1] * 12  # batch 2: no meta step


def _record_after_fit(strategy, method, steps, initial):
    with strategy.scope():
        model = tiny.gdw_model(method, dtype="float32", record_examples=24, record_decay=0.5)
        for var, value in zip(model.backbone.weights + model.method.weights, initial):
            var.assign(value)
    model.fit(tiny.paired_dataset(steps), epochs=2, verbose=0, shuffle=False)
    return model.example_record.arrays()


@pytest.mark.slow  # in process, but among the slowest (docs/development.md)
@pytest.mark.parametrize("method", ["gdw", "base"])  # with learned weights and without
def test_two_replicas_keep_the_record_of_one(mirrored, method):
    steps = _indexed(tiny.batches(3, n=8, m=6, seed=11, dtype="float32"), n=8)
    reference = tiny.gdw_model(method, dtype="float32")
    initial = [v.numpy() for v in reference.backbone.weights + reference.method.weights]
    one = _record_after_fit(tf.distribute.OneDeviceStrategy("/cpu:0"), method, steps, initial)
    two = _record_after_fit(mirrored, method, steps, initial)
    np.testing.assert_array_equal(one.visits, np.full(24, 2))
    for name in ("visits", "given_label", "true_label"):
        np.testing.assert_array_equal(getattr(one, name), getattr(two, name))
    # GDW's second stage scales g / ||g||_1 by outer_lr = 100, so float32 sums taken in
    # another order (one device vs two; it depends on the thread split) move a weight by up
    # to ~1e-4 (seen once in a full idle run: 2.4e-4); a wrong reduction moves it by O(1).
    np.testing.assert_allclose(one.target_weight, two.target_weight, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(one.probabilities, two.probabilities, rtol=1e-3, atol=1e-3)
    assert np.ptp(one.probabilities) > 0 and (method == "base" or np.ptp(one.target_weight) > 0)


# ------------------------------------------------- the trainer and the audit CLI
FAST = ["--dataset=digits", "--verbose=0", "--hidden_units=16", "--train_per_class=10"]


def _run(module, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_train_writes_the_report_a_resumed_run_keeps_the_record_and_audit_rewrites_it(tmp_path):
    out = str(tmp_path / "run")
    first = _run("gdw_tf.train", *FAST, "--epochs=1", f"--output_dir={out}")
    assert first.returncode == 0, first.stderr[-2000:]
    # a larger --epochs resumes
    resumed = _run("gdw_tf.train", *FAST, "--epochs=2", f"--output_dir={out}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Resuming from" in resumed.stdout and "at epoch 1 of 2" in resumed.stdout
    assert "Label issues: label_issues.csv" in resumed.stdout and "ROC-AUC" in resumed.stdout
    rows = _read(os.path.join(out, "label_issues.csv"))
    assert list(rows[0]) == list(label_issues.CSV_COLUMNS)
    assert len(rows) == 100 and sorted(int(r["index"]) for r in rows) == list(range(100))
    assert [int(r["rank"]) for r in rows] == list(range(1, 101))
    scores = [float(r["score"]) for r in rows]
    weight_scores = [float(r["weight_score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert max(weight_scores) == 1.0 and min(weight_scores) == 0.0
    with open(os.path.join(out, "results.json")) as f:
        entry = json.load(f)["label_issues"]
    assert entry["signal"] == "probability"
    assert scores == pytest.approx([1 - float(r["given_probability"]) for r in rows], abs=2e-6)
    noisy = sum(r["given_label"] != r["true_label"] for r in rows)
    assert entry["noisy"] == noisy > 0 and 0 <= entry["auc"] <= 1
    assert os.path.getsize(os.path.join(out, "label_issues.png")) > 0

    # 100 examples, one batch of 100 per epoch, the second run resumed after the first epoch:
    # two visits each only if the checkpoint kept the record.
    from gdw_tf.audit import _restored_model
    from gdw_tf.config import RunConfig
    from gdw_tf.run import build_data
    with open(os.path.join(out, "flags.json")) as f:
        s = json.load(f)
    config = RunConfig.from_flag_values(s)
    model = _restored_model(config, build_data(config.data),
                            tf.train.latest_checkpoint(f"{out}/checkpoints"))
    np.testing.assert_array_equal(model.example_record.arrays().visits, np.full(100, 2))

    os.remove(os.path.join(out, "label_issues.csv"))
    os.remove(os.path.join(out, "label_issues.png"))
    proc = _run("gdw_tf.audit", f"--output_dir={out}", "--top=8")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _read(os.path.join(out, "label_issues.csv")) == rows
    assert os.path.getsize(os.path.join(out, "label_issues.png")) > 0

    # A checkpoint without the record (older than 0.1, or other flags): a one-line error.
    old = tmp_path / "old"
    old.mkdir()
    (old / "flags.json").write_text(json.dumps(s))
    bundle = build_data(config.data)
    without = gdw_tf.GDWModel(gdw_tf.models.build(s["model"], 10, input_shape=bundle.image_shape),
                              10, method="gdw", hidden_units=16)
    tf.train.Checkpoint(model=without).save(str(old / "checkpoints" / "ckpt"))
    with pytest.raises(UserError, match="holds no per-example record") as error:
        audit(str(old))
    assert "\n" not in str(error.value)


def _fake_run(tmp_path, **flags):
    out = tmp_path / "run"
    out.mkdir()
    settings = {"method": "gdw", "dataset": "digits", "data_dir": None, **flags}
    (out / "flags.json").write_text(json.dumps(settings))
    return str(out)


@pytest.mark.parametrize("case, fragment", [
    ("no_dir", "no such directory"),
    ("no_flags", "no flags.json"),
    ("top", "--top must be a positive integer, got 0"),
    ("export_digits", "relabel files are for --dataset=folder runs"),
    ("export_inside", "lies inside the dataset"),
    ("no_checkpoint", "no checkpoint under"),
])
def test_audit_bad_inputs_are_one_line_errors(tmp_path, case, fragment):
    kwargs = {}
    if case == "no_dir":
        out = str(tmp_path / "missing")
    elif case == "no_flags":
        out = str(tmp_path)
    elif case == "export_inside":
        out = _fake_run(tmp_path, dataset="folder", data_dir=str(tmp_path / "data"))
        kwargs["export"] = str(tmp_path / "data" / "relabelled")
    else:
        out = _fake_run(tmp_path)
        kwargs = {"top": {"top": 0}, "export_digits": {"export": str(tmp_path / "x")}}.get(case, {})
    with pytest.raises(UserError) as error:
        audit(out, **kwargs)
    assert fragment in str(error.value), str(error.value)
    assert "\n" not in str(error.value)
    assert not os.path.exists(tmp_path / "data" / "relabelled")


@pytest.mark.slow
def test_audit_cli_error_exit_status_and_one_line(tmp_path):
    proc = _run("gdw_tf.audit", f"--output_dir={_fake_run(tmp_path, method='focal')}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("gdw_tf.audit: error: ")]
    assert len(lines) == 1 and "no checkpoint under" in lines[0], proc.stderr[-2000:]


@pytest.mark.slow
def test_folder_run_lists_image_paths_and_audit_exports_a_relabel_csv(tmp_path):
    from tests.fixtures import write_image_folder

    data = tmp_path / "images"
    write_image_folder(str(data), ["cat", "dog", "owl"], {"train": [10, 10, 10], "test": [2, 2, 2]})
    before = sorted(p for p in data.rglob("*"))
    out = str(tmp_path / "run")
    proc = _run("gdw_tf.train", "--dataset=folder", f"--data_dir={data}", "--model=mlp",
                "--num_meta=6", "--batch_size=8", "--epochs=1", "--hidden_units=16",
                "--verbose=0", f"--output_dir={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = _read(os.path.join(out, "label_issues.csv"))
    assert len(rows) == 24
    for row in rows:  # the path is the training image, in its given class's folder unless flipped
        assert os.path.exists(row["path"]) and row["path"].startswith(str(data / "train"))
        folder_class = ["cat", "dog", "owl"].index(os.path.basename(os.path.dirname(row["path"])))
        assert int(row["true_label"]) == folder_class

    export = tmp_path / "relabel"
    proc = _run("gdw_tf.audit", f"--output_dir={out}", "--top=5", f"--export={export}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    relabel = _read(export / "relabel.csv")
    assert [str(data / "train" / r["path"]) for r in relabel] == [r["path"] for r in rows[:5]]
    assert {r["given_label"] for r in relabel} <= {"cat", "dog", "owl"}
    assert sorted(p for p in data.rglob("*")) == before  # the dataset is untouched


def test_the_probability_signal_ranks_by_the_given_labels_probability_and_keeps_both(tmp_path):
    rows = example_record.RecordArrays(
        target_weight=np.array([0.1, 0.9, 0.5]), visits=np.array([2, 2, 2]),
        given_label=np.array([0, 1, 1]), true_label=np.array([0, 0, 1]),
        probabilities=np.array([[0.9, 0.1], [0.7, 0.3], [0.4, 0.6]]))
    by_weight = label_issues.label_issues(rows, "weight")
    by_probability = label_issues.label_issues(rows)  # the report's signal
    np.testing.assert_array_equal(by_weight.index, [0, 2, 1])  # lowest weight first
    np.testing.assert_array_equal(by_probability.index, [1, 2, 0])  # lowest p(given) first
    np.testing.assert_allclose(by_probability.score, [0.7, 0.4, 0.1])
    np.testing.assert_allclose(by_probability.weight_score, [0.0, 0.5, 1.0])  # both signals kept
    assert label_issues.detection(by_probability).auc == 1.0
    label_issues.write_csv(str(tmp_path / "x.csv"), by_probability)
    written = _read(tmp_path / "x.csv")
    assert [r["weight_score"] for r in written] == ["0.000000", "0.500000", "1.000000"]
    with pytest.raises(ValueError, match="unknown signal='loss'"):
        label_issues.label_issues(rows, "loss")


@pytest.mark.slow
def test_a_run_whose_weights_fail_the_truth_free_check_warns_and_its_report_still_holds(tmp_path):
    """MW-Net on the default data inverts its weights (noisy labels weighted above clean)."""
    out = str(tmp_path / "run")
    proc = _run("gdw_tf.train", "--method=mwnet", "--hidden_units=16", "--epochs=8",
                "--verbose=0", f"--output_dir={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    warnings = [line for line in proc.stderr.splitlines()
                if line.startswith("gdw_tf.train: warning:")]
    assert len(warnings) == 1 and "not singling out noisy labels" in warnings[0]
    with open(os.path.join(out, "results.json")) as f:
        res = json.load(f)
    assert res["weight_check"]["trusted"] is False and res["target_weight_auc"] < 0.6
    assert res["label_issues"]["signal"] == "probability" and res["label_issues"]["auc"] > 0.9
    assert "do not rank by them" in warnings[0]
    rows = _read(os.path.join(out, "label_issues.csv"))
    scores = [float(r["score"]) for r in rows]
    assert scores == pytest.approx([1 - float(r["given_probability"]) for r in rows], abs=2e-6)
    weight_ranked = label_issues.detection_of_scores(
        [float(r["weight_score"]) for r in rows],
        [r["given_label"] != r["true_label"] for r in rows])
    assert weight_ranked.auc < 0.5  # what the weights alone would have ranked: worse than random
    assert res["label_issues"]["auc_by_signal"] == pytest.approx(
        {"weight": weight_ranked.auc, "probability": res["label_issues"]["auc"]})
