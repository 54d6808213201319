"""Metrics beyond keras.metrics used for GDW's diagnostics."""
import keras
import tensorflow as tf


def bin_counts(values, bins, low, high, sample_weight=None):
    """float32 [bins]: (weighted) counts of values (any shape) in equal-width bins over
    [low, high], values outside clamped to the end bins."""
    values = tf.cast(tf.reshape(values, [-1]), tf.float32)
    width = (high - low) / bins
    index = tf.clip_by_value(tf.cast(tf.floor((values - low) / width), tf.int32), 0, bins - 1)
    counts = tf.one_hot(index, bins, dtype=tf.float32)  # no XLA kernel for histograms
    if sample_weight is not None:
        counts *= tf.cast(tf.reshape(sample_weight, [-1, 1]), tf.float32)
    return tf.reduce_sum(counts, axis=0)


@keras.saving.register_keras_serializable(package="gdw_tf")
class WeightSeparation(keras.metrics.Metric):
    """Binned ROC-AUC with which weights rank one group above another.

    update_state(higher, lower): the weights [k] of the group expected higher (the clean
    meta examples) and of the other (the training examples). result(): P(w_higher >
    w_lower) + P(same bin) / 2 over `bins` bins on [low, high] (diagnostics.binned_auc),
    0.5 while either group is empty. Counts from replicas add up.
    """

    def __init__(self, bins=400, low=0.0, high=2.0, name="weight_separation", **kwargs):
        super().__init__(name=name, **kwargs)
        self.bins, self.low, self.high = int(bins), float(low), float(high)
        self.higher = self.add_variable((self.bins,), "zeros", dtype="float32", name="higher",
                                        aggregation="sum")
        self.lower = self.add_variable((self.bins,), "zeros", dtype="float32", name="lower",
                                       aggregation="sum")

    def update_state(self, higher, lower):
        self.higher.assign_add(bin_counts(higher, self.bins, self.low, self.high))
        self.lower.assign_add(bin_counts(lower, self.bins, self.low, self.high))

    def result(self):
        n_high, n_low = tf.reduce_sum(self.higher), tf.reduce_sum(self.lower)
        below = tf.cumsum(self.lower) - self.lower  # lower-group weights in lower bins
        pairs = tf.reduce_sum(self.higher * (below + self.lower / 2))
        return tf.where(n_high * n_low > 0, pairs / tf.maximum(n_high * n_low, 1.0), 0.5)

    def reset_state(self):
        self.higher.assign(tf.zeros_like(self.higher))
        self.lower.assign(tf.zeros_like(self.lower))

    def get_config(self):
        return {**super().get_config(), "bins": self.bins, "low": self.low, "high": self.high}


@keras.saving.register_keras_serializable(package="gdw_tf")
class Histogram(keras.metrics.Metric):
    """Counts of values in `bins` equal-width bins over [low, high] (clamped).

    `result()` is the count vector [bins]; counts from replicas add up.
    Used for the distribution of target weights on clean vs noisy examples
    (paper Figure 3).
    """

    def __init__(self, bins=40, low=0.0, high=2.0, name="histogram", **kwargs):
        super().__init__(name=name, **kwargs)
        self.bins, self.low, self.high = int(bins), float(low), float(high)
        self.counts = self.add_variable((self.bins,), "zeros", dtype="float32", name="counts",
                                        aggregation="sum")

    def update_state(self, values, sample_weight=None):
        """Adds values [k] (any shape) with weights (0 excludes an entry)."""
        self.counts.assign_add(bin_counts(values, self.bins, self.low, self.high, sample_weight))

    def result(self):
        return tf.identity(self.counts)

    def reset_state(self):
        self.counts.assign(tf.zeros_like(self.counts))

    def edges(self):
        step = (self.high - self.low) / self.bins
        return [self.low + i * step for i in range(self.bins + 1)]

    def get_config(self):
        return {**super().get_config(), "bins": self.bins, "low": self.low, "high": self.high}
