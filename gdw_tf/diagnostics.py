"""Per-batch diagnostics of the learned weights (paper Figures 3 and 5).

Each function returns {metric name: (values [k], sample weights [k])}; the
model averages them into `keras.metrics.Mean` trackers. A sample weight of 0
excludes an entry (for example noisy examples from the clean average).
"""
import dataclasses

import numpy as np
import tensorflow as tf

TARGET_WEIGHT = "target_weight"
TARGET_WEIGHT_CLEAN = "target_weight_clean"
TARGET_WEIGHT_NOISY = "target_weight_noisy"
INCREASED_NONTARGET_CLEAN = "increased_nontarget_clean"
INCREASED_TRUETARGET_NOISY = "increased_truetarget_noisy"
INCREASED_NONTARGET_NOISY = "increased_nontarget_noisy"

NEEDS_TRUE_LABEL = (TARGET_WEIGHT_CLEAN, TARGET_WEIGHT_NOISY,
                    INCREASED_NONTARGET_CLEAN, INCREASED_TRUETARGET_NOISY,
                    INCREASED_NONTARGET_NOISY)


def target_weights(weights, labels):
    """The weight at each example's label position: [n, C] or [n, 1] -> [n]."""
    if weights.shape[-1] == 1:
        return weights[:, 0]
    return tf.gather(weights, tf.cast(labels, tf.int32), axis=1, batch_dims=1)


def clean_and_noisy(labels, true_labels):
    """bool [n] masks (clean, noisy); an example whose true label is unknown (-1) is neither."""
    true_labels = tf.cast(true_labels, tf.int64)
    known = true_labels >= 0
    same = tf.equal(tf.cast(labels, tf.int64), true_labels)
    return known & same, known & ~same


def target_weight_stats(weights, labels, true_labels=None):
    """Mean target weight, and split into clean / noisy examples if known."""
    omega_t = target_weights(weights, labels)
    stats = {TARGET_WEIGHT: (omega_t, None)}
    if true_labels is not None:
        clean, noisy = clean_and_noisy(labels, true_labels)
        stats[TARGET_WEIGHT_CLEAN] = (omega_t, tf.cast(clean, omega_t.dtype))
        stats[TARGET_WEIGHT_NOISY] = (omega_t, tf.cast(noisy, omega_t.dtype))
    return stats


def increase_fractions(before, after, labels, true_labels):
    """Fractions of class-level weights that increased from stage 1 to 2.

    Split as in Figure 5: non-target weights on clean examples, the true-target
    weight on noisy examples, and the other non-target weights on noisy ones
    (excluding both the label and the true label). Examples whose true label
    is unknown (-1) count in neither.

    Args:
      before, after: float [n, C]; labels, true_labels: int [n].
    """
    num_classes = tf.shape(before)[-1]
    dtype = before.dtype
    increased = tf.cast(after > before, dtype)
    target = tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=dtype)
    true_target = tf.one_hot(tf.cast(true_labels, tf.int32), num_classes,
                             dtype=dtype)
    clean, noisy = (tf.cast(m, dtype)[:, None] for m in clean_and_noisy(labels, true_labels))
    non_target = (1.0 - target) * (1.0 - true_target)
    def flat(mask):
        return tf.reshape(mask, [-1])

    values = flat(increased)
    return {
        INCREASED_NONTARGET_CLEAN: (values, flat(clean * (1.0 - target))),
        INCREASED_TRUETARGET_NOISY: (values, flat(noisy * true_target)),
        INCREASED_NONTARGET_NOISY: (values, flat(noisy * non_target)),
    }


def binned_auc(clean, noisy):
    """ROC-AUC with which weights rank clean above noisy examples, from binned counts.

    clean, noisy: counts per weight bin, bins ascending (e.g. an epoch's target-weight
    histograms). Returns P(w_clean > w_noisy) + P(same bin) / 2, or None when either
    group is empty. 1 = every clean weight above every noisy one, 0.5 = no separation.
    """
    clean, noisy = np.asarray(clean, float), np.asarray(noisy, float)
    if clean.sum() == 0 or noisy.sum() == 0:
        return None
    below = np.cumsum(noisy) - noisy  # noisy examples in lower bins
    return float((clean * (below + noisy / 2)).sum() / (clean.sum() * noisy.sum()))


# The truth-free check of the learned weights (GDWModel.weight_checks).
WEIGHT_CHECK_META = "weight_check_meta_auc"
WEIGHT_CHECK_FIT = "weight_check_fit_auc"
TRUSTED_FIT_AUC = 0.6  # how it was fixed: docs/evidence.md, "When the weights can be trusted"


@dataclasses.dataclass(frozen=True)
class WeightTrust:
    """What a run's own history says about its weights, with no ground truth.

    fit_auc: last epoch's ROC-AUC with which the real step's target weights rank the
    training examples the model fits (predicts their given label) above those it does
    not; weights that single out wrong labels give the fitted examples more weight.
    meta_auc: the same for the clean meta examples above the training examples (first-
    stage weights; kept for comparison, biased low because the meta examples are not
    trained on). trusted: fit_auc >= TRUSTED_FIT_AUC.
    """
    fit_auc: float
    meta_auc: float
    trusted: bool
    threshold: float = TRUSTED_FIT_AUC


def weight_trust(history):
    """`WeightTrust` from a run's history (metric name -> per-epoch values), or None
    when the method logs no check."""
    fit, meta = history.get(WEIGHT_CHECK_FIT), history.get(WEIGHT_CHECK_META)
    if not fit or not meta:
        return None
    return WeightTrust(float(fit[-1]), float(meta[-1]), float(fit[-1]) >= TRUSTED_FIT_AUC)
