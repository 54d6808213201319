"""A step on two replicas (MirroredStrategy, two logical CPUs) equals one device."""
import numpy as np
import pytest
import tensorflow as tf

from tests import tiny


def _fit(strategy, method, steps, initial, **options):
    with strategy.scope():
        model = tiny.gdw_model(method, dtype="float32", **options)
        for var, value in zip(model.backbone.weights + model.method.weights, initial):
            var.assign(value)
    model.fit(tiny.paired_dataset(steps), epochs=1, verbose=0)
    return [v.numpy() for v in model.backbone.weights + model.method.weights]


@pytest.fixture(scope="module")
def mirrored():
    """One strategy per process: several MirroredStrategy objects in one
    process reuse collective instance keys and abort each other's all-reduces."""
    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("needs two logical CPU devices (set up in conftest)")
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@pytest.mark.parametrize("method, options", [("gdw", {}), ("mwnet", {}), ("base", {}),
                                             ("gdw", {"warmup_steps": 2})])
def test_two_replicas_equal_one(method, options, mirrored):
    steps = tiny.batches(3, n=8, m=6, seed=11, dtype="float32")
    reference = tiny.gdw_model(method, dtype="float32")
    initial = [v.numpy() for v in reference.backbone.weights + reference.method.weights]
    one = _fit(tf.distribute.OneDeviceStrategy("/cpu:0"), method, steps, initial, **options)
    two = _fit(mirrored, method, steps, initial, **options)
    for a, b, start in zip(one, two, initial):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(one[0], initial[0])
