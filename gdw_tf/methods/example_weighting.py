"""L2RW and INSW: instance weights read off the meta-gradient of the weights.

Both run the bi-level loop with first-stage instance weights w [n, 1] watched
as an outer source, so the meta step yields g_i = dL_meta/dw_i. The real step
uses non-negative weights normalised to sum to one over the global batch;
they are reported (and applied to the mean loss) multiplied by the global
batch size, so 1 means "as in plain training".

With meta_interval=k > 1, INSW's steps between meta steps use the batch's
current table rows, normalised as above (the table is neither decayed nor
updated); L2RW rejects k > 1: its weights exist only within a meta step.
"""
import tensorflow as tf

from gdw_tf.distributed import global_batch_size
from gdw_tf.methods.bilevel import BilevelMethod, FirstStage
from gdw_tf.methods.method import register_method
from gdw_tf.methods.tables import (
    add_table,
    check_num_train,
    normalise_over_batch,
    read_rows,
    require_index,
    write_rows,
)


class MetaGradientWeights(BilevelMethod):
    """Shared part: w is an outer source; the real weights are normalised."""

    def outer_sources(self, state):
        return [state.weights]

    def normalised(self, batch, weights):
        """The real step's weights from non-negative weights [n, 1] (any scale): summing
        to the global batch size over the global batch."""
        weights = tf.stop_gradient(weights)
        n_global = global_batch_size(batch["label"], weights.dtype)
        return n_global * normalise_over_batch(weights)

    def weights_without_meta(self, batch, state):
        return self.normalised(batch, state.weights)


@register_method("l2rw")
class L2RW(MetaGradientWeights):
    """Learning to Reweight (Ren et al., 2018): weights from one meta-gradient.

    Per batch, eps = 0 [n, 1] weights the virtual step (so theta_hat = theta)
    and w_i = max(-dL_meta/deps_i, 0) / sum_j max(-dL_meta/deps_j, 0), with an
    all-zero batch giving all-zero weights (the paper's delta term). Nothing
    is learned across steps and there are no options (the paper's method has
    no hyper-parameters beyond the classifier's), and meta_interval must be 1.
    """
    learns_across_steps = False

    def first_stage(self, logits, batch):
        # A fresh zero tensor each step, watched by the outer tape.
        return FirstStage(weights=tf.zeros([tf.shape(logits)[0], 1], logits.dtype))

    def second_stage(self, model, batch, state, meta_grads, source_grads):
        return self.normalised(batch, tf.nn.relu(-source_grads[0]))


@register_method("insw")
class INSW(MetaGradientWeights):
    """Instance weights learned per example (Hu et al., 2019), one per row.

    A table w of num_train weights (all `initial_weight` at first) weights
    the virtual step; after the meta step the batch's rows become
        w_i <- max(w_i / table_decay - weight_learning_rate * g_i, min_weight)
    with g_i = dL_meta/dw_i for the virtual step taken on the SUMMED weighted
    loss (theta_hat = theta - lr * sum_i w_i grad_i, as the reference code's
    per-example deltas): the loop's mean-loss gradient times the global batch.
    The real step uses the updated rows normalised to sum one over the batch.
    Defaults from the reference scripts: initial_weight=1, table_decay=2,
    weight_learning_rate=1, min_weight=1e-5. `num_train` (required) sizes
    the table: memory grows as 4 * num_train bytes.
    """

    def __init__(self, num_train=None, initial_weight=1.0, table_decay=2.0,
                 weight_learning_rate=1.0, min_weight=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.num_train = check_num_train(num_train, "insw")
        self.initial_weight = float(initial_weight)
        self.table_decay = float(table_decay)
        self.weight_learning_rate = float(weight_learning_rate)
        self.min_weight = float(min_weight)
        if self.table_decay <= 0:
            raise ValueError(f"insw: table_decay must be > 0, got {table_decay!r}")
        if self.min_weight <= 0:
            raise ValueError(f"insw: min_weight must be > 0, got {min_weight!r}")

    @classmethod
    def options_from_data(cls, bundle, epochs=None, noise_rate=0.0):
        return {"num_train": int(bundle.num_train)}

    def setup(self, model):
        self.table = add_table(self, "instance_weights", self.num_train,
                               value=self.initial_weight)

    def get_config(self):
        return {**super().get_config(), "num_train": self.num_train,
                "initial_weight": self.initial_weight, "table_decay": self.table_decay,
                "weight_learning_rate": self.weight_learning_rate,
                "min_weight": self.min_weight}

    def first_stage(self, logits, batch):
        index = require_index(batch, "insw")
        weights = tf.cast(read_rows(self.table, index), logits.dtype)[:, None]
        return FirstStage(weights=weights, index=index)

    def second_stage(self, model, batch, state, meta_grads, source_grads):
        weights = tf.stop_gradient(state.weights)
        n_global = global_batch_size(batch["label"], weights.dtype)
        summed_loss_grad = n_global * source_grads[0]
        updated = tf.maximum(
            weights / self.table_decay - self.weight_learning_rate * summed_loss_grad,
            self.min_weight)
        write_rows(self.table, state.index, updated[:, 0])
        return self.normalised(batch, updated)
