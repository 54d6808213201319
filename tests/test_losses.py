"""The class-level weighted loss and the weight transforms, against the maths."""
import numpy as np
import pytest
import tensorflow as tf

from gdw_tf import losses


def _batch(n=6, c=4, seed=0):
    rng = np.random.default_rng(seed)
    logits = tf.constant(rng.normal(size=(n, c)) * 2, tf.float64)
    labels = tf.constant(rng.integers(0, c, n), tf.int32)
    weights = tf.constant(rng.uniform(0.1, 2.0, (n, c)), tf.float64)
    return logits, labels, weights


def test_forward_is_plain_cross_entropy():
    logits, labels, weights = _batch()
    value = losses.class_weighted_cross_entropy(labels, logits, weights)
    expected = -np.log(tf.nn.softmax(logits).numpy()[np.arange(6), labels.numpy()])
    np.testing.assert_allclose(value.numpy(), expected, rtol=1e-12)


def test_logit_gradient_is_omega_times_p_minus_y_over_n():
    logits, labels, weights = _batch()
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = tf.reduce_mean(losses.class_weighted_cross_entropy(labels, logits, weights))
    grad = tape.gradient(loss, logits).numpy()
    p = tf.nn.softmax(logits).numpy()
    y = np.eye(4)[labels.numpy()]
    np.testing.assert_allclose(grad, weights.numpy() * (p - y) / 6, rtol=1e-12)


def test_logit_gradient_is_differentiable_in_omega_and_logits():
    """d/d(omega, l) of <v, dL/dl> matches the analytic second derivatives."""
    logits, labels, weights = _batch()
    v = tf.constant(np.random.default_rng(1).normal(size=(6, 4)))
    with tf.GradientTape(persistent=True) as outer:
        outer.watch([logits, weights])
        with tf.GradientTape() as inner:
            inner.watch(logits)
            loss = tf.reduce_sum(losses.class_weighted_cross_entropy(labels, logits, weights))
        g = inner.gradient(loss, logits)
        inner_product = tf.reduce_sum(v * g)
    d_omega, d_logits = outer.gradient(inner_product, [weights, logits])
    p = tf.nn.softmax(logits).numpy()
    y = np.eye(4)[labels.numpy()]
    np.testing.assert_allclose(d_omega.numpy(), v.numpy() * (p - y), rtol=1e-12)
    # d/dl_k of sum_j v_j w_j (p_j - y_j) = sum_j v_j w_j p_j (delta_jk - p_k)
    u = v.numpy() * weights.numpy()
    expected = u * p - p * np.sum(u * p, axis=1, keepdims=True)
    np.testing.assert_allclose(d_logits.numpy(), expected, rtol=1e-10, atol=1e-14)


def test_zero_mean_identities():
    logits, labels, weights = _batch(n=8, c=5)
    p = tf.nn.softmax(logits)
    omega = losses.zero_mean_constraint(weights, p, labels).numpy()
    p, y = p.numpy(), np.eye(5)[labels.numpy()]
    np.testing.assert_allclose(np.sum(omega * (p - y), axis=1), 0, atol=1e-12)
    omega_t = np.sum(omega * y, axis=1, keepdims=True)
    p_prime = omega * p / np.sum(omega * p, axis=1, keepdims=True)
    np.testing.assert_allclose(omega * (p - y), omega_t * (p_prime - y), atol=1e-12)
    # Non-target entries are unchanged.
    np.testing.assert_array_equal(omega * (1 - y), weights.numpy() * (1 - y))


def test_zero_mean_constraint_clips_the_target_probability():
    logits = tf.constant([[20.0, 0.0, 0.0]], tf.float64)  # p_t ~ 1 - 4e-9
    omega = losses.zero_mean_constraint(
        tf.ones((1, 3), tf.float64), tf.nn.softmax(logits), tf.constant([0]))
    p = tf.nn.softmax(logits).numpy()[0]
    assert np.isfinite(omega.numpy()).all()
    np.testing.assert_allclose(omega[0, 0], (p[1] + p[2]) / (1 - 0.999))


def test_equal_class_weights_give_the_instance_weighted_gradient():
    """GDW with omega_i = w_i * 1 is MWNet's gradient of mean(w_i * CE_i)."""
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=(7, 5)))
    labels = tf.constant(rng.integers(0, 3, 7), tf.int32)
    w = tf.constant(rng.uniform(0, 1, (7, 1)))
    kernel = tf.Variable(rng.normal(size=(5, 3)))
    with tf.GradientTape(persistent=True) as tape:
        logits = tf.tanh(x) @ kernel
        gdw = tf.reduce_mean(losses.class_weighted_cross_entropy(
            labels, logits, w * tf.ones_like(logits)))
        mwnet = tf.reduce_mean(w[:, 0] * losses.cross_entropy(labels, logits))
    np.testing.assert_allclose(tape.gradient(gdw, kernel).numpy(),
                               tape.gradient(mwnet, kernel).numpy(), rtol=1e-12)


def test_second_stage_update_normalises_clips_and_clamps():
    omega = tf.constant([[0.5, 0.5], [0.3, 1e-6]], tf.float64)
    g = tf.constant([[1.0, -1.0], [0.001, 0.001]], tf.float64)
    l1 = tf.reduce_sum(tf.abs(g))
    out = losses.second_stage_update(omega, g, l1, outer_lr=1.0, clip=0.2).numpy()
    step = g.numpy() / l1.numpy()
    np.testing.assert_allclose(out[0], [0.5 - 0.2, 0.5 + 0.2])          # clipped
    np.testing.assert_allclose(out[1, 0], 0.3 - step[1, 0])              # plain step
    assert out[1, 1] == pytest.approx(1e-6)                              # clamped below
    unchanged = losses.second_stage_update(omega, tf.zeros_like(g), 0.0)
    np.testing.assert_array_equal(unchanged.numpy(), np.maximum(omega.numpy(), 1e-6))
