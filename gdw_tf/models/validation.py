"""Argument checks shared by the model constructors (errors name the argument and value)."""
from __future__ import annotations


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
