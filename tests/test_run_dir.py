"""gdw_tf.run_dir: the output-dir lock, the flag comparison on resume, user errors."""
import os
import subprocess
import sys

import pytest

from gdw_tf import run_dir
from gdw_tf.run_dir import OutputDirLock, UserError


def test_second_lock_names_the_holder_and_release_frees_it(tmp_path):
    with OutputDirLock(str(tmp_path)):
        assert open(tmp_path / ".lock").read().strip() == str(os.getpid())
        with pytest.raises(UserError, match=rf"in use by another run \(pid {os.getpid()}\)"):
            with OutputDirLock(str(tmp_path)):
                pass
    with OutputDirLock(str(tmp_path)):  # released on exit
        pass


def test_unwritable_output_dir_is_a_user_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="--output_dir=.*file/run: cannot create"):
        with OutputDirLock(str(tmp_path / "file" / "run")):
            pass


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from gdw_tf.run_dir import OutputDirLock\n"
         f"with OutputDirLock({str(tmp_path)!r}):\n print('locked', flush=True); time.sleep(60)"],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(UserError, match=f"pid {holder.pid}"):
        with OutputDirLock(str(tmp_path)):
            pass
    holder.kill()
    holder.wait()
    assert open(tmp_path / ".lock").read().strip() == str(holder.pid)  # stale file left
    with OutputDirLock(str(tmp_path)):
        assert open(tmp_path / ".lock").read().strip() == str(os.getpid())


def test_differing_flags_ignores_harmless_ones_and_longer_runs():
    saved = {"lr": 0.1, "epochs": 5, "verbose": 2, "data_dir": "data", "model": "small_cnn",
             "checkpoint_steps": 0}
    same = {**saved, "epochs": 8, "verbose": 0, "data_dir": os.path.abspath("data"),
            "checkpoint_steps": 10}
    assert run_dir.differing_flags(saved, same) == []
    assert run_dir.differing_flags(saved, {**saved, "epochs": 4, "lr": 0.5, "model": "mlp"}) == [
        "epochs", "lr", "model"]
    assert run_dir.differing_flags(saved, {**saved, "new_flag": 1}) == ["new_flag"]
    # a run made before a flag existed ran as its default
    assert run_dir.differing_flags(saved, {**saved, "new_flag": 1}, {"new_flag": 1}) == []
    assert run_dir.differing_flags(saved, {**saved, "new_flag": 2}, {"new_flag": 1}) == ["new_flag"]
    # where a finished run is reused as it is (the accuracy bench), its length must match
    assert run_dir.differing_flags(saved, same, epochs_may_grow=False) == ["epochs"]


def test_check_same_flags_lists_the_differences_unless_forced(tmp_path):
    run_dir.save_flags(str(tmp_path), {"lr": 0.1, "noise_rate": 0.4, "verbose": 2})
    with pytest.raises(UserError,
                       match=r"--lr=0.1 -> 0.5, --noise_rate=0.4 -> 0.0\).*--resume=force"):
        run_dir.check_same_flags(str(tmp_path), {"lr": 0.5, "noise_rate": 0.0, "verbose": 2})
    assert run_dir.check_same_flags(str(tmp_path), {"lr": 0.5, "noise_rate": 0.4, "verbose": 0},
                                    force=True) == ["lr"]


def test_user_errors_converts_input_errors_only():
    with pytest.raises(UserError, match="^--x is bad: fix it$"):
        with run_dir.user_errors():
            raise ValueError("--x is bad:\n  fix it")
    with pytest.raises(UserError, match="no such file"):
        with run_dir.user_errors():
            raise FileNotFoundError("no such file")
    with pytest.raises(TypeError):  # a bug stays a bug
        with run_dir.user_errors():
            raise TypeError("bug")
