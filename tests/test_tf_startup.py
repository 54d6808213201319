"""The command-line tools print none of TensorFlow's C++ start-up lines, unless the user
set TF_CPP_MIN_LOG_LEVEL (gdw_tf/tf_startup.py)."""
import os
import re
import subprocess
import sys

import pytest

from gdw_tf import tf_startup

FAST = ["--dataset=digits", "--verbose=0", "--hidden_units=16", "--train_per_class=10",
        "--epochs=1"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root
ABSL_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:", re.M)  # absl's C++ log-line prefix


def _run(args, **env):
    """`python -m ARGS` from ROOT, TF_CPP_MIN_LOG_LEVEL unset unless given in `env`."""
    base = {k: v for k, v in os.environ.items()
            if k not in (tf_startup.LEVEL, tf_startup._SET_BY_GDW_TF)}
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, env={**base, "PYTHONPATH": ROOT, **env}, timeout=300)


@pytest.mark.slow
def test_a_run_shows_no_tensorflow_startup_lines(tmp_path):
    # --deterministic re-executes the trainer, which inherits the level quiet() set.
    proc = _run(["gdw_tf.train", *FAST, "--deterministic", f"--output_dir={tmp_path}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "absl::InitializeLog" not in proc.stderr and "cuInit" not in proc.stderr
    assert not ABSL_LINE.search(proc.stderr), proc.stderr
    assert os.path.isfile(tmp_path / "results.json")


@pytest.mark.slow
def test_errors_still_show_and_the_users_level_is_left_alone():
    proc = _run(["gdw_tf.train", "--no_such_flag"])
    assert proc.returncode == 2
    assert proc.stderr == "gdw_tf.train: error: Unknown command line flag 'no_such_flag'\n"
    for level in ("1", "3"):  # the levels users set to silence TensorFlow: no start-up lines
        proc = _run(["gdw_tf.audit", "--no_such_flag"], TF_CPP_MIN_LOG_LEVEL=level)
        assert proc.returncode == 2
        assert proc.stderr == ("gdw_tf.audit: error: Unknown command line flag "
                               "'no_such_flag'\n"), level
    proc = _run(["gdw_tf.audit", "--no_such_flag"], TF_CPP_MIN_LOG_LEVEL="0")
    assert proc.returncode == 2
    assert "absl::InitializeLog" in proc.stderr and "cpu_feature_guard" in proc.stderr
    assert proc.stderr.endswith("gdw_tf.audit: error: Unknown command line flag 'no_such_flag'\n")


def test_only_startup_lines_are_removed():
    no_driver = ("I0000 00:00:17.1  1 cudart_stub.cc:31] Could not find cuda drivers on your "
                 "machine, GPU will not be used.\n")
    cuinit = "E0000 00:00:17.2  1 cuda_platform.cc:52] failed call to cuInit: INTERNAL: x\n"
    kept = ("W0000 00:00:17.3  1 a.cc:1] a warning\n"
            "E0000 00:00:17.4  1 b.cc:2] an error\n"
            "Traceback (most recent call last):\n")
    text = ("WARNING: All log messages before absl::InitializeLog() is called "
            "are written to STDERR\n"
            "I0000 00:00:17.0  1 port.cc:153] oneDNN custom operations are on.\n"
            "I0000 00:00:17.0  1 cpu_feature_guard.cc:227] This TensorFlow binary is optimized\n"
            "To enable the following instructions: AVX2 FMA, in other operations, rebuild.\n")
    assert tf_startup.startup_lines_removed(text + no_driver + cuinit + kept) == kept
    assert tf_startup.startup_lines_removed(cuinit + kept) == cuinit + kept  # a driver: real


def test_importing_the_package_loads_tensorflow_only_on_use():
    code = ("import sys, gdw_tf\n"
            "assert 'tensorflow' not in sys.modules\n"
            "assert gdw_tf.GDWModel.__module__ == 'gdw_tf.model' and gdw_tf.data.build\n"
            "assert 'tensorflow' in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": ROOT}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
