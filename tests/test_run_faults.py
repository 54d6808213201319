"""Nothing a run saved is lost: damaged checkpoints, a lost state file, a full disk,
interrupted writes, and the checks that must come before anything is written."""
import contextlib
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from gdw_tf import checkpoints, files
from tests.tiny import ROOT, subprocess_env, train, user_error_line

FAST = ["--dataset=digits", "--verbose=0", "--hidden_units=16", "--train_per_class=20"]


def _results(out):
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    """A finished 2-epoch run: checkpoints/ckpt-1 (epoch 1) and ckpt-2 (epoch 2)."""
    out = str(tmp_path_factory.mktemp("faults") / "run")
    train(*FAST, "--epochs=2", f"--output_dir={out}")
    assert sorted(os.listdir(os.path.join(out, "checkpoints"))) == [
        "checkpoint", "ckpt-1.data-00000-of-00001", "ckpt-1.index",
        "ckpt-2.data-00000-of-00001", "ckpt-2.index"]
    return out


def _copy(run, tmp_path):
    out = str(tmp_path / "run")
    shutil.copytree(run, out)
    return out


def _damage(ckpt_dir, how):
    data, index = (os.path.join(ckpt_dir, f"ckpt-2.{s}") for s in ("data-00000-of-00001", "index"))
    if how == "truncated_data":
        os.truncate(data, os.path.getsize(data) // 2)
    elif how == "no_data":
        os.remove(data)
    elif how == "no_index":
        os.remove(index)
    elif how == "empty_index":
        open(index, "w").close()
    elif how == "flipped_data":
        raw = bytearray(open(data, "rb").read())
        raw[1000:1064] = bytes(b ^ 0xFF for b in raw[1000:1064])
        open(data, "wb").write(bytes(raw))


@pytest.mark.slow  # two_checkpoints trains
@pytest.mark.parametrize("how", ["truncated_data", "no_data", "no_index", "empty_index",
                                 "flipped_data"])
def test_a_damaged_newest_checkpoint_is_moved_aside_and_the_previous_one_taken(
        two_checkpoints, tmp_path, how):
    out = _copy(two_checkpoints, tmp_path)
    ckpt_dir = os.path.join(out, "checkpoints")
    _damage(ckpt_dir, how)
    before = set(os.listdir(ckpt_dir))
    assert checkpoints.checkpoint_damage(os.path.join(ckpt_dir, "ckpt-2")) is not None
    assert checkpoints.latest_intact_checkpoint(out) == os.path.join(ckpt_dir, "ckpt-1")
    damaged = sorted(os.listdir(os.path.join(ckpt_dir, "damaged")))
    assert damaged and all(name.startswith("ckpt-2.") for name in damaged)
    kept = set(os.listdir(ckpt_dir)) - {"damaged"}
    assert kept | set(damaged) == before  # moved, never deleted
    assert not any(name.startswith("ckpt-2.") for name in kept)
    import tensorflow as tf
    assert tf.train.latest_checkpoint(ckpt_dir) == os.path.join(ckpt_dir, "ckpt-1")


@pytest.mark.slow
def test_a_run_resumes_from_the_checkpoint_before_a_damaged_one(two_checkpoints, tmp_path):
    out = _copy(two_checkpoints, tmp_path)
    first = _results(out)
    _damage(os.path.join(out, "checkpoints"), "truncated_data")
    proc = train(*FAST, "--epochs=3", f"--output_dir={out}")
    warnings = [line for line in proc.stderr.splitlines() if "is damaged" in line]
    assert len(warnings) == 1 and "ckpt-2.data-00000-of-00001, ckpt-2.index" in warnings[0]
    assert "resuming from ckpt-1" in warnings[0]
    assert "Resuming from" in proc.stdout and "at epoch 1 of 3" in proc.stdout
    res = _results(out)
    assert res["epochs_completed"] == 3
    assert res["history"]["loss"][0] == first["history"]["loss"][0]
    assert sorted(os.listdir(os.path.join(out, "checkpoints", "damaged"))) == [
        "ckpt-2.data-00000-of-00001", "ckpt-2.index"]
    indexes = [n for n in os.listdir(os.path.join(out, "checkpoints")) if n.endswith(".index")]
    assert sorted(indexes) == ["ckpt-2.index", "ckpt-3.index"]  # max_to_keep=2 still holds


@pytest.mark.slow
def test_when_no_checkpoint_restores_the_run_stops_and_moves_nothing(two_checkpoints, tmp_path):
    out = _copy(two_checkpoints, tmp_path)
    ckpt_dir = os.path.join(out, "checkpoints")
    for number in (1, 2):
        os.truncate(os.path.join(ckpt_dir, f"ckpt-{number}.data-00000-of-00001"), 10)
    listing = sorted(os.listdir(ckpt_dir))
    line = user_error_line(train(*FAST, "--epochs=3", f"--output_dir={out}", check=False))
    assert f"none of the 2 checkpoint(s) in {ckpt_dir} restores" in line
    assert sorted(os.listdir(ckpt_dir)) == listing
    assert _results(out)["epochs_completed"] == 2  # nothing was rewritten


@pytest.mark.slow  # two_checkpoints trains
@pytest.mark.parametrize("state", ["missing", "garbled", "empty"])
def test_checkpoints_without_a_readable_state_file_are_found_from_their_files(
        two_checkpoints, tmp_path, state):
    out = _copy(two_checkpoints, tmp_path)
    path = os.path.join(out, "checkpoints", "checkpoint")
    if state == "missing":
        os.remove(path)
    else:
        open(path, "w").write("" if state == "empty" else "model_checkpoint_path: {{{\n")
    assert checkpoints.latest_intact_checkpoint(out) == os.path.join(out, "checkpoints", "ckpt-2")
    import tensorflow as tf
    assert tf.train.get_checkpoint_state(os.path.dirname(path)).all_model_checkpoint_paths == [
        os.path.join(out, "checkpoints", f"ckpt-{n}") for n in (1, 2)]


@pytest.mark.slow
def test_a_lost_state_file_neither_restarts_nor_skips_the_flag_check(two_checkpoints, tmp_path):
    out = _copy(two_checkpoints, tmp_path)
    os.remove(os.path.join(out, "checkpoints", "checkpoint"))
    saved = open(os.path.join(out, "checkpoints", "ckpt-2.data-00000-of-00001"), "rb").read()
    line = user_error_line(train(*FAST, "--epochs=3", "--lr=0.5", f"--output_dir={out}",
                                 check=False))
    assert "holds a run made with other flags (--lr=0.05 -> 0.5)" in line
    data_file = os.path.join(out, "checkpoints", "ckpt-2.data-00000-of-00001")
    assert open(data_file, "rb").read() == saved
    first = _results(out)
    proc = train(*FAST, "--epochs=3", f"--output_dir={out}")
    assert "at epoch 2 of 3" in proc.stdout
    res = _results(out)
    assert res["history"]["loss"][:2] == first["history"]["loss"]
    assert res["wall_time_s"] > first["wall_time_s"]


@contextlib.contextmanager
def _small_disk(size_bytes, tmp_path):
    """A tmpfs of `size_bytes` mounted under tmp_path (root only); skips where mounting fails."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _bytes_used(folder):
    """What `folder` takes on a tmpfs: whole 4 KiB pages per file."""
    return 4096 * sum(-(-os.path.getsize(os.path.join(d, f)) // 4096)
                      for d, _, fs in os.walk(folder) for f in fs)


@pytest.mark.slow
def test_a_full_disk_mid_training_is_one_line_and_the_last_checkpoint_resumes(
        two_checkpoints, tmp_path):
    used = _bytes_used(two_checkpoints)
    with _small_disk(used + 96 * 1024, tmp_path) as disk:  # no room for a third checkpoint
        out = str(disk / "run")
        shutil.copytree(two_checkpoints, out)
        line = user_error_line(train(*FAST, "--epochs=4", f"--output_dir={out}", check=False))
        assert "cannot write" in line and "No space left on device" in line, line
        assert "is intact" in line and "re-run the same command" in line
        assert not [n for n in os.listdir(os.path.join(out, "checkpoints")) if "_temp" in n]
        assert not [n for d, _, fs in os.walk(out) for n in fs if n.endswith(".tmp")]
        kept = checkpoints.latest_intact_checkpoint(out)
        assert kept is not None and checkpoints.checkpoint_damage(kept) is None
        shutil.copytree(out, str(tmp_path / "rescued"))
    proc = train(*FAST, "--epochs=4", f"--output_dir={tmp_path / 'rescued'}")
    assert "Resuming from" in proc.stdout
    assert _results(str(tmp_path / "rescued"))["epochs_completed"] == 4


@pytest.mark.slow
def test_a_full_disk_while_a_finished_run_rewrites_its_outputs_is_one_line(two_checkpoints,
                                                                          tmp_path):
    with _small_disk(_bytes_used(two_checkpoints), tmp_path) as disk:  # full once copied
        out = str(disk / "run")
        shutil.copytree(two_checkpoints, out)
        before = {name: open(os.path.join(out, name), "rb").read()
                  for name in ("results.json", "label_issues.csv", "flags.json")}
        line = user_error_line(train(*FAST, "--epochs=2", f"--output_dir={out}", check=False))
        assert f"cannot write {out}/" in line and "No space left on device" in line, line
        assert "every file written before is intact (checkpoints in" in line
        assert not [n for d, _, fs in os.walk(out) for n in fs if n.endswith(".tmp")]
        for name, content in before.items():  # each output is the old file or a whole new one
            assert open(os.path.join(out, name), "rb").read() == content, name


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "label_issues.csv"
    path.write_text("old\n")
    with pytest.raises(RuntimeError):
        with files.atomic_open(str(path)) as f:
            f.write("new, half")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["label_issues.csv"]

    def full(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(files.WriteError, match=f"cannot write {path}: No space left on device"):
        with files.atomic_open(str(path)) as f:
            f.write("new")
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["label_issues.csv"]


@pytest.mark.slow
def test_no_output_of_a_run_is_written_in_place(tmp_path, monkeypatch):
    """Every file a run writes outside checkpoints/ and tensorboard/ (data_summary.json,
    flags.json, results.json, history.json, log.csv, label_issues.csv, the PNGs) is
    written to a temporary file and renamed: opening a final name for writing fails here."""
    import builtins

    from gdw_tf import run
    from gdw_tf.config import RunConfig
    from gdw_tf.flags import FLAGS

    out = str(tmp_path / "run")
    real_open = builtins.open

    def guarded_open(path, mode="r", *args, **kwargs):
        if isinstance(path, (str, os.PathLike)) and os.path.abspath(path).startswith(out) \
                and any(m in mode for m in "wax+") and not os.path.basename(path) == ".lock":
            raise AssertionError(f"{path} opened for writing in place")
        return real_open(path, mode, *args, **kwargs)
    monkeypatch.setattr(builtins, "open", guarded_open)
    FLAGS.unparse_flags()
    FLAGS(["gdw_tf.train", *FAST, "--epochs=1", f"--output_dir={out}"])
    try:
        run.run(RunConfig.from_flags(FLAGS))
    finally:
        FLAGS.unparse_flags()
    on_disk = {n for d, _, fs in os.walk(out) for n in fs
               if "checkpoints" not in d and "tensorboard" not in d}
    assert {"data_summary.json", "flags.json", "results.json", "history.json", "log.csv",
            "label_issues.csv", "label_issues.png", "accuracy.png"} <= on_disk
    assert not [n for n in on_disk if n.endswith(".tmp")]


def test_spreadsheet_formula_cells_are_escaped_in_the_csv_reports(tmp_path):
    from gdw_tf import example_record, label_issues
    from gdw_tf.audit import write_relabel_csv

    issues = label_issues.label_issues(example_record.RecordArrays(
        target_weight=np.array([0.1, 0.9]), visits=np.array([1, 1]), given_label=np.array([0, 1]),
        true_label=np.array([1, 1]), probabilities=np.array([[0.2, 0.8], [0.1, 0.9]])))
    names = ["=HYPERLINK(\"http://x\")", "-1+2"]
    paths = ["+cmd|' /C calc'!A0", "@SUM(A1)"]
    write_relabel_csv(str(tmp_path / "relabel.csv"), issues, paths, names, top=2)
    label_issues.write_csv(str(tmp_path / "issues.csv"), issues, paths)
    relabel = list(csv.DictReader(open(tmp_path / "relabel.csv")))
    cells = [r[k] for r in relabel for k in ("path", "given_label", "suggested_label")]
    cells += [r["path"] for r in csv.DictReader(open(tmp_path / "issues.csv"))]
    assert cells and all(c.startswith("'") for c in cells), cells
    assert {c[1:] for c in cells} == set(names) | set(paths)
    assert files.spreadsheet_safe("cat") == "cat" and files.spreadsheet_safe("/a/=b") == "/a/=b"


@pytest.mark.slow
def test_option_errors_come_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    line = user_error_line(train(*FAST, "--epochs=1", "--method_option=virtual_scope=999",
                                 f"--output_dir={out}", check=False))
    assert ("--method_option=virtual_scope=999 with --model=small_cnn: virtual_scope=999: the "
            "backbone has only") in line, line
    assert not out.exists()  # the config is checked as it is made: before the run's directory


@pytest.mark.parametrize("num_meta", [100, None])  # explicit, and the dataset's default (100)
def test_a_meta_batch_larger_than_the_meta_set_is_refused(num_meta):
    import gdw_tf

    with pytest.raises(ValueError, match="meta_batch_size=100000 exceeds the 100 meta examples"):
        gdw_tf.data.build("digits", num_meta=num_meta, meta_batch_size=100000)


def _run(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_audit_errors_name_the_file_or_flag_and_rewrite_nothing(two_checkpoints, tmp_path):
    out = _copy(two_checkpoints, tmp_path)
    report = open(os.path.join(out, "label_issues.csv")).read()
    export = tmp_path / "exported"
    export.write_text("a file, not a directory")
    flags = json.load(open(os.path.join(out, "flags.json")))
    json.dump({**flags, "dataset": "folder", "data_dir": str(tmp_path / "data")},
              open(os.path.join(out, "flags.json"), "w"))
    proc = _run("gdw_tf.audit", f"--output_dir={out}", f"--export={export}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"--export={export} is a file" in proc.stderr
    assert open(os.path.join(out, "label_issues.csv")).read() == report

    open(os.path.join(out, "flags.json"), "w").write('{"method": "gdw",\n  oops}')
    proc = _run("gdw_tf.audit", f"--output_dir={out}")
    lines = [line for line in proc.stderr.splitlines() if line.startswith("gdw_tf.audit: error: ")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(lines) == 1
    assert f"{out}/flags.json:2: not valid JSON" in lines[0]
    assert open(os.path.join(out, "label_issues.csv")).read() == report

    json.dump({**flags, "method_option": ["nope=1"]}, open(os.path.join(out, "flags.json"), "w"))
    proc = _run("gdw_tf.audit", f"--output_dir={out}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert (f"{out}/flags.json: --method_option=nope=...: method 'gdw' has no option nope"
            in proc.stderr), proc.stderr[-2000:]


@pytest.mark.slow
def test_a_corrupt_flags_json_on_resume_is_one_line(two_checkpoints, tmp_path):
    out = _copy(two_checkpoints, tmp_path)
    open(os.path.join(out, "flags.json"), "w").write("{")
    line = user_error_line(train(*FAST, "--epochs=3", f"--output_dir={out}", check=False))
    assert f"{out}/flags.json:1: not valid JSON" in line


def test_a_truncated_cache_entry_is_rebuilt_with_a_warning_naming_it(tmp_path, caplog):
    from gdw_tf.data.sources.base import cache_path, cached_arrays

    calls = []

    def compute():
        calls.append(1)
        return {"x": np.arange(1000)}
    cached_arrays(str(tmp_path), "folder", {"k": 1}, compute)
    path = cache_path(str(tmp_path), "folder", {"k": 1})
    os.truncate(path, os.path.getsize(path) // 2)
    again = cached_arrays(str(tmp_path), "folder", {"k": 1}, compute)
    np.testing.assert_array_equal(again["x"], np.arange(1000))
    assert len(calls) == 2 and path in caplog.text and "rebuilding it" in caplog.text
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(path)]  # no temporary file left


def test_a_checkpoint_of_a_release_that_logged_fewer_metrics_still_resumes(tmp_path):
    """The metric accumulators are saved by name and restored leniently: a model that logs
    one more metric resumes a checkpoint without it (the others come back), and log.csv
    leaves the new metric's earlier cells empty."""
    import keras

    from tests import tiny

    def model(*metrics):
        m = tiny.gdw_model("gdw")
        m.compile(keras.optimizers.SGD(0.1), metrics=["accuracy", *metrics])
        return m

    old = model()
    old.fit(tiny.paired_dataset(tiny.batches(2)), epochs=1, verbose=0)
    saver = checkpoints.ResumableCheckpoint(str(tmp_path), old, steps_per_epoch=2)
    saver._save(0, 1, {})
    accuracy_total = [v for v in old.metrics_variables if v.path == "accuracy/total"][0].numpy()
    new = model(keras.metrics.MeanSquaredError(name="mse"))
    resumed = checkpoints.ResumableCheckpoint(str(tmp_path), new, steps_per_epoch=2)
    assert resumed.restore(checkpoints.latest_intact_checkpoint(str(tmp_path))) == (0, 1)
    restored = {v.path: v.numpy() for v in new.metrics_variables}
    assert restored["accuracy/total"] == accuracy_total != 0

    from gdw_tf.history_files import write_log_csv
    write_log_csv(str(tmp_path / "log.csv"), {"loss": [1.0, 2.0], "new_metric": [0.5]})
    assert (tmp_path / "log.csv").read_text().splitlines() == [
        "epoch,loss,new_metric", "0,1.0,", "1,2.0,0.5"]
