"""Small, fast networks: for the embedded digits (8x8x1) and CPU-sized CIFAR runs (32x32x3)."""
from __future__ import annotations

import keras

from gdw_tf.models.layers import batch_norm, check_image_shape, check_num_classes, classifier_head
from gdw_tf.models.weights import load_init_weights
from gdw_tf.models.zoo import register_model

DIGITS_SHAPE = (8, 8, 1)


def _conv_unit(x, filters: int, name: str, use_batch_norm: bool):
    """3x3 'same' conv (+ BatchNorm) + ReLU; the conv has a bias only without BN."""
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=not use_batch_norm,
                            kernel_initializer="he_normal", name=name)(x)
    if use_batch_norm:
        x = batch_norm(x, f"{name}_bn")
    return keras.layers.ReLU(name=f"{name}_relu")(x)


@register_model("small_cnn", default_input_shape=DIGITS_SHAPE)
def small_cnn(num_classes: int = 10, input_shape=DIGITS_SHAPE,
              init_weights: str | None = None, batch_norm: bool = True,
              width: int = 32) -> keras.Model:
    """conv(width) -> conv(2*width) -> 2x2 maxpool -> flatten -> fc logits.

    (N, 8, 8, 1) -> (N, num_classes). ``batch_norm=False`` gives a BN-free variant
    (no batch-dependent state; also registered as ``small_cnn_nobn``).
    ``init_weights``: optional ``.weights.h5`` of the same architecture.
    """
    name = "small_cnn" if batch_norm else "small_cnn_nobn"
    check_num_classes(name, num_classes)
    input_shape = check_image_shape(name, input_shape)
    inputs = keras.Input(shape=input_shape, name="images")
    x = _conv_unit(inputs, width, "conv1", batch_norm)
    x = _conv_unit(x, 2 * width, "conv2", batch_norm)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    model = keras.Model(inputs, classifier_head(x, num_classes), name=name)
    if init_weights is not None:
        load_init_weights(model, init_weights, formats=("keras",))
    return model


@register_model("small_cnn_nobn", default_input_shape=DIGITS_SHAPE)
def small_cnn_nobn(num_classes: int = 10, input_shape=DIGITS_SHAPE,
                   init_weights: str | None = None, width: int = 32) -> keras.Model:
    """:func:`small_cnn` without BatchNorm (deterministic per-example forward pass)."""
    return small_cnn(num_classes, input_shape, init_weights, batch_norm=False, width=width)


@register_model("mlp", default_input_shape=DIGITS_SHAPE)
def mlp(num_classes: int = 10, input_shape=DIGITS_SHAPE, init_weights: str | None = None,
        hidden_units=(64,)) -> keras.Model:
    """flatten -> [Dense(h) + ReLU for h in hidden_units] -> fc logits. No BatchNorm.

    (N, *input_shape) -> (N, num_classes).
    """
    check_num_classes("mlp", num_classes)
    if not input_shape or any(d is None or int(d) < 1 for d in input_shape):
        raise ValueError(f"mlp: input_shape must be a tuple of positive ints, got {input_shape!r}")
    inputs = keras.Input(shape=tuple(input_shape), name="inputs")
    x = keras.layers.Flatten(name="flatten")(inputs)
    for i, units in enumerate(hidden_units, start=1):
        x = keras.layers.Dense(units, activation="relu", kernel_initializer="he_normal",
                               name=f"hidden{i}")(x)
    model = keras.Model(inputs, classifier_head(x, num_classes), name="mlp")
    if init_weights is not None:
        load_init_weights(model, init_weights, formats=("keras",))
    return model



CIFAR_SHAPE = (32, 32, 3)


@register_model("strided_cnn", default_input_shape=CIFAR_SHAPE)
def strided_cnn(num_classes: int = 10, input_shape=CIFAR_SHAPE, init_weights: str | None = None,
                width: int = 16) -> keras.Model:
    """Three 3x3 stride-2 convs (width, 2*width, 4*width; BN + ReLU) -> flatten -> fc logits.

    (N, 32, 32, 3) -> (N, num_classes); 0.7 M multiply-adds per 32x32 image at width 16,
    so a GDW step on a CPU core takes milliseconds: the backbone of the CPU accuracy
    protocol, where runs need thousands of iterations.
    """
    check_num_classes("strided_cnn", num_classes)
    input_shape = check_image_shape("strided_cnn", input_shape)
    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    for i, filters in enumerate((width, 2 * width, 4 * width), start=1):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False,
                                kernel_initializer="he_normal", name=f"conv{i}")(x)
        x = batch_norm(x, f"conv{i}_bn")
        x = keras.layers.ReLU(name=f"conv{i}_relu")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    model = keras.Model(inputs, classifier_head(x, num_classes), name="strided_cnn")
    if init_weights is not None:
        load_init_weights(model, init_weights, formats=("keras",))
    return model
