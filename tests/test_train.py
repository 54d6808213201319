"""`python -m gdw_tf.train` end to end, as users run it (real subprocesses)."""
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from gdw_tf.config import RunConfig
from gdw_tf.defaults import DATASET_DEFAULTS
from gdw_tf.diagnostics import binned_auc
from tests.fixtures import (
    fake_resnet18_state_dict,
    write_clothing1m_release,
    write_image_folder,
    write_torch_zip,
)
from tests.tiny import (
    ROOT,
    checkpoint_tensors,
    results,
    subprocess_env,
    train,
    uninterrupted_and_killed_at_second_checkpoint,
    user_error_line,
)

FAST = ["--dataset=digits", "--verbose=0", "--hidden_units=16"]


@pytest.mark.slow
def test_default_command_trains_gdw_and_writes_every_report(tmp_path):
    out = str(tmp_path / "run")
    proc = train("--epochs=2", f"--output_dir={out}", "--verbose=2")
    assert "Test accuracy: final" in proc.stdout
    lines = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split("  ")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    assert "test acc" in lines[-1] and "weights clean/noisy" in lines[-1] and len(lines[-1]) < 130
    assert "Sharding callback" not in proc.stderr and "shuffle=True" not in proc.stderr
    res = results(out)
    assert res["flags"]["method"] == "gdw" and res["flags"]["noise_rate"] == 0.4
    assert res["epochs_completed"] == 2 and len(res["history"]["val_accuracy"]) == 2
    assert res["final_accuracy"] == pytest.approx(100 * np.mean(res["history"]["val_accuracy"]))
    for key in ("meta_loss", "target_weight_clean", "target_weight_noisy",
                "increased_truetarget_noisy"):
        assert key in res["history"], key
    last = res["target_weight_histograms"]["by_epoch"]["1"]
    assert last["noisy"]
    assert res["target_weight_auc"] == pytest.approx(binned_auc(last["clean"], last["noisy"]))
    for name in ("log.csv", "history.json", "data_summary.json", "figures/accuracy.png",
                 "figures/target_weights.png", "figures/increased_weights.png"):
        assert os.path.exists(os.path.join(out, name)), name
    assert os.listdir(os.path.join(out, "tensorboard"))
    summary = json.load(open(os.path.join(out, "data_summary.json")))
    assert summary["num_classes"] == 10


def with_dataset_defaults(values):
    """flags.json's values of a run with flag `values` (the others at their defaults)."""
    return RunConfig.from_flag_values(values).to_flags()


def test_unset_flags_take_their_dataset_defaults_and_set_ones_win():
    unset = {"model": None, "lr": None, "epochs": None, "noise_type": None, "noise_rate": None}
    digits = with_dataset_defaults({"dataset": "digits", **unset})
    assert (digits["model"], digits["lr"], digits["epochs"]) == ("small_cnn", 0.05, 150)
    assert (digits["noise_type"], digits["noise_rate"]) == ("uniform", 0.4)
    assert with_dataset_defaults({"dataset": "cifar10", **unset})["epochs"] == 80
    chosen = with_dataset_defaults({**unset, "dataset": "digits", "model": "mlp", "lr": 0.2,
                                    "epochs": 3})
    assert (chosen["model"], chosen["lr"], chosen["epochs"]) == ("mlp", 0.2, 3)
    assert set(DATASET_DEFAULTS) == {"digits", "cifar10", "cifar100", "folder", "clothing1m"}


@pytest.mark.slow
@pytest.mark.parametrize("flag, fragment", [
    ("--noise_rate=1.5", "--noise_rate must be in [0, 1]"),
    ("--imbalance_factor=0", "--imbalance_factor must be in (0, 1]"),
    ("--strategy=bogus", "strategy"),
    ("--method=gwd", "unknown method 'gwd'"),
])
def test_bad_flags_fail_with_the_flag_named(tmp_path, flag, fragment):
    proc = train(flag, f"--output_dir={tmp_path}", "--epochs=1", check=False, timeout=120)
    assert proc.returncode == 2
    assert fragment in proc.stderr and "Traceback" not in proc.stderr
    assert not os.path.exists(os.path.join(tmp_path, "checkpoints"))


def _corrupt_folder(root):
    write_image_folder(root, ["a", "b"], {"train": [3, 3], "test": [1, 1]})
    path = os.path.join(root, "train", "a", "broken.jpg")
    open(path, "wb").write(b"\xff\xd8 not a jpeg")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("case", ["model", "data_dir", "batch", "jpeg"])
def test_user_errors_are_one_line_with_exit_status_2(tmp_path, case):
    flags = {"model": (["--model=resnet99"], "unknown model 'resnet99'"),
             "data_dir": (["--dataset=folder", f"--data_dir={tmp_path / 'none'}"],
                          f"data_dir={tmp_path / 'none'}: image-folder root does not exist"),
             "batch": (["--batch_size=5000"], "batch_size=5000 exceeds the 1252 training examples"),
             "jpeg": (["--dataset=folder", f"--data_dir={tmp_path / 'imgs'}",
                       f"--cache_dir={tmp_path / 'cache'}"], "cannot decode image file"),
             }
    if case == "jpeg":
        corrupt = _corrupt_folder(str(tmp_path / "imgs"))
        flags["jpeg"] = (flags["jpeg"][0], f"cannot decode image file {corrupt}")
    args, message = flags[case]
    proc = train(*FAST, *args, f"--output_dir={tmp_path / 'run'}", check=False, timeout=120)
    assert message in user_error_line(proc)
    if case == "model":  # --traceback shows where it came from
        proc = train(*FAST, *args, f"--output_dir={tmp_path / 'run'}", "--traceback",
                     check=False, timeout=120)
        assert proc.returncode != 0 and "Traceback" in proc.stderr and message in proc.stderr


def test_a_run_resumed_mid_epoch_finishes_that_epoch_in_a_fit_call_of_its_own():
    from gdw_tf.run import _segments
    assert _segments(0, 0, 3) == [(0, 0, 3)]
    assert _segments(1, 4, 3) == [(1, 4, 2), (2, 0, 3)]
    assert _segments(2, 4, 3) == [(2, 4, 3)]
    assert _segments(3, 0, 3) == []


@pytest.mark.parametrize("given, expected", [
    (("digits", None, None), ("uniform", 0.4)),        # as before: 40% uniform noise
    (("digits", "none", None), ("none", 0.0)),
    (("folder", "flip", None), ("flip", 0.4)),
    (("cifar10", None, 0.6), ("uniform", 0.6)),
    (("clothing1m", None, None), ("none", 0.0)),        # real noise: nothing to unset
    (("clothing1m", None, 0.4), ("none", 0.4)),         # ... and data.build rejects this
])
def test_noise_flags_default_per_dataset(given, expected):
    dataset, noise_type, noise_rate = given
    s = with_dataset_defaults({"dataset": dataset, "noise_type": noise_type,
                               "noise_rate": noise_rate, "model": None, "lr": None, "epochs": None})
    assert (s["noise_type"], s["noise_rate"]) == expected


@pytest.mark.slow
def test_killed_run_resumes_where_it_stopped(tmp_path):
    out = str(tmp_path / "run")
    args = [*FAST, "--epochs=5", f"--output_dir={out}"]
    proc = subprocess.Popen([sys.executable, "-m", "gdw_tf.train", *args], cwd=ROOT,
                            env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    history = os.path.join(out, "history.json")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(history) and len(json.load(open(history))["loss"]) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(json.load(open(history))["loss"])
    assert 2 <= done < 5

    again = train(*args)
    assert f"at epoch {done} of 5" in again.stdout
    res = results(out)
    assert res["epochs_completed"] == 5
    assert (sorted(res["target_weight_histograms"]["by_epoch"], key=int)
            == [str(e) for e in range(5)])
    assert len(open(os.path.join(out, "log.csv")).read().splitlines()) == 6
    steps = res["optimizer_iterations"] // 5
    assert res["optimizer_iterations"] == 5 * steps  # optimizer state came back
    assert res["meta_optimizer_iterations"] == res["optimizer_iterations"]


@pytest.mark.slow
def test_mirrored_over_two_logical_cpus(tmp_path):
    out = str(tmp_path / "run")
    train(*FAST, "--epochs=1", "--strategy=mirrored", "--num_cpu_devices=2", f"--output_dir={out}")
    res = results(out)
    assert res["num_replicas"] == 2 and res["epochs_completed"] == 1


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_multi_worker_two_local_processes_stay_in_sync(tmp_path):
    out = str(tmp_path / "run")
    cluster = {"worker": [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "gdw_tf.train", *FAST, "--epochs=1",
         "--strategy=multi_worker", f"--output_dir={out}"], cwd=ROOT,
        env=subprocess_env(TF_CONFIG=json.dumps({"cluster": cluster,
                                                  "task": {"type": "worker", "index": i}})),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=400)
        assert proc.returncode == 0, err.decode()[-3000:]
    chief = results(out)
    assert chief["num_replicas"] == 2 and chief["epochs_completed"] == 1
    assert not os.path.exists(os.path.join(out, "worker_1", "results.json"))  # chief reports
    a = tf.train.load_checkpoint(os.path.join(out, "checkpoints"))
    b = tf.train.load_checkpoint(os.path.join(out, "worker_1", "checkpoints"))
    # Trainable weights (stored once, under the optimizer that updates them)
    # are synchronised; BatchNorm moving statistics are per worker.
    names = [n for n in a.get_variable_to_shape_map()
             if "optimizer/_trainable_variables" in n or "weighting_net" in n
             or "example_record" in n]
    assert any("example_record" in n for n in names)  # the label-issue record, kept in sync
    assert os.path.exists(os.path.join(out, "label_issues.csv"))
    assert not os.path.exists(os.path.join(out, "worker_1", "label_issues.csv"))
    for name in names:
        np.testing.assert_array_equal(a.get_tensor(name), b.get_tensor(name))


@pytest.mark.slow
def test_multi_worker_without_tf_config_is_a_clear_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    proc = subprocess.run([sys.executable, "-m", "gdw_tf.train", *FAST, "--strategy=multi_worker",
                           f"--output_dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                          env={**env, "PYTHONPATH": ROOT}, timeout=120)
    assert proc.returncode != 0 and "TF_CONFIG" in proc.stderr


C1M_PER_CLASS = {"noisy_train": 2, "clean_train": 1, "clean_val": 1, "clean_test": 1}


def _tfrecords(folder):
    return [f for _, _, files in os.walk(folder) for f in files if ".tfrecord" in f]


@pytest.mark.slow
def test_clothing1m_headline_command_on_two_logical_cpus(tmp_path):
    """The README's command as written, plus --manual_dir (and test-sized runs)."""
    release = str(tmp_path / "release")
    write_clothing1m_release(release, C1M_PER_CLASS)  # official layout, CRLF, gray/CMYK JPEGs
    out = str(tmp_path / "run")
    proc = train("--dataset=clothing1m", "--strategy=mirrored", f"--manual_dir={release}",
                 "--num_cpu_devices=2", f"--data_dir={tmp_path / 'tfds'}", "--epochs=1",
                 "--batch_size=8", f"--output_dir={out}", "--verbose=0", timeout=600)
    assert "without --init_weights trains resnet18 from scratch" in proc.stderr
    res = results(out)
    assert res["model"] == "resnet18" and res["num_replicas"] == 2
    assert res["flags"]["noise_type"] == "none" and res["flags"]["noise_rate"] == 0
    assert res["epochs_completed"] == 1 and 0 <= res["final_accuracy"] <= 100
    summary = json.load(open(os.path.join(out, "data_summary.json")))
    assert summary["num_train"] == 28 and summary["num_meta"] == 14 and summary["num_test"] == 14
    assert summary["noise"]["type"] == "real" and summary["skipped_images"]["count"] == 0
    with open(os.path.join(out, "label_issues.csv")) as f:  # paths from the release's key list
        rows = list(csv.DictReader(f))
    assert len(rows) == 28 and all(os.path.isfile(r["path"]) for r in rows)
    images = os.path.join(os.path.abspath(release), "images")
    assert {r["path"].startswith(images) for r in rows} == {True}
    assert os.path.getsize(os.path.join(out, "label_issues.png")) > 0


@pytest.mark.slow
def test_clothing1m_flagfile_with_pretrained_weights_converted_offline(tmp_path, monkeypatch):
    from gdw_tf import convert_torchvision
    release = str(tmp_path / "release")
    write_clothing1m_release(release, C1M_PER_CLASS)
    pth, npz = str(tmp_path / "resnet18-f37072fd.pth"), str(tmp_path / "resnet18.npz")
    write_torch_zip(pth, fake_resnet18_state_dict(), monkeypatch)      # torchvision's file format
    assert convert_torchvision.main([pth, npz]) == 0                   # without torch
    out = str(tmp_path / "run")
    proc = train("--flagfile=flags/clothing1m.flags", f"--manual_dir={release}",
                 f"--init_weights={npz}", f"--data_dir={tmp_path / 'tfds'}", "--epochs=1",
                 "--batch_size=8", "--strategy=mirrored", "--num_cpu_devices=2",
                 "--hidden_units=8", f"--output_dir={out}", "--verbose=0", timeout=600)
    assert "from scratch" not in proc.stderr
    assert "skipped classifier head" in proc.stderr                    # 1000 classes -> 14
    res = results(out)
    assert res["flags"]["init_weights"] == npz and res["num_replicas"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("case", ["noise_flag", "missing_weights", "wrong_weights", "bad_images"])
def test_clothing1m_mistakes_fail_before_any_build_work(tmp_path, case):
    release = str(tmp_path / "release")
    info = write_clothing1m_release(release, C1M_PER_CLASS)
    args = ["--dataset=clothing1m", f"--manual_dir={release}", f"--data_dir={tmp_path / 'tfds'}",
            f"--output_dir={tmp_path / 'run'}", "--epochs=1", "--batch_size=8"]
    if case == "noise_flag":
        args.append("--noise_rate=0.4")
        expected = ["noise_rate=0.4 is not supported: clothing1m has real label noise"]
    elif case == "missing_weights":
        args.append(f"--init_weights={tmp_path / 'absent.npz'}")
        expected = [f"init_weights={tmp_path / 'absent.npz'}: file not found"]
    elif case == "wrong_weights":
        np.savez(tmp_path / "resnet34.npz", **{"conv1.weight": np.zeros((32, 3, 7, 7), np.float32)})
        args.append(f"--init_weights={tmp_path / 'resnet34.npz'}")
        expected = ["resnet34.npz", "missing tensor(s)"]
    else:
        bad = [info["keys"]["clean_test"][3], info["keys"]["noisy_train"][7]]
        for key in bad:
            path = os.path.join(release, key)
            data = open(path, "rb").read()
            open(path, "wb").write(data[:int(0.7 * len(data))])      # truncated JPEG
        os.remove(os.path.join(release, info["keys"]["clean_val"][0]))
        bad.append(info["keys"]["clean_val"][0])
        expected = ["3 image(s) in the key lists cannot be used", *(f" {k}: " for k in bad),
                    "does not exist", "cannot be decoded"]
    proc = train(*args, check=False, timeout=300)
    assert proc.returncode != 0
    for fragment in expected:
        assert fragment in proc.stderr, (fragment, proc.stderr[-2000:])
    assert not _tfrecords(tmp_path / "tfds")
    run = tmp_path / "run"  # the run held its output directory's lock, and wrote nothing else
    assert not run.exists() or os.listdir(run) == [".lock"]


@pytest.mark.slow
def test_second_process_on_the_same_output_dir_is_refused(tmp_path):
    out = str(tmp_path / "run")
    first = subprocess.Popen([sys.executable, "-m", "gdw_tf.train", *FAST, "--epochs=100",
                              f"--output_dir={out}"], cwd=ROOT, env=subprocess_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lock = os.path.join(out, ".lock")
        deadline = time.time() + 120
        while time.time() < deadline and not (
                os.path.exists(lock) and open(lock).read().strip() == str(first.pid)):
            time.sleep(0.1)
        second = train(*FAST, "--epochs=100", f"--output_dir={out}", check=False, timeout=120)
        assert first.poll() is None
        assert f"is in use by another run (pid {first.pid})" in user_error_line(second)
    finally:
        first.kill()
        first.wait()


@pytest.mark.slow
def test_resume_and_rerun_check_flags_and_keep_the_whole_run(tmp_path):
    out = str(tmp_path / "run")
    args = [*FAST, "--train_per_class=30", f"--output_dir={out}"]
    train(*args, "--epochs=1")
    first = results(out)

    line = user_error_line(train(*args, "--epochs=1", "--lr=0.5", "--noise_rate=0", check=False))
    assert "other flags (--lr=0.05 -> 0.5, --noise_rate=0.4 -> 0.0)" in line
    assert "--method='gdw' -> 'mwnet'" in user_error_line(
        train(*args, "--epochs=1", "--method=mwnet", check=False))
    line = user_error_line(train(*args, "--epochs=1", "--model=mlp", "--resume=force", check=False))
    assert "does not match the model these flags build" in line
    assert results(out) == first

    again = train(*args, "--epochs=2", "--verbose=2")  # longer runs and --verbose are fine
    assert "Resuming from" in again.stdout and "at epoch 1 of 2" in again.stdout
    res = results(out)
    assert res["epochs_completed"] == 2 and res["history"]["loss"][0] == first["history"]["loss"][0]
    assert sorted(res["target_weight_histograms"]["by_epoch"]) == ["0", "1"]
    assert res["wall_time_s"] > first["wall_time_s"]
    assert len(open(os.path.join(out, "log.csv")).read().splitlines()) == 3  # header + 2 epochs

    os.remove(os.path.join(out, "figures", "target_weights.png"))
    saved = open(os.path.join(out, "results.json")).read()
    # re-running a finished run changes nothing, redraws the figures
    train(*args, "--epochs=2", "--verbose=2")
    assert open(os.path.join(out, "results.json")).read() == saved
    assert os.path.exists(os.path.join(out, "figures", "target_weights.png"))


@pytest.mark.slow
@pytest.mark.parametrize("xla, lr", [(True, "1e6"), (False, "1e30")])
def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path, xla, lr):
    out = str(tmp_path / "run")
    args = [*FAST, "--train_per_class=20", f"--jit_compile={xla}", f"--output_dir={out}"]
    train(*args, "--epochs=1")
    good = checkpoint_tensors(out)
    proc = train(*args, "--epochs=3", f"--lr={lr}", "--resume=force", check=False)
    line = user_error_line(proc)
    assert "training diverged: non-finite" in line
    if xla:  # found on the host, when the checkpoint would be written
        assert "ckpt-1" in line
    else:  # the step's own guard
        assert "non-finite gradient; no weights were updated" in line
    kept = checkpoint_tensors(out)
    latest = tf.train.latest_checkpoint(os.path.join(out, "checkpoints"))
    assert os.path.basename(latest) == "ckpt-1"
    assert kept.keys() == good.keys()
    for name, value in kept.items():
        np.testing.assert_array_equal(value, good[name])
        if np.issubdtype(np.asarray(value).dtype, np.floating):
            assert np.all(np.isfinite(value)), name


@pytest.mark.slow
def test_deterministic_run_killed_mid_epoch_ends_bit_for_bit_as_an_uninterrupted_one(tmp_path):
    args = [*FAST, "--train_per_class=100", "--epochs=3", "--checkpoint_steps=3", "--deterministic"]
    a, b = uninterrupted_and_killed_at_second_checkpoint(
        tmp_path, args, r"at epoch 0 of 3, step [369] of 10")  # ckpt-2: epoch 0, step 6 of 10
    assert a["target_weight_histograms"] == b["target_weight_histograms"]
    assert a["optimizer_iterations"] == b["optimizer_iterations"] == 30


@pytest.mark.slow
def test_auto_meta_run_killed_after_its_warm_up_ends_bit_for_bit_as_an_uninterrupted_one(tmp_path):
    """--meta_source=auto (on instance-dependent noise): the resumed run makes (or reloads)
    the same meta set choices."""
    args = [*FAST, "--train_per_class=100", "--epochs=3", "--checkpoint_steps=5", "--deterministic",
            "--meta_source=auto", "--meta_warmup_epochs=1", "--meta_refresh_epochs=1",
            "--num_meta=50", "--noise_type=instance"]
    a, b = uninterrupted_and_killed_at_second_checkpoint(   # ckpt-2: the end of the warm-up
        tmp_path, args, r"at epoch [12] of 3")
    assert a["auto_meta"] == b["auto_meta"] and len(a["auto_meta"]["choices"]) == 2


@pytest.mark.slow
def test_clothing1m_run_killed_mid_epoch_ends_bit_for_bit_as_an_uninterrupted_one(tmp_path):
    """The streamed source replays its data order from the step a kill left it at."""
    release = str(tmp_path / "release")
    write_clothing1m_release(release, C1M_PER_CLASS)                   # 28 train, 14 meta images
    args = ["--dataset=clothing1m", f"--manual_dir={release}", f"--data_dir={tmp_path / 'tfds'}",
            "--model=mlp", "--init_weights=none", "--batch_size=4", "--epochs=2",
            "--checkpoint_steps=2", "--deterministic", "--hidden_units=8", "--verbose=0"]
    # The uninterrupted run builds the TFDS dataset; the killed one reuses it.
    a, b = uninterrupted_and_killed_at_second_checkpoint(
        tmp_path, args, r"at epoch 0 of 2, step [246] of 7")  # ckpt-2: epoch 0, step 4 of 7
    assert a["optimizer_iterations"] == b["optimizer_iterations"] == 14


def test_cifar100_gives_the_meta_methods_the_papers_outer_lr_unless_set():
    import gdw_tf
    from gdw_tf.methods import data_options
    from gdw_tf.run import build_model

    def method_options(values):
        return RunConfig.from_flag_values(values).method.options

    class Bundle:  # what data_options reads of a DataBundle
        name = "cifar100"

    assert data_options("gdw", Bundle) == {"outer_lr": 1000.0}
    assert data_options("base", Bundle) == {}
    Bundle.name = "cifar10"
    assert data_options("gdw", Bundle) == {}
    unset = {"dataset": "cifar100", "noise_type": "uniform", "noise_rate": 0.4, "epochs": 1}
    assert method_options({**unset, "method": "gdw", "outer_lr": 5.0})["outer_lr"] == 5.0
    assert method_options({**unset, "method": "gdw",
                           "method_option": ["outer_lr=7"]})["outer_lr"] == 7
    # The trainer: the paper's value under the explicit one (a CIFAR-100-named bundle of digits).
    bundle = gdw_tf.data.build("digits", batch_size=50)
    bundle.name = "cifar100"
    for given, used in ((None, 1000.0), (5.0, 5.0)):
        config = RunConfig.from_flag_values({**unset, "method": "gdw", "outer_lr": given,
                                             "model": "mlp", "hidden_units": 4})
        model = build_model(config.method, config.optim, bundle)
        assert model.method.options()["outer_lr"] == used


@pytest.mark.slow
def test_clothing1m_without_its_clean_split_chooses_its_meta_set_from_the_noisy_one(tmp_path):
    """--meta_source=auto on a streamed release: the meta set is chosen from noisy_train's
    records (by their loss after the warm-up), clean_val is not read, and the choice's clean
    fraction is reported over the chosen images whose clean label is known."""
    release = str(tmp_path / "release")
    write_clothing1m_release(release, {**C1M_PER_CLASS, "noisy_train": 4})
    out = str(tmp_path / "run")
    args = ["--dataset=clothing1m", f"--manual_dir={release}", f"--data_dir={tmp_path / 'tfds'}",
            "--model=small_cnn", "--init_weights=none", "--epochs=3", "--batch_size=8",
            "--meta_source=auto", "--meta_warmup_epochs=1", "--meta_refresh_epochs=1",
            "--verbose=2"]
    too_many = train(*args, "--num_meta=70", f"--output_dir={tmp_path / 'no'}", check=False)
    line = user_error_line(too_many)                                  # 5 a class: more than given
    assert "chooses 5 training examples of each class" in line and "lower --num_meta" in line
    assert not os.path.exists(tmp_path / "no" / "checkpoints")        # before any training
    proc = train(*args, "--num_meta=14", "--strategy=mirrored", "--num_cpu_devices=2",
                 f"--output_dir={out}", timeout=600)
    assert "meta set chosen at epoch 2: 14 smallest-loss training examples" in proc.stdout
    res = results(out)
    choices = res["auto_meta"]["choices"]
    assert [c["epoch"] for c in choices] == [1, 2]
    for c in choices:
        assert c["counts"] == [1] * 14 and 0 <= c["truth_known"] <= 14
        assert (c["clean_fraction"] is None) == (c["truth_known"] == 0)
    summary = json.load(open(os.path.join(out, "data_summary.json")))
    assert summary["num_meta"] == 14 and summary["protocol"]["meta_source"].startswith("auto: ")
    assert "meta_loss" in res["history"] and res["epochs_completed"] == 3
    assert res["num_replicas"] == 2


@pytest.mark.slow
def test_clothing1m_auto_meta_run_killed_mid_choice_epoch_resumes_bit_for_bit(tmp_path):
    release = str(tmp_path / "release")
    write_clothing1m_release(release, {**C1M_PER_CLASS, "noisy_train": 4})
    args = ["--dataset=clothing1m", f"--manual_dir={release}", f"--data_dir={tmp_path / 'tfds'}",
            "--model=mlp", "--init_weights=none", "--epochs=3", "--batch_size=8", "--verbose=0",
            "--meta_source=auto", "--num_meta=14", "--meta_warmup_epochs=1",
            "--meta_refresh_epochs=1", "--checkpoint_steps=5", "--deterministic",
            "--hidden_units=16"]
    a, b = uninterrupted_and_killed_at_second_checkpoint(   # ckpt-2: about the first choice
        tmp_path, args, r"at epoch [12] of 3")
    assert a["auto_meta"] == b["auto_meta"] and len(a["auto_meta"]["choices"]) == 2
