"""Batch normalisation on TensorFlow's fused kernels, with a cheap second derivative.

The bi-level step differentiates the virtual step's gradient with respect to the
logit-gradient weights, i.e. differentiates every layer's *backward* pass with respect to
its incoming gradient. For batch norm in training mode that backward is

    dx = gamma / sigma * (dy - mean(dy) - x_hat * mean(dy * x_hat)),
    dgamma = sum(dy * x_hat),   dbeta = sum(dy)        (per channel, over N, H, W)

which is linear in dy with a symmetric operator, so its transpose is the same kernel:
d<u, dx>/d dy = FusedBatchNormGrad(u)[dx] (+ u_gamma * x_hat + u_beta for the other two
outputs). TensorFlow's registered second derivative instead rebuilds the backward from
element-wise ops and differentiates all of it; here only the parts that are asked for
(w.r.t. x and gamma, through a composite) are built.
"""
from __future__ import annotations

import keras
import tensorflow as tf


def _backward_composite(dy, x, gamma, epsilon):
    """(dx, dgamma, dbeta) of training-mode batch norm from plain ops; [N,H,W,C] x."""
    axes = [0, 1, 2]
    mean = tf.reduce_mean(x, axes)  # (tf.nn.moments stops the gradient through the mean
    variance = tf.reduce_mean(tf.square(x - mean), axes)  # in the variance: wrong 2nd order)
    inv = tf.math.rsqrt(variance + epsilon)
    x_hat = (x - mean) * inv
    dgamma = tf.reduce_sum(dy * x_hat, axes)
    dbeta = tf.reduce_sum(dy, axes)
    count = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), x.dtype)
    dx = gamma * inv * (dy - (dbeta + x_hat * dgamma) / count)
    return dx, dgamma, dbeta


def _fused_backward(dy, x, gamma, reserves, x_hat, epsilon):
    """(dx, dgamma, dbeta) by FusedBatchNormGradV3, differentiable to second order.

    ``reserves``: the forward kernel's reserve spaces; ``x_hat``: the normalised input.
    """

    @tf.custom_gradient
    def backward(dy, x, gamma):
        dx, dgamma, dbeta, _, _ = tf.raw_ops.FusedBatchNormGradV3(
            y_backprop=dy, x=x, scale=gamma, reserve_space_1=reserves[0],
            reserve_space_2=reserves[1], reserve_space_3=reserves[2], epsilon=epsilon,
            data_format="NHWC", is_training=True)

        def grad(u_dx, u_dgamma, u_dbeta):
            u_dx, u_dgamma, u_dbeta = (tf.zeros_like(t) if u is None else u for u, t in
                                       zip((u_dx, u_dgamma, u_dbeta), (dx, dgamma, dbeta)))
            # W.r.t. dy: the transpose of a symmetric operator is the same kernel.
            u_dy = tf.raw_ops.FusedBatchNormGradV3(
                y_backprop=u_dx, x=x, scale=gamma, reserve_space_1=reserves[0],
                reserve_space_2=reserves[1], reserve_space_3=reserves[2], epsilon=epsilon,
                data_format="NHWC", is_training=True)[0]
            u_dy += x_hat * u_dgamma + u_dbeta
            # W.r.t. x and gamma, through the composite; inside a tf.function these ops are
            # pruned when nothing consumes them (as in the meta step).
            with tf.GradientTape() as tape:
                tape.watch([x, gamma])
                outputs = _backward_composite(dy, x, gamma, epsilon)
            u_x, u_gamma = tape.gradient(outputs, [x, gamma],
                                         output_gradients=[u_dx, u_dgamma, u_dbeta])
            return u_dy, u_x, u_gamma

        return (dx, dgamma, dbeta), grad

    return backward(dy, x, gamma)


def fused_batch_norm_training(x, gamma, beta, epsilon):
    """Training-mode batch norm of float32 [N, H, W, C] x -> (y, batch mean, biased variance).

    The mean and variance are for the moving averages (not differentiated).
    """
    stats = {}

    @tf.custom_gradient
    def forward(x, gamma, beta):
        empty = tf.constant([], x.dtype)
        y, mean, variance, *reserves = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=gamma, offset=beta, mean=empty, variance=empty, epsilon=epsilon,
            exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
        # The kernel returns the Bessel-corrected variance; Keras' moving average uses the
        # biased one.
        count = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), x.dtype)
        variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
        stats["mean"], stats["variance"] = mean, variance

        def grad(dy):
            x_hat = (x - mean) * tf.math.rsqrt(variance + epsilon)
            return _fused_backward(dy, x, gamma, reserves, x_hat, epsilon)

        return y, grad

    y = forward(x, gamma, beta)
    return y, tf.stop_gradient(stats["mean"]), tf.stop_gradient(stats["variance"])


@keras.saving.register_keras_serializable(package="gdw_tf")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` computed with :func:`fused_batch_norm_training`.

    Same semantics, parameters and moving-statistics update as the Keras layer (biased batch
    variance, ``moving = momentum * moving + (1 - momentum) * batch``), in float32 like
    Keras, so it loads the same weights. On (N, H, W, C) inputs of float32 compute
    (bfloat16/float16 are upcast, as Keras does) it runs fused kernels instead of Keras'
    moments + affine composite, in training and in inference; anything else (masks,
    renorm, float64, other axes) is the Keras layer.
    """

    def _fused(self, inputs, mask) -> bool:
        return (mask is None and not self.renorm and self.scale and self.center
                and len(inputs.shape) == 4 and self.axis in (-1, 3)
                and keras.backend.result_type(inputs.dtype, "float32") == "float32")

    def call(self, inputs, training=None, mask=None):
        if not self._fused(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        if not (training and self.trainable):
            # Inference: normalise with the moving statistics (TF's registered gradients).
            y = tf.raw_ops.FusedBatchNormV3(
                x=tf.cast(inputs, tf.float32), scale=tf.cast(self.gamma, tf.float32),
                offset=tf.cast(self.beta, tf.float32),
                mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon,
                data_format="NHWC", is_training=False)[0]
            return tf.cast(y, self.compute_dtype)
        y, mean, variance = fused_batch_norm_training(
            tf.cast(inputs, tf.float32), tf.cast(self.gamma, tf.float32),
            tf.cast(self.beta, tf.float32), self.epsilon)
        m = self.momentum
        self.moving_mean.assign(tf.cast(self.moving_mean, tf.float32) * m + mean * (1.0 - m))
        self.moving_variance.assign(
            tf.cast(self.moving_variance, tf.float32) * m + variance * (1.0 - m))
        return tf.cast(y, self.compute_dtype)
