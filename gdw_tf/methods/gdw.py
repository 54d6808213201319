"""MW-Net and GDW: per-example weights from the weighting network V_phi(loss).

`WeightingNetwork` is V_phi (1 -> hidden -> 1, loss to weight in (0, 1));
`MWNet` weights each example by V_phi(CE_i); `GDW` spreads that weight over the
example's classes and corrects it per class with the meta-gradient.
Opt-in (`weight_inputs="loss+class"`): V_phi also sees the given class
(docs/weight_inputs.md).
"""

import keras
import tensorflow as tf

from gdw_tf import diagnostics
from gdw_tf.distributed import add_weight_decay, replica_sum
from gdw_tf.losses import cross_entropy, second_stage_update, zero_mean_constraint
from gdw_tf.methods.bilevel import BilevelMethod, FirstStage
from gdw_tf.methods.method import parameter_dtype, register_method
from gdw_tf.models.layers import torch_linear_bias, torch_linear_kernel

#: values of the `weight_inputs` option: what V_phi sees of an example
WEIGHT_INPUTS = ("loss", "loss+class")


def check_weight_inputs(value, method):
    """`weight_inputs` as one of WEIGHT_INPUTS, or a ValueError naming the option."""
    if value not in WEIGHT_INPUTS:
        raise ValueError(f"method '{method}': weight_inputs must be 'loss' (V_phi(loss), the "
                         f"paper's) or 'loss+class' (V_phi(loss, given class)), got {value!r}")
    return value


def _torch_linear_init(fan_in):
    """Kernel and bias initialisers equal to PyTorch's default nn.Linear."""
    return dict(kernel_initializer=torch_linear_kernel(),
                bias_initializer=torch_linear_bias(fan_in))


@keras.saving.register_keras_serializable(package="gdw_tf")
class WeightingNetwork(keras.layers.Layer):
    """MLP 1 -> hidden -> 1 (Dense, ReLU, Dense, sigmoid) from loss to weight.

    Maps per-example losses [n, 1] to weights in (0, 1), [n, 1]. Initialised
    like PyTorch's default `nn.Linear` (uniform in +-1/sqrt(fan_in) for
    kernels and biases), as in the reference implementation.

    num_classes=C (default None: the loss-only network above): the class-aware
    form, (1 + C) -> hidden -> C. The input is the loss and the one-hot given
    class, [n, 1 + C]; of the C sigmoid outputs, the given class's is the
    weight, [n, 1]. So every class has its own loss-to-weight curve, built from
    hidden units that all classes share (after CMW-Net, Shu et al. TPAMI 2023,
    with each class its own task family). The labels are constants: phi is the
    only thing differentiated through them.
    """

    def __init__(self, hidden_units=100, num_classes=None, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = int(hidden_units)
        self.num_classes = None if num_classes is None else int(num_classes)
        inputs, outputs = (1, 1) if self.num_classes is None else (1 + self.num_classes,
                                                                    self.num_classes)
        self.hidden = keras.layers.Dense(
            self.hidden_units, activation="relu", dtype=self.dtype_policy,
            **_torch_linear_init(inputs))
        self.output_layer = keras.layers.Dense(
            outputs, activation="sigmoid", dtype=self.dtype_policy,
            **_torch_linear_init(self.hidden_units))

    def build(self, input_shape=(None, 1)):
        extra = 0 if self.num_classes is None else self.num_classes
        self.hidden.build((input_shape[0], input_shape[-1] + extra))
        self.output_layer.build((input_shape[0], self.hidden_units))

    def call(self, losses, labels=None):
        """losses [n, 1] (and, class-aware, int labels [n]) -> weights [n, 1]."""
        if self.num_classes is None:
            return self.output_layer(self.hidden(losses))
        if labels is None:
            raise ValueError("the class-aware WeightingNetwork needs the given labels")
        one_hot = tf.one_hot(labels, self.num_classes, dtype=losses.dtype)
        per_class = self.output_layer(self.hidden(tf.concat([losses, one_hot], axis=1)))
        return tf.reduce_sum(per_class * one_hot, axis=1, keepdims=True)

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units,
                "num_classes": self.num_classes}


@register_method("mwnet")
class MWNet(BilevelMethod):
    """Meta-Weight-Net (Shu et al., 2019): instance weights w_i = V_phi(CE_i).

    Options (reference defaults): hidden_units=100 (V_phi is 1-100-1),
    meta_learning_rate=1e-3 and meta_weight_decay=1e-4 for V_phi's Adam
    (L2 decay added to the gradient, as torch.optim.Adam; epsilon 1e-8).
    meta_optimizer: another (unbuilt) Keras optimizer, or its config dict, to
    use instead of that Adam; meta_weight_decay still applies.
    meta_interval=k (BilevelMethod): between meta steps, train with w_i = V_phi(CE_i).
    weight_inputs: "loss" (default, the paper's V_phi(CE_i)) or "loss+class"
    (V_phi(CE_i, y_i), the class-aware `WeightingNetwork`; docs/weight_inputs.md).
    """

    def __init__(self, hidden_units=100, meta_learning_rate=1e-3,
                 meta_weight_decay=1e-4, meta_optimizer=None, weight_inputs="loss", **kwargs):
        super().__init__(**kwargs)
        self.weight_inputs = check_weight_inputs(
            weight_inputs, getattr(type(self), "method_name", type(self).__name__))
        self.hidden_units = int(hidden_units)
        self.meta_learning_rate = float(meta_learning_rate)
        self.meta_weight_decay = float(meta_weight_decay)
        if isinstance(meta_optimizer, dict):
            meta_optimizer = keras.optimizers.deserialize(meta_optimizer)
        if (meta_optimizer is not None
                and not isinstance(meta_optimizer, keras.optimizers.Optimizer)):
            raise ValueError(f"meta_optimizer must be a keras optimizer, got {meta_optimizer!r}")
        self._custom_meta_optimizer = meta_optimizer

    def setup(self, model):
        self.weighting_net = WeightingNetwork(
            self.hidden_units,
            num_classes=model.num_classes if self.weight_inputs == "loss+class" else None,
            dtype=parameter_dtype(model.backbone))
        self.weighting_net.build((None, 1))
        self.meta_optimizer = self._custom_meta_optimizer or keras.optimizers.Adam(
            self.meta_learning_rate, epsilon=1e-8, name="meta_optimizer")
        # Built here, outside any replica context (keras-team/keras#23085).
        self.meta_optimizer.build(self.weighting_net.trainable_variables)

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units,
                "weight_inputs": self.weight_inputs,
                "meta_learning_rate": self.meta_learning_rate,
                "meta_weight_decay": self.meta_weight_decay,
                "meta_optimizer": (keras.optimizers.serialize(self._custom_meta_optimizer)
                                   if self._custom_meta_optimizer is not None else None)}

    def meta_variables(self):
        return self.weighting_net.trainable_variables

    def instance_weights(self, costs, labels):
        """V_phi applied to per-example losses [n] and the given int labels [n] (which
        only the class-aware network reads) -> weights [n, 1]."""
        return self.weighting_net(costs[:, None], labels)

    def apply_meta_update(self, grads):
        variables = self.weighting_net.trainable_variables
        grads = add_weight_decay(grads, variables, self.meta_weight_decay)
        self.meta_optimizer.apply_gradients(zip(grads, variables))

    def first_stage(self, logits, batch):
        costs = tf.stop_gradient(cross_entropy(batch["label"], logits))
        return FirstStage(weights=self.instance_weights(costs, batch["label"]), costs=costs)

    def second_stage(self, model, batch, state, meta_grads, source_grads):
        self.apply_meta_update(meta_grads)
        return tf.stop_gradient(self.instance_weights(state.costs, batch["label"]))

    checks_weights = True

    def check_weights(self, state, batch, meta_logits, meta_labels):
        meta_state = self.first_stage(meta_logits, {"label": meta_labels})
        return (diagnostics.target_weights(meta_state.weights, meta_labels),
                diagnostics.target_weights(tf.stop_gradient(state.weights), batch["label"]))


@register_method("gdw")
class GDW(MWNet):
    """Generalized Data Weighting (Chen et al., 2021): class-level weights.

    First stage omega_i = V_phi(CE_i) * 1 under the zero-mean constraint;
    second stage omega'_i = omega_i - clip(outer_lr * g_i / ||g||_1, -clip, clip),
    clamped to [1e-6, 1e6] and constrained again, with g = dL_meta/domega.
    Options: outer_lr=100 (the reference uses 100 for CIFAR-10 and 1000 for
    CIFAR-100), clip=0.2, and MWNet's options for V_phi. With meta_interval=k
    the steps between meta steps train with the first-stage omega_i.
    """
    metric_names = MWNet.metric_names + (
        diagnostics.INCREASED_NONTARGET_CLEAN,
        diagnostics.INCREASED_TRUETARGET_NOISY,
        diagnostics.INCREASED_NONTARGET_NOISY)

    def __init__(self, outer_lr=100.0, clip=0.2, **kwargs):
        super().__init__(**kwargs)
        self.outer_lr = float(outer_lr)
        self.clip = float(clip)

    def get_config(self):
        return {**super().get_config(), "outer_lr": self.outer_lr, "clip": self.clip}

    def first_stage(self, logits, batch):
        state = super().first_stage(logits, batch)
        probs = tf.stop_gradient(tf.nn.softmax(logits))
        omega = zero_mean_constraint(state.weights * tf.ones_like(logits), probs, batch["label"])
        return state._replace(weights=omega, probs=probs)

    def outer_sources(self, state):
        return [state.weights]

    def second_stage(self, model, batch, state, meta_grads, source_grads):
        self.apply_meta_update(meta_grads)
        omega = tf.stop_gradient(state.weights)
        g = source_grads[0]
        l1_norm = replica_sum(tf.reduce_sum(tf.abs(g)))
        updated = second_stage_update(omega, g, l1_norm, self.outer_lr, self.clip)
        return zero_mean_constraint(updated, state.probs, batch["label"])

    def step_diagnostics(self, batch, state, real_weights):
        stats = super().step_diagnostics(batch, state, real_weights)
        if "true_label" in batch:
            stats.update(diagnostics.increase_fractions(
                tf.stop_gradient(state.weights), real_weights,
                batch["label"], batch["true_label"]))
        return stats
