"""Losses and weight transforms of Generalized Data Weighting.

Notation (docs/algorithm.md): a batch of n examples, C classes, logits l [n, C],
p = softmax(l), Y the one-hot labels, omega [n, C] the class-level weights.
"""
import tensorflow as tf

# The reference clips the target probability here so 1 - p_t never reaches 0.
MAX_TARGET_PROB = 0.999


def cross_entropy(labels, logits):
    """Per-example softmax cross-entropy, [n] int labels, [n, C] logits -> [n]."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=logits)


def class_weighted_cross_entropy(labels, logits, weights):
    """Cross-entropy whose logit gradient is re-weighted class by class.

    Forward: the plain per-example cross-entropy CE(l_i, y_i), shape [n]; the
    weights do not change the value. Backward: the gradient that reaches the
    logits is `weights * (p - Y)` times the upstream gradient of each example,
    so `tf.reduce_mean` of the result back-propagates `omega * (p - Y) / n`
    (paper Eq. 2). That gradient is built from differentiable ops, so an outer
    tape sees how it depends on `weights` (and on the logits): this is what
    makes dL_meta/domega available after a virtual step.

    Args:
      labels: int [n], values in [0, C).
      logits: float [n, C].
      weights: float [n, C], or broadcastable to it ([n, 1] gives instance
        weighting, a scalar 1 gives plain cross-entropy).
    Returns:
      float [n] cross-entropy values.
    """
    labels = tf.cast(labels, tf.int32)
    weights = tf.cast(weights, logits.dtype)

    @tf.custom_gradient
    def _loss(logits, weights):
        def grad(upstream):
            residual = tf.nn.softmax(logits) - tf.one_hot(
                labels, tf.shape(logits)[-1], dtype=logits.dtype)
            return upstream[:, None] * weights * residual, None
        return cross_entropy(labels, logits), grad

    return _loss(logits, weights)


def zero_mean_constraint(weights, probs, labels, max_prob=MAX_TARGET_PROB):
    """Replaces each target weight so that sum_j omega_j (p_j - Y_j) = 0.

    omega_t = sum_{j != t} omega_j p_j / (1 - min(p_t, max_prob))  (paper Eq. 4).
    `probs` is treated as a constant (gradients do not flow into it); the
    gradient to the non-target weights does flow.

    Args:
      weights: float [n, C]; probs: float [n, C]; labels: int [n].
    Returns:
      float [n, C], the constrained weights.
    """
    probs = tf.stop_gradient(tf.cast(probs, weights.dtype))
    target = tf.one_hot(tf.cast(labels, tf.int32), tf.shape(weights)[-1],
                        dtype=weights.dtype)
    p_target = tf.reduce_sum(probs * target, axis=-1)
    non_target_mass = tf.reduce_sum(weights * probs * (1.0 - target), axis=-1)
    omega_t = non_target_mass / (1.0 - tf.minimum(p_target, max_prob))
    return weights * (1.0 - target) + omega_t[:, None] * target


def second_stage_update(weights, meta_grads, grad_l1_norm, outer_lr=100.0,
                        clip=0.2, bounds=(1e-6, 1e6)):
    """One descent step on the class-level weights (paper Eq. 11), then clamp.

    omega' = clamp(omega - clip(outer_lr * g / ||g||_1, -clip, clip), bounds).
    The caller applies `zero_mean_constraint` afterwards. `grad_l1_norm` is the
    sum of |g| over the whole global batch (all replicas), see
    `gdw_tf.distributed.replica_sum`. A zero norm leaves the weights unchanged.

    Args:
      weights, meta_grads: float [n, C]; grad_l1_norm: float scalar.
    Returns:
      float [n, C].
    """
    step = tf.math.divide_no_nan(outer_lr * meta_grads,
                                 tf.cast(grad_l1_norm, meta_grads.dtype))
    updated = weights - tf.clip_by_value(step, -clip, clip)
    return tf.clip_by_value(updated, bounds[0], bounds[1])
