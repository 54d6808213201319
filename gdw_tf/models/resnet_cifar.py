"""ResNet-32 for 32x32 images (He et al. 2016, Sec. 4.2), as used by Meta-Weight-Net and GDW."""
from __future__ import annotations

import keras

from gdw_tf.models.blocks import batch_norm, conv2d, resnet_stage
from gdw_tf.models.heads import classifier_head
from gdw_tf.models.initializers import kaiming_normal, torch_linear_bias
from gdw_tf.models.layers import OptionAShortcut
from gdw_tf.models.zoo import register_model
from gdw_tf.models.validation import check_image_shape, check_num_classes
from gdw_tf.models.weights import load_init_weights

CIFAR_STAGE_WIDTHS = (16, 32, 64)


def option_a_shortcut(x, filters: int, stride: int, name: str):
    """Parameter-free shortcut: subsample by ``stride`` and zero-pad channels."""
    return OptionAShortcut(filters, stride, name=f"{name}_shortcut")(x)


def cifar_resnet(depth: int, num_classes: int, input_shape, name: str) -> keras.Model:
    """CIFAR ResNet-``depth`` (depth = 6n + 2): conv16 -> 3 x n BasicBlocks -> GAP -> fc.

    Input (N, H, W, C) images; output (N, num_classes) logits. Conv and fc kernels use
    Kaiming-normal (fan_in) like the reference; the fc bias uses nn.Linear's default.
    """
    if (depth - 2) % 6 != 0 or depth < 8:
        raise ValueError(f"{name}: depth must be 6n + 2 (n >= 1), got {depth!r}")
    blocks = (depth - 2) // 6
    init = kaiming_normal("fan_in")
    inputs = keras.Input(shape=input_shape, name="images")
    x = conv2d(inputs, CIFAR_STAGE_WIDTHS[0], 3, 1, "conv1", init)
    x = batch_norm(x, "bn1")
    x = keras.layers.ReLU(name="relu")(x)
    for stage, width in enumerate(CIFAR_STAGE_WIDTHS):
        x = resnet_stage(x, width, blocks, 1 if stage == 0 else 2, f"layer{stage + 1}",
                         option_a_shortcut, init)
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    logits = classifier_head(x, num_classes, kernel_initializer=kaiming_normal("fan_in"),
                             bias_initializer=torch_linear_bias(CIFAR_STAGE_WIDTHS[-1]))
    return keras.Model(inputs, logits, name=name)


def _cifar_resnet_constructor(depth: int):
    name = f"resnet{depth}"

    def constructor(num_classes: int = 10, input_shape=(32, 32, 3),
                    init_weights: str | None = None) -> keras.Model:
        check_num_classes(name, num_classes)
        shape = check_image_shape(name, input_shape)
        model = cifar_resnet(depth, num_classes, shape, name=name)
        if init_weights is not None:
            load_init_weights(model, init_weights, formats=("keras",))
        return model

    constructor.__name__ = name
    constructor.__doc__ = (
        f"ResNet-{depth} ({(depth - 2) // 6} BasicBlocks per stage, 16/32/64 filters, option-A "
        "shortcuts).\n\n    (N, 32, 32, 3) -> (N, num_classes) logits. ``init_weights``: "
        "optional local ``.weights.h5`` saved from this architecture (a differently sized "
        "head is skipped).")
    return register_model(name, default_input_shape=(32, 32, 3))(constructor)


resnet32 = _cifar_resnet_constructor(32)   # the paper's CIFAR model
resnet8 = _cifar_resnet_constructor(8)     # 1 block per stage: CPU-sized protocols
