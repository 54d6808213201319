"""The per-example record of a training run, kept in the graph beside the model.

`ExampleRecord` keeps one row per training example (addressed by the stable
`batch["index"]`): a moving average of the target weight the step actually used
(weight at the given label, `diagnostics.target_weights`) and of the predicted
class probabilities, plus the given and true labels (set from the data by
`assign_labels`, and by every visit). `gdw_tf.label_issues`
turns it into a ranking of suspected label errors after training.

The average: after v visits of an example its row moves towards the new value
by max(1 - decay, 1 / v), i.e. the plain mean of the first 1 / (1 - decay)
visits, an exponential moving average afterwards (decay=1: the mean of all).
Visits are one per epoch, so the default decay 0.98 averages the last ~50
epochs: long against the epoch-to-epoch wobble of the weights and against the
first epochs, when the weighting is not learned yet.
"""
import dataclasses

import keras
import numpy as np
import tensorflow as tf

from gdw_tf.methods.tables import add_table, read_rows, require_index, write_rows

DEFAULT_DECAY = 0.98
RECORD_NAME = "example_record"  # GDWModel attribute and checkpoint key of the record

# Columns of a record row: averaged target weight, visits, given label, true
# label (-1 unknown), then the C averaged class probabilities.
_WEIGHT, _VISITS, _LABEL, _TRUE, _PROBS = 0, 1, 2, 3, 4


class ExampleRecord(keras.layers.Layer):
    """A float32 table [num_train, 4 + C] of per-example averages (module doc).

    Updated by every training step (`GDWModel._update_train_metrics`); saved with the
    model and its checkpoints. Under a multi-replica strategy every replica writes the
    rows of the whole global batch (`tables.write_rows`), so the copies stay
    identical.
    """

    def __init__(self, num_train, num_classes, decay=DEFAULT_DECAY, **kwargs):
        kwargs.setdefault("name", RECORD_NAME)
        super().__init__(**kwargs)
        if isinstance(num_train, bool) or int(num_train) != num_train or num_train < 1:
            raise ValueError(f"record_examples must be a positive integer, got {num_train!r}")
        if not 0.0 < float(decay) <= 1.0:
            raise ValueError(f"record_decay must be in (0, 1], got {decay!r}")
        self.num_train, self.num_classes = int(num_train), int(num_classes)
        self.decay = float(decay)
        self.table = add_table(self, "rows", self.num_train, (_PROBS + self.num_classes,))
        self.built = True

    def call(self, inputs):
        raise TypeError("ExampleRecord is updated by GDWModel's train step, not called")

    def update(self, batch, target_weights, probabilities):
        """Moves the rows of `batch["index"]` [n] towards target_weights [n] and
        probabilities [n, C]."""
        index = require_index(batch, "record of label issues")
        rows = read_rows(self.table, index)
        visits = rows[:, _VISITS] + 1.0
        rate = tf.maximum(1.0 - self.decay, 1.0 / visits)[:, None]
        old = tf.concat([rows[:, _WEIGHT:_WEIGHT + 1], rows[:, _PROBS:]], axis=1)
        new = tf.concat([tf.cast(target_weights, tf.float32)[:, None],
                         tf.cast(probabilities, tf.float32)], axis=1)
        averaged = old + rate * (tf.stop_gradient(new) - old)
        labels = tf.cast(batch["label"], tf.float32)
        true = (tf.cast(batch["true_label"], tf.float32) if "true_label" in batch
                else -tf.ones_like(labels))
        return write_rows(self.table, index, tf.concat(
            [averaged[:, :1], visits[:, None], labels[:, None], true[:, None], averaged[:, 1:]],
            axis=1))

    def assign_labels(self, given, true=None):
        """Sets every row's given label int [N] and true label int [N] (-1 or None: unknown)
        from the data, so that the rows of examples no step visits know them too."""
        rows = np.array(self.table.numpy())
        rows[:, _LABEL] = np.asarray(given, np.float32)
        rows[:, _TRUE] = -1.0 if true is None else np.asarray(true, np.float32)
        self.table.assign(rows)

    def arrays(self):
        """The record as `RecordArrays` (numpy)."""
        rows = np.asarray(self.table.numpy())
        return RecordArrays(target_weight=rows[:, _WEIGHT],
                            visits=rows[:, _VISITS].astype(np.int64),
                            given_label=rows[:, _LABEL].astype(np.int64),
                            true_label=rows[:, _TRUE].astype(np.int64),
                            probabilities=rows[:, _PROBS:])

    def get_config(self):
        return {**super().get_config(), "num_train": self.num_train,
                "num_classes": self.num_classes, "decay": self.decay}


@dataclasses.dataclass
class RecordArrays:
    """`ExampleRecord` rows: float [N] target_weight, int [N] visits (0 = never seen),
    given_label, true_label (-1 unknown), float [N, C] probabilities."""
    target_weight: np.ndarray
    visits: np.ndarray
    given_label: np.ndarray
    true_label: np.ndarray
    probabilities: np.ndarray
