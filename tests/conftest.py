"""Test set-up: two logical CPU devices (for MirroredStrategy tests), quiet TF."""
import os
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
