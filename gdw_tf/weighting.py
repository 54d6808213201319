"""The weighting network V_phi of Meta-Weight-Net and GDW."""
import math

import keras


def _torch_linear_init(fan_in):
    """Kernel and bias initialisers equal to PyTorch's default nn.Linear."""
    bound = 1.0 / math.sqrt(fan_in)
    return dict(
        kernel_initializer=keras.initializers.VarianceScaling(
            1.0 / 3.0, "fan_in", "uniform"),
        bias_initializer=keras.initializers.RandomUniform(-bound, bound))


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
