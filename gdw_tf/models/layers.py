"""The pieces every model of the zoo is built from, with PyTorch-equivalent semantics.

PyTorch initialisers, conv / BatchNorm / residual blocks, the option-A shortcut layer,
the classifier head, and the argument checks of the constructors (errors name the
argument and value). Layer names follow torchvision's module names with ``.`` replaced
by ``_`` (``layer2_0_conv1`` <-> ``layer2.0.conv1``) so that state_dicts map one-to-one.
"""
from __future__ import annotations

import math
from typing import Callable

import keras

from gdw_tf.models.batch_norm import FusedBatchNormalization

# --- PyTorch initialisers ----------------------------------------------------------------

def kaiming_normal(mode: str = "fan_in") -> keras.initializers.Initializer:
    """``torch.nn.init.kaiming_normal_`` (ReLU gain): N(0, 2 / fan), untruncated.

    ``mode`` is ``"fan_in"`` (Meta-Weight-Net / GDW ResNet-32) or ``"fan_out"``
    (torchvision ResNets). Keras' fan of a conv kernel (kh*kw*channels) equals PyTorch's.
    """
    return keras.initializers.VarianceScaling(
        scale=2.0, mode=mode, distribution="untruncated_normal"
    )


def torch_linear_kernel() -> keras.initializers.Initializer:
    """Default ``nn.Linear`` weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return keras.initializers.VarianceScaling(
        scale=1.0 / 3.0, mode="fan_in", distribution="uniform"
    )


def torch_linear_bias(fan_in: int) -> keras.initializers.Initializer:
    """Default ``nn.Linear`` bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


# --- conv / BatchNorm / residual blocks ------------------------------------------------

# PyTorch BatchNorm2d defaults: running = 0.9 * running + 0.1 * batch, eps = 1e-5.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def batch_norm(x, name: str):
    """BatchNorm over the channel axis with PyTorch's momentum / epsilon (fused kernel)."""
    return FusedBatchNormalization(
        axis=-1, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name
    )(x)


def conv2d(x, filters: int, kernel_size: int, stride: int, name: str,
           kernel_initializer, use_bias: bool = False):
    """Conv with PyTorch padding ``kernel_size // 2`` on every side (no bias by default).

    Keras' ``padding="same"`` pads asymmetrically when stride > 1, so strided convs get an
    explicit ``ZeroPadding2D`` followed by a ``"valid"`` conv, which matches
    ``nn.Conv2d(..., stride, padding=kernel_size // 2)`` exactly.
    """
    pad = kernel_size // 2
    if stride > 1 and pad > 0:
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    return keras.layers.Conv2D(
        filters, kernel_size, strides=stride, padding=padding, use_bias=use_bias,
        kernel_initializer=kernel_initializer, name=name,
    )(x)


# shortcut(x, filters, stride, name) -> tensor with `filters` channels, spatially / stride.
Shortcut = Callable[..., object]


def basic_block(x, filters: int, stride: int, name: str, shortcut: Shortcut,
                kernel_initializer):
    """ResNet BasicBlock: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)).

    ``shortcut`` is called only when the shape changes (stride != 1 or new width);
    otherwise the identity is used, as in the reference implementations.
    """
    out = conv2d(x, filters, 3, stride, f"{name}_conv1", kernel_initializer)
    out = batch_norm(out, f"{name}_bn1")
    out = keras.layers.ReLU(name=f"{name}_relu1")(out)
    out = conv2d(out, filters, 3, 1, f"{name}_conv2", kernel_initializer)
    out = batch_norm(out, f"{name}_bn2")
    residual = x
    if stride != 1 or x.shape[-1] != filters:
        residual = shortcut(x, filters, stride, name)
    out = keras.layers.Add(name=f"{name}_add")([out, residual])
    return keras.layers.ReLU(name=f"{name}_relu2")(out)


def resnet_stage(x, filters: int, num_blocks: int, stride: int, name: str,
                 shortcut: Shortcut, kernel_initializer):
    """``num_blocks`` BasicBlocks; only the first one has stride ``stride``.

    Blocks are named ``{name}_{i}`` (torchvision's ``layerK.i``).
    """
    for i in range(num_blocks):
        x = basic_block(x, filters, stride if i == 0 else 1, f"{name}_{i}",
                        shortcut, kernel_initializer)
    return x


# --- the option-A shortcut --------------------------------------------------------------

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


# --- the classifier head ----------------------------------------------------------------

# Name of the final Dense layer of every model in the zoo. Weight loaders use it to
# skip a pretrained head whose number of classes differs from the model's.
HEAD_LAYER = "fc"


def classifier_head(x, num_classes: int, kernel_initializer="he_normal",
                    bias_initializer="zeros"):
    """(N, F) features -> (N, num_classes) logits (no softmax)."""
    return keras.layers.Dense(
        num_classes,
        kernel_initializer=kernel_initializer,
        bias_initializer=bias_initializer,
        name=HEAD_LAYER,
    )(x)


# --- constructor argument checks --------------------------------------------------------

def check_num_classes(model_name: str, num_classes) -> int:
    """Return ``num_classes`` as an int, or raise if it is not a positive integer."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"{model_name}: num_classes must be a positive int, got {num_classes!r}"
        )
    return num_classes


def check_image_shape(model_name: str, input_shape) -> tuple:
    """Return ``input_shape`` as a (H, W, C) tuple (channels_last), or raise."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if shape is None or len(shape) != 3 or not all(
        d is None or (isinstance(d, int) and d > 0) for d in shape
    ) or shape[-1] is None:
        raise ValueError(
            f"{model_name}: input_shape must be (height, width, channels) with "
            f"positive ints (H/W may be None), got {input_shape!r}"
        )
    return shape
