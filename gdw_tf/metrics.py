"""Metrics beyond keras.metrics used for GDW's diagnostics."""
import keras
import tensorflow as tf


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
        values = tf.cast(tf.reshape(values, [-1]), tf.float32)
        width = (self.high - self.low) / self.bins
        index = tf.clip_by_value(tf.cast(tf.floor((values - self.low) / width), tf.int32),
                                 0, self.bins - 1)
        counts = tf.one_hot(index, self.bins, dtype=tf.float32)  # no XLA kernel for histograms
        if sample_weight is not None:
            counts *= tf.cast(tf.reshape(sample_weight, [-1, 1]), tf.float32)
        self.counts.assign_add(tf.reduce_sum(counts, axis=0))

    def result(self):
        return tf.identity(self.counts)

    def reset_state(self):
        self.counts.assign(tf.zeros_like(self.counts))

    def edges(self):
        step = (self.high - self.low) / self.bins
        return [self.low + i * step for i in range(self.bins + 1)]

    def get_config(self):
        return {**super().get_config(), "bins": self.bins, "low": self.low, "high": self.high}
