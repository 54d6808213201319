"""FusedBatchNormalization == keras.layers.BatchNormalization, to first and second order."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from gdw_tf.models.batch_norm import FusedBatchNormalization


def _pair(channels=5):
    layers = []
    for cls in (keras.layers.BatchNormalization, FusedBatchNormalization):
        layer = cls(axis=-1, momentum=0.9, epsilon=1e-5)
        layer.build((None, 4, 3, channels))
        layers.append(layer)
    rng = np.random.default_rng(0)
    gamma, beta = rng.uniform(0.5, 1.5, channels), rng.normal(size=channels)
    for layer in layers:
        layer.gamma.assign(gamma)
        layer.beta.assign(beta)
    return layers


def test_training_output_and_moving_statistics_match_keras():
    keras_bn, fused_bn = _pair()
    x = tf.constant(np.random.default_rng(1).normal(2.0, 3.0, size=(6, 4, 3, 5)), tf.float32)
    assert fused_bn._fused(x, None)  # the fused kernels are what is tested
    for _ in range(2):  # two updates: the moving averages compound
        expected, got = keras_bn(x, training=True), fused_bn(x, training=True)
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fused_bn.moving_mean.numpy(), keras_bn.moving_mean.numpy(),
                               rtol=1e-6)
    np.testing.assert_allclose(fused_bn.moving_variance.numpy(),
                               keras_bn.moving_variance.numpy(), rtol=1e-5)
    # ... and the biased batch variance moved them (not the Bessel-corrected one).
    var = x.numpy().reshape(-1, 5).var(0)
    np.testing.assert_allclose(fused_bn.moving_variance.numpy(), 0.81 + 0.19 * var, rtol=1e-5)
    np.testing.assert_allclose(fused_bn(x, training=False).numpy(),
                               keras_bn(x, training=False).numpy(), rtol=1e-5, atol=1e-5)


def test_inference_and_frozen_layers_match_keras():
    """training=False, and trainable=False (Keras: inference mode, statistics frozen)."""
    keras_bn, fused_bn = _pair()
    x = tf.constant(np.random.default_rng(4).normal(1.0, 2.0, size=(6, 4, 3, 5)), tf.float32)
    keras_bn(x, training=True), fused_bn(x, training=True)  # non-trivial moving statistics
    for layer in (keras_bn, fused_bn):
        layer.trainable = False
    frozen = fused_bn.moving_mean.numpy()
    outputs = []
    for layer in (keras_bn, fused_bn):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
        outputs.append((y.numpy(), tape.gradient(y, x, output_gradients=x).numpy()))
    np.testing.assert_allclose(outputs[1][0], outputs[0][0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outputs[1][1], outputs[0][1], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(fused_bn.moving_mean.numpy(), frozen)


def _plain_batch_norm(x, gamma, beta, epsilon=1e-5):
    """Training-mode batch norm from plain ops, differentiable to any order.

    (Keras' layer is not a reference beyond first order: tf.nn.moments stops the gradient
    through the mean inside the variance, which changes second derivatives w.r.t. x.)
    """
    mean = tf.reduce_mean(x, [0, 1, 2])
    variance = tf.reduce_mean(tf.square(x - mean), [0, 1, 2])
    return (x - mean) * tf.math.rsqrt(variance + epsilon) * gamma + beta


def test_first_and_second_order_gradients_match_plain_ops():
    """d/dx, d/dgamma, d/dbeta, and the derivatives of the backward pass w.r.t. its
    cotangent, its input and gamma.

    The derivative w.r.t. the cotangent is what the meta step of GDW / MW-Net takes (the
    virtual step's gradient as a function of the weighted logit gradients).
    """
    rng = np.random.default_rng(2)
    x = tf.constant(rng.normal(size=(6, 4, 3, 5)), tf.float32)
    dy = tf.constant(rng.normal(size=(6, 4, 3, 5)), tf.float32)
    probe = [tf.constant(rng.normal(size=s), tf.float32) for s in ((6, 4, 3, 5), (5,), (5,))]
    _, fused_bn = _pair()
    functions = [lambda x: _plain_batch_norm(x, fused_bn.gamma, fused_bn.beta),
                 lambda x: fused_bn(x, training=True)]
    results = []
    for function in functions:
        with tf.GradientTape(persistent=True) as outer:
            outer.watch([dy, x])
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = function(x)
            grads = inner.gradient(y, [x, fused_bn.gamma, fused_bn.beta], output_gradients=dy)
            probe_value = tf.add_n([tf.reduce_sum(g * p) for g, p in zip(grads, probe)])
        second = outer.gradient(probe_value, [dy, x, fused_bn.gamma],
                                unconnected_gradients=tf.UnconnectedGradients.ZERO)
        results.append([g.numpy() for g in grads + second])
    for expected, got in zip(*results):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert min(np.abs(r).max() for r in results[0]) > 1e-2  # not vacuous


@pytest.mark.parametrize("inputs", ["float64", "rank2"])
def test_falls_back_to_keras_outside_the_fused_case(inputs):
    layer = FusedBatchNormalization(dtype="float64" if inputs == "float64" else None)
    shape = (4, 2, 2, 3) if inputs == "float64" else (4, 3)
    x = np.random.default_rng(3).normal(size=shape)
    reference = keras.layers.BatchNormalization(dtype=layer.dtype_policy)
    np.testing.assert_allclose(layer(x, training=True).numpy(),
                               reference(x, training=True).numpy(), rtol=1e-6, atol=1e-6)


def _resnet8(monkeypatch, fused):
    from gdw_tf.models import layers, resnet
    if not fused:
        def keras_batch_norm(x, name):
            return keras.layers.BatchNormalization(
                axis=-1, momentum=layers.BN_MOMENTUM, epsilon=layers.BN_EPSILON, name=name)(x)
        monkeypatch.setattr(resnet, "batch_norm", keras_batch_norm)
        monkeypatch.setattr(layers, "batch_norm", keras_batch_norm)
    keras.utils.set_random_seed(0)
    model = resnet.resnet8(num_classes=10, input_shape=(8, 8, 3))
    monkeypatch.undo()
    return model


@pytest.mark.slow  # in process, but among the slowest (docs/development.md)
@pytest.mark.parametrize("method", ["gdw", "mwnet"])
def test_meta_step_on_a_resnet_is_the_same_with_fused_and_keras_batch_norm(monkeypatch, method):
    """One GDW / MW-Net step (virtual step, second-order meta step, real step, moving
    statistics) on ResNet-8 gives the same weights with either batch-norm implementation."""
    import gdw_tf
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 8, 8, 3)).astype("float32")
    noisy = rng.integers(0, 10, 8).astype("int32")
    batch = {"image": x, "label": noisy, "true_label": noisy,
             "meta_image": rng.normal(size=(6, 8, 8, 3)).astype("float32"),
             "meta_label": rng.integers(0, 10, 6).astype("int32")}
    weights = []
    for fused in (False, True):
        backbone = _resnet8(monkeypatch, fused)
        kinds = {type(layer) for layer in backbone.layers}
        assert (FusedBatchNormalization in kinds) == fused
        keras.utils.set_random_seed(1)
        model = gdw_tf.GDWModel(backbone, 10, method=method)
        model.compile(keras.optimizers.SGD(0.1, momentum=0.9))
        step = tf.function(model.train_step)
        for _ in range(2):
            step({k: tf.constant(v) for k, v in batch.items()})
        weights.append([v.numpy() for v in backbone.weights]
                       + [v.numpy() for v in model.method.weighting_net.weights])
    for keras_value, fused_value in zip(*weights):
        np.testing.assert_allclose(fused_value, keras_value, rtol=2e-4, atol=2e-5)
