"""Test set-up: two logical CPU devices (for MirroredStrategy tests), quiet TF, and the
`slow` marker: a test that runs a gdw_tf process (the trainer, the audit, a bench) is
marked slow (docs/development.md), which a test that does so unmarked fails to say."""
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
except RuntimeError:  # TF already initialised by an earlier import
    pass


@pytest.fixture(scope="module")
def mirrored():
    """Two replicas on the two logical CPUs, reduced through one device: the same
    replica-context semantics as the default, without collective ops, whose instance
    keys would clash with another MirroredStrategy in the same process (test_distributed.py
    defines its own `mirrored`, with collectives, and shares it within its module)."""
    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("needs two logical CPU devices (set up in conftest)")
    return tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())


# The command-line tools whose processes train or read a run: a test starting one is slow.
SLOW_TOOLS = ("gdw_tf.train", "gdw_tf.audit", "gdw_tf.bench")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: runs a gdw_tf process (trainer, audit, bench) or kills one; "
        "`pytest -m 'not slow'` is the edit-test loop (docs/development.md)")


_current = {"slow": True}  # whether the test being set up, run or torn down is marked slow


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):  # before any fixture of the test, module-scoped ones too
    _current["slow"] = item.get_closest_marker("slow") is not None


class _SlowToolGuard(subprocess.Popen):
    """subprocess.Popen that refuses, in a test (or a fixture it sets up) not marked slow,
    to start `python -m TOOL` for a TOOL of SLOW_TOOLS."""

    def __init__(self, args, *rest, **kwargs):
        argv = [str(a) for a in args] if isinstance(args, (list, tuple)) else str(args).split()
        modules = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-m"]
        if not _current["slow"] and any(m == tool or m.startswith(f"{tool}.")
                                        for m in modules for tool in SLOW_TOOLS):
            pytest.fail(f"this test runs `python -m {modules[0]}`: mark it "
                        "@pytest.mark.slow (docs/development.md)", pytrace=False)
        super().__init__(args, *rest, **kwargs)


subprocess.Popen = _SlowToolGuard  # subprocess.run and every caller go through it
