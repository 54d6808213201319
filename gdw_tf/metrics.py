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
        values = tf.cast(tf.reshape(values, [-1]), tf.float32)
        if sample_weight is not None:
            keep = tf.cast(tf.reshape(sample_weight, [-1]), tf.float32) > 0
            values = tf.boolean_mask(values, keep)
        counts = tf.histogram_fixed_width(values, [self.low, self.high], nbins=self.bins)
        self.counts.assign_add(tf.cast(counts, tf.float32))

    def result(self):
        return tf.identity(self.counts)

    def reset_state(self):
        self.counts.assign(tf.zeros_like(self.counts))

    def edges(self):
        step = (self.high - self.low) / self.bins
        return [self.low + i * step for i in range(self.bins + 1)]

    def get_config(self):
        return {**super().get_config(), "bins": self.bins, "low": self.low, "high": self.high}
