"""Conv / BatchNorm / residual building blocks with PyTorch-equivalent semantics.

Layer names follow torchvision's module names with ``.`` replaced by ``_``
(``layer2_0_conv1`` <-> ``layer2.0.conv1``) so that state_dicts map one-to-one.
"""
from __future__ import annotations

from typing import Callable

import keras

from gdw_tf.models.batch_norm import FusedBatchNormalization

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
