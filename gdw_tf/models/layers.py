"""Custom, serializable Keras layers used by the model zoo."""
from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="gdw_tf")
class OptionAShortcut(keras.layers.Layer):
    """Parameter-free ResNet shortcut, "option A" of He et al. (2016), CIFAR variant.

    (N, H, W, C) -> (N, ceil(H/stride), ceil(W/stride), out_channels): keeps every
    ``stride``-th row and column (``x[:, ::stride, ::stride, :]``, i.e. starting at
    index 0) and zero-pads the channel axis with ``(out_channels - C) // 2`` zeros in
    front and the rest behind -- the same as the Meta-Weight-Net / GDW reference,
    ``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))``.
    """

    def __init__(self, out_channels: int, stride: int = 2, **kwargs):
        super().__init__(**kwargs)
        if int(out_channels) < 1 or int(stride) < 1:
            raise ValueError(
                f"OptionAShortcut: out_channels and stride must be >= 1, got "
                f"out_channels={out_channels!r}, stride={stride!r}"
            )
        self.out_channels = int(out_channels)
        self.stride = int(stride)

    def _channel_padding(self, in_channels: int) -> tuple[int, int]:
        extra = self.out_channels - in_channels
        if extra < 0:
            raise ValueError(
                f"OptionAShortcut '{self.name}': input has {in_channels} channels, "
                f"more than out_channels={self.out_channels}"
            )
        return extra // 2, extra - extra // 2

    def build(self, input_shape):
        self._channel_padding(int(input_shape[-1]))
        super().build(input_shape)

    def call(self, inputs):
        s = self.stride
        x = inputs[:, ::s, ::s, :]
        before, after = self._channel_padding(int(inputs.shape[-1]))
        return keras.ops.pad(x, [[0, 0], [0, 0], [0, 0], [before, after]])

    def compute_output_shape(self, input_shape):
        def sub(d):
            return None if d is None else -(-d // self.stride)

        return (input_shape[0], sub(input_shape[1]), sub(input_shape[2]), self.out_channels)

    def get_config(self):
        config = super().get_config()
        config.update(out_channels=self.out_channels, stride=self.stride)
        return config
