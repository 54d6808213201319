"""Keras initializers reproducing the PyTorch initializations used by the reference code."""
from __future__ import annotations

import math

import keras


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
