"""MW-Net and GDW: per-example weights from the weighting network V_phi(loss).

`WeightingNetwork` is V_phi (1 -> hidden -> 1, loss to weight in (0, 1));
`MWNet` weights each example by V_phi(CE_i); `GDW` spreads that weight over the
example's classes and corrects it per class with the meta-gradient.
"""

import keras
import tensorflow as tf

from gdw_tf import diagnostics
from gdw_tf.distributed import add_weight_decay, replica_sum
from gdw_tf.losses import cross_entropy, second_stage_update, zero_mean_constraint
from gdw_tf.methods.bilevel import BilevelMethod, FirstStage
from gdw_tf.methods.method import parameter_dtype, register_method
from gdw_tf.models.layers import torch_linear_bias, torch_linear_kernel


def _torch_linear_init(fan_in):
    """Kernel and bias initialisers equal to PyTorch's default nn.Linear."""
    return dict(kernel_initializer=torch_linear_kernel(), bias_initializer=torch_linear_bias(fan_in))


@keras.saving.register_keras_serializable(package="gdw_tf")
class WeightingNetwork(keras.layers.Layer):
    """MLP 1 -> hidden -> 1 (Dense, ReLU, Dense, sigmoid) from loss to weight.

    Maps per-example losses [n, 1] to weights in (0, 1), [n, 1]. Initialised
    like PyTorch's default `nn.Linear` (uniform in +-1/sqrt(fan_in) for
    kernels and biases), as in the reference implementation.
    """

    def __init__(self, hidden_units=100, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = int(hidden_units)
        self.hidden = keras.layers.Dense(
            self.hidden_units, activation="relu", dtype=self.dtype_policy,
            **_torch_linear_init(1))
        self.output_layer = keras.layers.Dense(
            1, activation="sigmoid", dtype=self.dtype_policy,
            **_torch_linear_init(self.hidden_units))

    def build(self, input_shape=(None, 1)):
        self.hidden.build(input_shape)
        self.output_layer.build((input_shape[0], self.hidden_units))

    def call(self, losses):
        return self.output_layer(self.hidden(losses))

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units}


@register_method("mwnet")
class MWNet(BilevelMethod):
    """Meta-Weight-Net (Shu et al., 2019): instance weights w_i = V_phi(CE_i).

    Options (reference defaults): hidden_units=100 (V_phi is 1-100-1),
    meta_learning_rate=1e-3 and meta_weight_decay=1e-4 for V_phi's Adam
    (L2 decay added to the gradient, as torch.optim.Adam; epsilon 1e-8).
    meta_optimizer: another (unbuilt) Keras optimizer, or its config dict, to
    use instead of that Adam; meta_weight_decay still applies.
    meta_interval=k (BilevelMethod): between meta steps, train with w_i = V_phi(CE_i).
    """

    def __init__(self, hidden_units=100, meta_learning_rate=1e-3,
                 meta_weight_decay=1e-4, meta_optimizer=None, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = int(hidden_units)
        self.meta_learning_rate = float(meta_learning_rate)
        self.meta_weight_decay = float(meta_weight_decay)
        if isinstance(meta_optimizer, dict):
            meta_optimizer = keras.optimizers.deserialize(meta_optimizer)
        if meta_optimizer is not None and not isinstance(meta_optimizer, keras.optimizers.Optimizer):
            raise ValueError(f"meta_optimizer must be a keras optimizer, got {meta_optimizer!r}")
        self._custom_meta_optimizer = meta_optimizer

    def setup(self, model):
        self.weighting_net = WeightingNetwork(
            self.hidden_units, dtype=parameter_dtype(model.backbone))
        self.weighting_net.build((None, 1))
        self.meta_optimizer = self._custom_meta_optimizer or keras.optimizers.Adam(
            self.meta_learning_rate, epsilon=1e-8, name="meta_optimizer")
        # Built here, outside any replica context (keras-team/keras#23085).
        self.meta_optimizer.build(self.weighting_net.trainable_variables)

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units,
                "meta_learning_rate": self.meta_learning_rate,
                "meta_weight_decay": self.meta_weight_decay,
                "meta_optimizer": (keras.optimizers.serialize(self._custom_meta_optimizer)
                                   if self._custom_meta_optimizer is not None else None)}

    def meta_variables(self):
        return self.weighting_net.trainable_variables

    def instance_weights(self, costs):
        """V_phi applied to per-example losses [n] -> weights [n, 1]."""
        return self.weighting_net(costs[:, None])

    def apply_meta_update(self, grads):
        variables = self.weighting_net.trainable_variables
        grads = add_weight_decay(grads, variables, self.meta_weight_decay)
        self.meta_optimizer.apply_gradients(zip(grads, variables))

    def first_stage(self, logits, batch):
        costs = tf.stop_gradient(cross_entropy(batch["label"], logits))
        return FirstStage(weights=self.instance_weights(costs), costs=costs)

    def second_stage(self, model, batch, state, meta_grads, source_grads):
        self.apply_meta_update(meta_grads)
        return tf.stop_gradient(self.instance_weights(state.costs))

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
