"""One full GDW / MWNet step against an independent, deliberately slow version.

The slow version uses explicit per-example Jacobians (float64) and the closed
form dL_meta/domega_ij = -lr/n (p_ij - Y_ij) (J_i u)_j, u = dL_meta/dtheta_hat,
instead of nested tapes and custom gradients; optimizers are written out.
"""
import numpy as np
import pytest
import tensorflow as tf

import gdw_tf
from gdw_tf.losses import MAX_TARGET_PROB
from tests import tiny

LR, MOMENTUM, WD = 0.1, 0.9, 5e-4
META_LR, META_WD, BETA1, BETA2, EPS = 1e-3, 1e-4, 0.9, 0.999, 1e-8
OUTER_LR, CLIP = 100.0, 0.2


softmax, forward = tiny.softmax, tiny.mlp_forward


def per_example_jacobians(theta, x):
    """J[i]: list over params of d logits_i / d param, shape [C, *param.shape]."""
    jacobians = []
    for i in range(len(x)):
        params = [tf.Variable(t) for t in theta]
        with tf.GradientTape() as tape:
            w1, b1, w2, b2 = params
            logits = tf.tanh(x[i:i + 1] @ w1 + b1) @ w2 + b2
        jacobians.append([j.numpy()[0] for j in tape.jacobian(logits, params)])
    return jacobians


def weighted_gradient(jacobians, cotangents):
    """(1/n) sum_i J_i^T cotangent_i, per parameter."""
    n = len(jacobians)
    return [sum(np.tensordot(cotangents[i], jacobians[i][k], axes=1) for i in range(n)) / n
            for k in range(len(jacobians[0]))]


def jvp(jacobian, u):
    """J_i u for one example: [C]."""
    return sum(np.tensordot(j, t, axes=t.ndim) for j, t in zip(jacobian, u))


def vnet(phi, costs):
    k1, b1, k2, b2 = phi
    pre = costs[:, None] @ k1 + b1
    h = np.maximum(pre, 0)
    w = 1 / (1 + np.exp(-(h @ k2 + b2)))
    return w, (pre, h)


def vnet_grad(phi, costs, dw):
    """Gradient of sum_i dw_i * V_phi(cost_i)[0] w.r.t. phi (hand backprop)."""
    k1, b1, k2, b2 = phi
    w, (pre, h) = vnet(phi, costs)
    dz = dw[:, None] * w * (1 - w)
    dh = dz @ k2.T * (pre > 0)
    return [costs[None, :] @ dh, dh.sum(0), h.T @ dz, dz.sum(0)]


def constrain(omega, p, y):
    p_t = np.sum(p * y, axis=1)
    omega_t = np.sum(omega * p * (1 - y), axis=1) / (1 - np.minimum(p_t, MAX_TARGET_PROB))
    return omega * (1 - y) + omega_t[:, None] * y


class SlowStep:
    """State: theta, phi, SGD momentum, Adam moments and step count."""

    def __init__(self, theta, phi):
        self.theta, self.phi = theta, phi
        self.momentum = [np.zeros_like(t) for t in theta]
        self.adam_m = [np.zeros_like(t) for t in phi]
        self.adam_v = [np.zeros_like(t) for t in phi]
        self.t = 0

    def step(self, method, batch, meta):
        x, y_int = batch["image"], batch["label"]
        xm, ym = meta
        n, c = len(x), tiny.NUM_CLASSES
        y = np.eye(c)[y_int]
        p = softmax(forward(self.theta, x))
        costs = -np.log(np.sum(p * y, axis=1))
        w, _ = vnet(self.phi, costs)
        omega = w * np.ones((n, c))
        if method == "gdw":
            omega = constrain(omega, p, y)
        jac = per_example_jacobians(self.theta, x)
        grad = weighted_gradient(jac, omega * (p - y))
        theta_hat = [t - LR * g for t, g in zip(self.theta, grad)]
        pm = softmax(forward(theta_hat, xm))
        jac_m = per_example_jacobians(theta_hat, xm)
        u = weighted_gradient(jac_m, pm - np.eye(c)[ym])
        g = np.stack([-LR / n * (p[i] - y[i]) * jvp(jac[i], u) for i in range(n)])
        if method == "gdw":   # d omega / d w through the constraint
            ratio = (1 - np.sum(p * y, 1)) / (1 - np.minimum(np.sum(p * y, 1), MAX_TARGET_PROB))
            dw = np.sum(g * (1 - y), 1) + np.sum(g * y, 1) * ratio
        else:
            dw = g.sum(1)
        self._adam(vnet_grad(self.phi, costs, dw))
        if method == "gdw":
            step = np.clip(OUTER_LR * g / np.abs(g).sum(), -CLIP, CLIP)
            final = constrain(np.clip(omega - step, 1e-6, 1e6), p, y)
        else:
            final = vnet(self.phi, costs)[0] * np.ones((n, c))
        grad = weighted_gradient(jac, final * (p - y))
        for k, (t, gr) in enumerate(zip(self.theta, grad)):
            self.momentum[k] = MOMENTUM * self.momentum[k] - LR * (gr + WD * t)
            self.theta[k] = t + self.momentum[k]
        return final

    def _adam(self, grads):
        self.t += 1
        alpha = META_LR * np.sqrt(1 - BETA2 ** self.t) / (1 - BETA1 ** self.t)
        for k, (v, gr) in enumerate(zip(self.phi, grads)):
            gr = gr + META_WD * v
            self.adam_m[k] += (gr - self.adam_m[k]) * (1 - BETA1)
            self.adam_v[k] += (gr ** 2 - self.adam_v[k]) * (1 - BETA2)
            self.phi[k] = v - alpha * self.adam_m[k] / (np.sqrt(self.adam_v[k]) + EPS)


# gdw: in process, but among the slowest (docs/development.md)
@pytest.mark.parametrize("method", [pytest.param("gdw", marks=pytest.mark.slow), "mwnet"])
def test_two_fit_steps_match_the_slow_reimplementation(method):
    model = tiny.gdw_model(method, lr=LR, weight_decay=WD, hidden_units=16)
    slow = SlowStep([v.numpy().copy() for v in model.backbone.trainable_variables],
                    [v.numpy().copy() for v in model.method.weighting_net.trainable_variables])
    steps = tiny.batches(2)
    for batch, meta in steps:
        slow.step(method, batch, meta)
    model.fit(tiny.paired_dataset(steps), epochs=1, verbose=0)

    for got, want in zip(model.backbone.trainable_variables, slow.theta):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-9)
    for got, want in zip(model.method.weighting_net.trainable_variables, slow.phi):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-9)
    # The step really moved both networks (the comparison is not vacuous).
    assert not np.allclose(model.backbone.trainable_variables[0].numpy(),
                           tiny.mlp().trainable_variables[0].numpy())


class RecordingGDW(gdw_tf.methods.GDW):
    """GDW that keeps the meta-gradients it computed (eager use only)."""

    def second_stage(self, model, batch, state, meta_grads, source_grads):
        self.recorded = ([g.numpy() for g in meta_grads], source_grads[0].numpy(),
                         state.weights.numpy())
        return super().second_stage(model, batch, state, meta_grads, source_grads)


def test_meta_gradients_match_central_finite_differences():
    method = RecordingGDW(hidden_units=4)
    model = tiny.gdw_model(method)
    (batch, meta), = tiny.batches(1, seed=7)
    theta = [v.numpy() for v in model.backbone.trainable_variables]
    phi = [v.numpy().copy() for v in method.weighting_net.trainable_variables]
    batch_tf = {k: tf.constant(v) for k, v in batch.items()}
    method.train_gradients(model, batch_tf, tuple(tf.constant(v) for v in meta))
    d_phi, d_omega, omega0 = method.recorded

    x, labels = batch["image"], batch["label"]
    y = np.eye(tiny.NUM_CLASSES)[labels]
    p = softmax(forward(theta, x))
    costs = -np.log(np.sum(p * y, axis=1))

    def meta_loss(omega):
        return tiny.meta_loss_after_virtual_step(theta, x, labels, meta, omega, LR)

    def omega_of(phi_values):
        return constrain(vnet(phi_values, costs)[0] * np.ones_like(p), p, y)

    h = 1e-6
    fd_omega = np.zeros_like(omega0)
    for idx in np.ndindex(*omega0.shape):
        plus, minus = omega0.copy(), omega0.copy()
        plus[idx] += h
        minus[idx] -= h
        fd_omega[idx] = (meta_loss(plus) - meta_loss(minus)) / (2 * h)
    np.testing.assert_allclose(d_omega, fd_omega, rtol=1e-5, atol=1e-10)

    for k, fd in enumerate(tiny.central_differences(lambda p: meta_loss(omega_of(p)), phi, h)):
        np.testing.assert_allclose(d_phi[k], fd, rtol=1e-5, atol=1e-10)
    assert np.abs(d_omega).max() > 1e-6  # not vacuous


def test_virtual_and_meta_passes_leave_batch_norm_statistics_alone():
    """BN moving statistics move exactly once per step, from the training batch."""
    model = tiny.gdw_model("gdw", backbone=tiny.mlp(batch_norm=True))
    steps = tiny.batches(1, seed=3)
    model.fit(tiny.paired_dataset(steps), epochs=1, verbose=0)
    bn = model.backbone.layers[0]
    x = steps[0][0]["image"]
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.01 * x.mean(0), rtol=1e-9)
    np.testing.assert_allclose(bn.moving_variance.numpy(),
                               0.99 + 0.01 * x.var(0), rtol=1e-9)


def test_gdw_meta_gradient_on_a_keras_application_is_the_class_level_identity():
    """A GDW step on keras.applications MobileNetV3Small (depthwise convs, BatchNorm in
    training mode; float64): d meta loss / d omega_ij = -lr/n (p_ij - y_ij) (J u)_ij, where
    u = d meta loss / d theta_hat at the virtual step and J u is the forward-mode derivative
    of the training batch's logits along u (the whole batch's: BatchNorm couples examples).
    The reference uses first-order tapes and a ForwardAccumulator, no nested tapes."""
    import keras

    from gdw_tf import models

    keras.config.set_dtype_policy("float64")
    try:
        keras.utils.set_random_seed(0)
        backbone = models.build("keras:MobileNetV3Small", tiny.NUM_CLASSES, (32, 32, 3),
                                minimalistic=True)
    finally:
        keras.config.set_dtype_policy("float32")
    method = RecordingGDW(hidden_units=4)
    model = tiny.gdw_model(method, lr=LR, backbone=backbone)
    rng = np.random.default_rng(5)
    n, m = 6, 4
    x = tf.constant(rng.normal(size=(n, 32, 32, 3)))
    labels = rng.integers(0, tiny.NUM_CLASSES, n).astype("int32")
    meta = (tf.constant(rng.normal(size=(m, 32, 32, 3))),
            tf.constant(rng.integers(0, tiny.NUM_CLASSES, m).astype("int32")))
    theta = [tf.constant(v.numpy()) for v in backbone.trainable_variables]
    statistics = [tf.constant(v.numpy()) for v in backbone.non_trainable_variables]

    out = method.train_gradients(model, {"image": x, "label": tf.constant(labels)}, meta)
    _, d_omega, omega = method.recorded

    def logits_at(params, images):
        return backbone.stateless_call(params, statistics, images, training=True)[0]

    y = np.eye(tiny.NUM_CLASSES)[labels]
    p = softmax(logits_at(theta, x).numpy())
    with tf.GradientTape() as tape:
        tape.watch(theta)
        logits = logits_at(theta, x)
    grads = tape.gradient(logits, theta, output_gradients=omega * (p - y) / n)
    lr = float(np.float32(LR))  # the optimizer holds its learning rate in float32
    theta_hat = [t - lr * g for t, g in zip(theta, grads)]
    with tf.GradientTape() as tape:
        tape.watch(theta_hat)
        meta_loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            meta[1], logits_at(theta_hat, meta[0])))
    u = tape.gradient(meta_loss, theta_hat)
    with tf.autodiff.ForwardAccumulator(theta, u) as accumulator:
        logits = logits_at(theta, x)
    expected = -lr / n * (p - y) * accumulator.jvp(logits).numpy()

    np.testing.assert_allclose(float(out.meta_loss), float(meta_loss), rtol=1e-10)
    np.testing.assert_allclose(d_omega, expected, rtol=1e-6, atol=1e-12)
    assert len(theta) > 100 and np.abs(expected).max() > 1e-6  # a deep backbone, not vacuous
