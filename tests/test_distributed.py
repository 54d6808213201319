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


def _frozen_keras_model():
    """GDW on keras:MobileNetV3Small (minimalistic, 32x32, 3 classes), backbone frozen."""
    import keras

    import gdw_tf
    from gdw_tf import models

    backbone = models.build("keras:MobileNetV3Small", 3, (32, 32, 3), minimalistic=True)
    models.freeze_backbone(backbone)
    model = gdw_tf.GDWModel(backbone, 3, method="gdw")
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9))
    return model


def _fit_keras_backbone(strategy, steps, initial):
    with strategy.scope():
        model = _frozen_keras_model()
        for var, value in zip(model.backbone.weights + model.method.weights, initial, strict=True):
            var.assign(value)
    model.fit(tiny.paired_dataset(steps), epochs=1, verbose=0)
    return [v.numpy() for v in model.backbone.weights + model.method.weights]


def test_two_replicas_equal_one_on_a_frozen_keras_application(mirrored):
    """--freeze_backbone on keras:MobileNetV3Small: BatchNorm runs on its moving statistics,
    so a replica's half batch gives what the whole batch gives (trainable BatchNorm
    normalises each replica's examples with that replica's statistics, as Keras does)."""
    rng = np.random.default_rng(0)
    steps = [({"image": rng.normal(size=(8, 32, 32, 3)).astype("float32"),
               "label": rng.integers(0, 3, 8).astype("int32")},
              (rng.normal(size=(6, 32, 32, 3)).astype("float32"),
               rng.integers(0, 3, 6).astype("int32"))) for _ in range(2)]
    reference = _frozen_keras_model()
    initial = [v.numpy() for v in reference.backbone.weights + reference.method.weights]
    one = _fit_keras_backbone(tf.distribute.OneDeviceStrategy("/cpu:0"), steps, initial)
    two = _fit_keras_backbone(mirrored, steps, initial)
    for a, b in zip(one, two, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    head_bias = len(reference.backbone.weights) - 1
    assert not np.allclose(one[head_bias], initial[head_bias])  # the step moved the head
