"""focal and class_balanced: fixed loss re-weighting for class imbalance (no meta set)."""
import numpy as np
import tensorflow as tf

from gdw_tf.distributed import global_batch_size
from gdw_tf.methods.method import (
    Method,
    StepOutputs,
    loss_gradients,
    parameter_dtype,
    register_method,
    weighted_gradients,
)

# 1 - p_t is kept above this so that (1 - p_t)^gamma has a finite gradient.
_MIN_MISSING_MASS = 1e-12


def focal_loss(labels, logits, gamma):
    """Per-example focal loss -(1 - p_t)^gamma log p_t: [n], [n, C] -> [n].

    gamma = 0 is exactly the softmax cross-entropy (values and gradients).
    """
    log_probs = tf.nn.log_softmax(logits)
    log_pt = tf.gather(log_probs, tf.cast(labels, tf.int32), axis=1, batch_dims=1)
    if gamma == 0:
        return -log_pt
    return -focal_factor(log_pt, gamma) * log_pt


def focal_factor(log_pt, gamma):
    """The modulating factor (1 - p_t)^gamma from log p_t [n]."""
    missing = tf.maximum(-tf.math.expm1(log_pt), _MIN_MISSING_MASS)
    return tf.pow(missing, tf.cast(gamma, log_pt.dtype))


def effective_number_weights(class_counts, beta):
    """Class-balanced weights (Cui et al., 2019), float64 [C].

    w_c proportional to (1 - beta) / (1 - beta^n_c), the inverse effective
    number of samples of class c, scaled so that sum_c w_c = C. beta = 0
    gives all ones; beta -> 1 approaches inverse class frequency. Classes
    with no examples get weight 0 (they never occur in training).
    """
    counts = np.asarray(class_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0 or np.any(counts < 0):
        raise ValueError(
            f"class_balanced: class_counts must be a list of C >= 0 counts, got {class_counts!r}")
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"class_balanced: beta must be in [0, 1), got {beta!r}")
    if not counts.any():
        raise ValueError("class_balanced: class_counts are all zero")
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = (1.0 - beta) / (1.0 - np.power(beta, counts[present]))
    return weights * counts.size / weights.sum()


@register_method("focal")
class Focal(Method):
    """Focal loss (Lin et al., 2017/2020): -(1 - p_t)^gamma log p_t per example.

    Option gamma=2.0, the focal paper's default (its best value; the GDW paper
    does not state its own). The detection paper's alpha-balancing term is
    for its binary sigmoid form and is not used for softmax classification.
    Reports the modulating factor (1 - p_t)^gamma as the step's weights.
    """

    def __init__(self, gamma=2.0, **kwargs):
        super().__init__(**kwargs)
        self.gamma = float(gamma)
        if self.gamma < 0:
            raise ValueError(f"focal: gamma must be >= 0, got {gamma!r}")

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma}

    def train_gradients(self, model, batch, meta):
        labels = batch["label"]

        def total_loss(logits):
            n_global = global_batch_size(labels, logits.dtype)
            return tf.reduce_sum(focal_loss(labels, logits, self.gamma)) / n_global

        grads, logits = loss_gradients(model, batch["image"], total_loss)
        log_pt = tf.gather(tf.nn.log_softmax(tf.stop_gradient(logits)),
                           tf.cast(labels, tf.int32), axis=1, batch_dims=1)
        weights = focal_factor(log_pt, self.gamma)[:, None]
        return StepOutputs(grads, logits, weights, diagnostics=self.weight_stats(weights, batch))


@register_method("class_balanced")
class ClassBalanced(Method):
    """Class-balanced cross-entropy (Cui et al., 2019): example weight w_{y_i}.

    w from `effective_number_weights(class_counts, beta)` (sum C). Options:
    beta=0.9999 (the paper's CIFAR choice for softmax CE; it searched
    0.9-0.9999) and class_counts (C training counts by given label; the
    trainer derives them from `bundle.train_labels`).
    """

    def __init__(self, class_counts=None, beta=0.9999, **kwargs):
        super().__init__(**kwargs)
        if class_counts is None:
            raise ValueError(
                "class_balanced needs the option class_counts (training examples "
                "per class); the trainer derives it from the data")
        self.class_counts = [int(c) for c in class_counts]
        self.beta = float(beta)
        self.class_weights = effective_number_weights(self.class_counts, self.beta)

    @classmethod
    def options_from_data(cls, bundle, epochs=None, noise_rate=0.0):
        if bundle.train_labels is None:
            raise ValueError(
                "class_balanced needs per-class training counts, but this dataset "
                "is streamed (no bundle.train_labels): pass "
                "--method_option=class_counts=[...]")
        counts = np.bincount(np.asarray(bundle.train_labels, dtype=np.int64),
                             minlength=bundle.num_classes)
        return {"class_counts": counts.tolist()}

    def setup(self, model):
        if len(self.class_counts) != model.num_classes:
            raise ValueError(
                f"class_balanced: class_counts has {len(self.class_counts)} entries "
                f"but num_classes={model.num_classes}")

    def get_config(self):
        return {**super().get_config(), "class_counts": self.class_counts, "beta": self.beta}

    def train_gradients(self, model, batch, meta):
        table = tf.constant(self.class_weights, parameter_dtype(model.backbone))
        weights = tf.gather(table, tf.cast(batch["label"], tf.int32))[:, None]
        grads, logits = weighted_gradients(model, batch, weights)
        return StepOutputs(grads, logits, weights, diagnostics=self.weight_stats(weights, batch))
