"""soft_label and gen_label: per-example soft targets learned from the meta set.

Both keep a table of label parameters (one row per training example, read by
`batch["index"]`) that defines soft targets q [n, C], and train with the
soft-target cross-entropy -sum_j q_j log softmax(l)_j (gradient p - q). The
bi-level loop watches the batch's parameter rows, the virtual step uses q,
and the meta-gradient g updates the rows, which are written back before the
real step uses the new targets. As for INSW, g is taken for the virtual step
on the SUMMED loss (the loop's mean-loss gradient times the global batch).

The weights a step reports are the targets q [n, C], so the `target_weight`
metrics give the mass the learned labels keep on the given label.
With meta_interval=k > 1 the steps between meta steps train on the targets of
the batch's current rows (the table is not updated).
"""
import tensorflow as tf

from gdw_tf.distributed import global_batch_size
from gdw_tf.methods.bilevel import BilevelMethod, FirstStage
from gdw_tf.methods.method import register_method
from gdw_tf.methods.tables import add_table, check_num_train, read_rows, require_index, write_rows


def soft_target_cross_entropy(targets, logits):
    """-sum_j q_j log softmax(l)_j per example: [n, C], [n, C] -> [n].

    Built from plain ops so that it is differentiable twice in both arguments
    (the fused TF op drops the targets' part of the second-order gradient).
    """
    return -tf.reduce_sum(tf.cast(targets, logits.dtype) * tf.nn.log_softmax(logits), axis=-1)


class LearnedTargets(BilevelMethod):
    """Shared loop for per-example label parameters (a table of `row_shape`).

    Subclasses define `targets(params, labels)` -> q [n, C] and `project`
    (applied after the descent step on the rows).
    """
    row_shape = ()
    table_name = "label_parameters"

    def __init__(self, num_train=None, label_learning_rate=1.0, **kwargs):
        super().__init__(**kwargs)
        self.num_train = check_num_train(num_train, self.method_name)
        self.label_learning_rate = float(label_learning_rate)

    @classmethod
    def options_from_data(cls, bundle, epochs=None, noise_rate=0.0):
        return {"num_train": int(bundle.num_train)}

    def setup(self, model):
        self.num_classes = model.num_classes
        shape = tuple(self.num_classes if d == "C" else d for d in self.row_shape)
        self.table = add_table(self, self.table_name, self.num_train, shape)

    def get_config(self):
        return {**super().get_config(), "num_train": self.num_train,
                "label_learning_rate": self.label_learning_rate}

    def targets(self, params, labels):
        raise NotImplementedError

    def project(self, params):
        return params

    def first_stage(self, logits, batch):
        index = require_index(batch, self.method_name)
        params = tf.cast(read_rows(self.table, index), logits.dtype)
        return FirstStage(rows=params, index=index)

    def outer_sources(self, state):
        return [state.rows]

    def virtual_losses(self, logits, batch, state):
        # q is built here, after the outer tape started watching the rows.
        return soft_target_cross_entropy(self.targets(state.rows, batch["label"]), logits)

    def second_stage(self, model, batch, state, meta_grads, source_grads):
        params = tf.stop_gradient(state.rows)
        n_global = global_batch_size(batch["label"], params.dtype)
        updated = self.project(params - self.label_learning_rate * n_global * source_grads[0])
        write_rows(self.table, state.index, updated)
        return tf.stop_gradient(self.targets(updated, batch["label"]))

    def weights_without_meta(self, batch, state):
        return tf.stop_gradient(self.targets(state.rows, batch["label"]))

    def real_losses(self, logits, batch, weights):
        return soft_target_cross_entropy(weights, logits)

    def plain_weights(self, logits, batch):
        """One-hot targets of the given labels: soft-target CE is then plain CE."""
        return tf.one_hot(tf.cast(batch["label"], tf.int32), self.num_classes, dtype=logits.dtype)


@register_method("soft_label")
class SoftLabel(LearnedTargets):
    """Learned per-example label smoothing (Vyas et al., 2020).

    Example i trains on q_i = (1 - a_i) * onehot(y_i) + a_i / C with a
    smoothing parameter a_i in [0, 1] per example, initially 0 (so the loss
    starts as plain cross-entropy); after each meta step
    a_i <- clip(a_i - label_learning_rate * g_i, 0, 1).
    Options: num_train (required, table size: 4 * num_train bytes),
    label_learning_rate=1.0 (our choice: the GDW paper gives none and the
    original's step size belongs to a different parameterisation).
    """
    table_name = "smoothing"

    def targets(self, params, labels):
        onehot = tf.one_hot(tf.cast(labels, tf.int32), self.num_classes, dtype=params.dtype)
        smoothing = params[:, None]
        return (1.0 - smoothing) * onehot + smoothing / self.num_classes

    def project(self, params):
        return tf.clip_by_value(params, 0.0, 1.0)


@register_method("gen_label")
class GenLabel(LearnedTargets):
    """Meta soft-label generation (Algan and Ulusoy, 2021, "MSLG").

    Every example has label logits K * onehot(y_i) + d_i, with the offsets
    d_i [C] stored in the table (zeros at first, i.e. initialised from the
    given label as MSLG's K-scaled one-hot) and q_i = softmax of the logits;
    after each meta step d_i <- d_i - label_learning_rate * g_i.
    Options: num_train (required; table 4 * C * num_train bytes),
    label_scale K=10 (MSLG), label_learning_rate=1.0 (our choice; MSLG's
    beta=4000 goes with its own loss normalisation and fixed virtual step).
    MSLG trains on KL(p || q) plus an entropy term after a cross-entropy
    warm-up; here the targets enter the soft-target cross-entropy shared with
    soft_label, and there is no warm-up stage.
    """
    row_shape = ("C",)
    table_name = "label_offsets"

    def __init__(self, label_scale=10.0, **kwargs):
        super().__init__(**kwargs)
        self.label_scale = float(label_scale)

    def get_config(self):
        return {**super().get_config(), "label_scale": self.label_scale}

    def targets(self, params, labels):
        onehot = tf.one_hot(tf.cast(labels, tf.int32), self.num_classes, dtype=params.dtype)
        return tf.nn.softmax(self.label_scale * onehot + params)
