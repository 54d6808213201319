"""The three-step bi-level loop shared by the meta-learning methods.

One iteration (docs/algorithm.md): (1) forward the training batch once and build
first-stage weights from meta-parameters; (2) a virtual SGD step
theta_hat = theta - lr * grad, kept differentiable w.r.t. the meta-parameters
(nested tapes: the inner one gives grad, the outer one records how grad depends
on the weights); (3) the meta loss at theta_hat on a meta batch and its
gradients; then the method's second stage, and the real gradient at theta from
the SAME forward pass (the persistent inner tape is re-entered), so one
iteration costs one training forward, one backward whose graph is kept, one
meta forward, one second-order backward and one more backward.

Opt-in approximation, `meta_interval=k` (default 1, the exact method): the
bi-level step runs only on every k-th optimizer step (iterations % k == 0);
the steps in between train once forward and once backward with the weights
the method's current meta-parameters give without a meta step
(`weights_without_meta`), at the cost of a plain step. `GDWModel` picks the kind
of step per iteration (see `GDWModel.make_train_function`).

Opt-in approximation, `virtual_scope` (default "all", the exact method): "head"
or an integer N makes the virtual step move only the backbone's last layer, or
last N layers, that have trainable weights (counted from the output; "head" is
the classifier). theta_hat then differs from theta only there, so the meta
forward needs no gradient below those layers and the second-order backward
stops at them: the iteration costs about one plain step plus one meta forward,
instead of 10/3 plain steps. The real step is unchanged (all layers, the same
forward). The weights still get a class-level meta-gradient, through the
moved layers only (cf. FaMUS, Xu et al. CVPR 2021, which approximates the
meta-gradient from a few layers).
"""
import numbers
from typing import NamedTuple, Optional

import tensorflow as tf

from gdw_tf.distributed import global_batch_size, replica_sum
from gdw_tf.losses import class_weighted_cross_entropy, cross_entropy
from gdw_tf.methods.method import (
    Method,
    StepOutputs,
    backbone_forward,
    finite_guarded,
    parameter_dtype,
)


def check_virtual_scope(value, method):
    """`virtual_scope` as "all", "head" or an int >= 1, or a ValueError naming the option."""
    if value in ("all", "head"):
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"method '{method}': virtual_scope must be 'all' (exact), 'head' or "
                         f"a number of layers >= 1 (the virtual step moves the last ones), "
                         f"got {value!r}")
    return int(value)


def moved_variable_positions(backbone, scope):
    """Positions in backbone.trainable_variables of the layers the virtual step moves:
    None for scope "all", else those of the last `scope` ("head": 1) top-level layers
    with trainable weights. Raises ValueError if the backbone has fewer."""
    if scope == "all":
        return None
    count = 1 if scope == "head" else scope
    layers = [layer for layer in backbone.layers if layer.trainable_weights]
    if count > len(layers):
        raise ValueError(f"virtual_scope={scope!r}: the backbone has only {len(layers)} layers "
                         f"with trainable weights")
    moved = {id(v) for layer in layers[-count:] for v in layer.trainable_weights}
    return [i for i, v in enumerate(backbone.trainable_variables) if id(v) in moved]


def check_meta_interval(value, method):
    """`meta_interval` as an int >= 1, or a ValueError naming the option."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"method '{method}': meta_interval must be an integer >= 1 "
                         f"(the bi-level step runs every k-th step), got {value!r}")
    return int(value)


class FirstStage(NamedTuple):
    """What a method's first stage computes for one batch, read by its later hooks.

    weights: float [n, C] or [n, 1], the weights of the virtual step's class-level
      logit gradients, differentiable w.r.t. the meta variables; None where
      `virtual_losses` builds its own targets from `rows` (label learning).
    costs: float [n], the constant per-example cross-entropy (MW-Net, GDW).
    probs: float [n, C], the constant softmax of the logits (GDW's constraint).
    rows: float [n, ...], the batch's rows of a per-example table (label learning).
    index: int [n], the batch's `index`, where a table is read (INSW, label learning).
    """
    weights: Optional[tf.Tensor] = None
    costs: Optional[tf.Tensor] = None
    probs: Optional[tf.Tensor] = None
    rows: Optional[tf.Tensor] = None
    index: Optional[tf.Tensor] = None


class BilevelMethod(Method):
    """Template: subclasses define the weights and what the meta step updates.

    `first_stage` returns a `FirstStage`; the second stage (or, between meta
    steps, `weights_without_meta`) returns the real step's weights, float [n, C]
    or [n, 1], which weight its class-level logit gradients (`real_losses`).

    meta_interval: run the bi-level step every k-th step only (module doc).
    Methods whose weights exist only within a meta step set
    `learns_across_steps = False` and accept only meta_interval=1.
    virtual_scope: the layers the virtual step moves (module doc).
    """
    needs_meta = True
    learns_across_steps = True

    def __init__(self, meta_interval=1, virtual_scope="all", **kwargs):
        super().__init__(**kwargs)
        name = getattr(type(self), "method_name", type(self).__name__)
        self.virtual_scope = check_virtual_scope(virtual_scope, name)
        self.meta_interval = check_meta_interval(meta_interval, name)
        if self.meta_interval != 1 and not self.learns_across_steps:
            raise ValueError(
                f"method '{name}' learns nothing across steps (its weights come only from "
                f"each step's meta-gradient), so it supports only meta_interval=1, got "
                f"{meta_interval!r}")

    def get_config(self):
        return {**super().get_config(), "meta_interval": self.meta_interval,
                "virtual_scope": self.virtual_scope}

    def meta_variables(self):
        """Variables whose meta-gradient is needed (watched by the outer tape)."""
        return []

    def first_stage(self, logits, batch):
        """The `FirstStage` of the virtual step; differentiable w.r.t. the meta variables."""
        raise NotImplementedError

    def outer_sources(self, state):
        """Tensors of the `FirstStage` whose meta-gradient is also needed."""
        return []

    def second_stage(self, model, batch, state, meta_grads, source_grads):
        """Applies the meta update; returns the real step's weights."""
        raise NotImplementedError

    def weights_without_meta(self, batch, state):
        """The real step's weights in a step without meta step, from the `FirstStage`.

        Default: the first-stage weights, held constant (MW-Net: V_phi(CE);
        GDW: its class-level form under the zero-mean constraint).
        """
        return tf.stop_gradient(state.weights)

    def plain_weights(self, logits, batch):
        """The real step's weights that make `real_losses` plain cross-entropy: every
        weight 1 (a warm-up step, GDWModel(warmup_steps=...))."""
        return tf.ones_like(logits[:, :1])

    def virtual_losses(self, logits, batch, state):
        """Per-example losses [n] of the virtual step."""
        return class_weighted_cross_entropy(batch["label"], logits, state.weights)

    def real_losses(self, logits, batch, weights):
        """Per-example losses [n] of the real step with the real step's `weights`."""
        return class_weighted_cross_entropy(batch["label"], logits, tf.stop_gradient(weights))

    def step_diagnostics(self, batch, state, real_weights):
        return self.weight_stats(real_weights, batch)

    #: whether `check_weights` gives the truth-free check of the weights
    checks_weights = False

    def check_weights(self, state, batch, meta_logits, meta_labels):
        """(meta [m], train [n]) target weights for the truth-free check: the first-stage
        weighting applied to the meta batch (its virtual-step logits, no extra pass) and
        to the training batch. Weights that single out wrong labels rank the clean meta
        examples above the training examples (GDWModel.weight_check). None: not defined
        for this method (weights of table rows, or only inside a meta step)."""
        return None

    def train_gradients(self, model, batch, meta):
        backbone = model.backbone
        theta = backbone.trainable_variables
        meta_x, meta_y = meta
        dtype = parameter_dtype(backbone)
        lr = tf.cast(model.optimizer.learning_rate, dtype)
        meta_vars = self.meta_variables()

        with tf.GradientTape(watch_accessed_variables=False) as outer:
            outer.watch([v.value for v in meta_vars])
            with tf.GradientTape(persistent=True) as inner:
                logits = backbone_forward(model, batch["image"])
                n_global = global_batch_size(batch["label"], dtype)
                state = self.first_stage(logits, batch)
                sources = self.outer_sources(state)
                outer.watch(sources)
                loss = tf.reduce_sum(self.virtual_losses(logits, batch, state)) / n_global
            moved = moved_variable_positions(backbone, self.virtual_scope)
            if moved is None:
                moved = range(len(theta))
            grads = inner.gradient(loss, [theta[i] for i in moved])
            grads = replica_sum([tf.zeros_like(theta[i]) if g is None else g
                                 for i, g in zip(moved, grads)])
            theta_hat = [tf.convert_to_tensor(v) for v in theta]  # unmoved: constants
            for i, g in zip(moved, grads):
                theta_hat[i] = theta[i] - lr * g
            meta_logits, _ = backbone.stateless_call(
                theta_hat, backbone.non_trainable_variables, meta_x, training=True)
            meta_loss = tf.reduce_sum(
                cross_entropy(meta_y, tf.cast(meta_logits, dtype))
            ) / global_batch_size(meta_y, dtype)
        meta_grads, source_grads = finite_guarded(
            outer.gradient(meta_loss, [meta_vars, sources]),
            tf.stack([loss, meta_loss]), "training loss or meta loss")

        real_weights = self.second_stage(model, batch, state, meta_grads, source_grads)
        check = self.check_weights(state, batch, tf.stop_gradient(tf.cast(meta_logits, dtype)),
                                   meta_y)
        with inner:
            real_loss = tf.reduce_sum(self.real_losses(logits, batch, real_weights)) / n_global
        grads = inner.gradient(real_loss, theta)
        del inner
        return StepOutputs(grads, logits, real_weights, meta_loss,
                           self.step_diagnostics(batch, state, real_weights), check)

    def train_gradients_without_meta(self, model, batch, plain=False):
        """`StepOutputs` of a step between meta steps: one forward, one backward.

        No meta-parameter or table changes. The diagnostics have the keys of
        `train_gradients`; those that exist only for a meta step (e.g. GDW's
        increase fractions) get zero sample weights, so their averages stay
        those of the meta steps. `meta_loss` is None.
        plain: every weight 1 (plain cross-entropy for the weighting methods)
        instead of the current meta-parameters' weights: the warm-up before a
        meta set exists (--meta_source=auto).
        """
        theta = model.backbone.trainable_variables
        with tf.GradientTape() as tape:
            logits = backbone_forward(model, batch["image"])
            n_global = global_batch_size(batch["label"], logits.dtype)
            state = self.first_stage(logits, batch)
            real_weights = (self.plain_weights(logits, batch) if plain
                            else self.weights_without_meta(batch, state))
            loss = tf.reduce_sum(self.real_losses(logits, batch, real_weights)) / n_global
        grads = finite_guarded(tape.gradient(loss, theta), loss, "training loss")
        measured = self.weight_stats(real_weights, batch)
        diagnostics = {
            name: measured.get(name, (values, tf.zeros_like(values)))
            for name, (values, _) in self.step_diagnostics(batch, state, real_weights).items()}
        return StepOutputs(grads, logits, real_weights, None, diagnostics)
