"""ResNets: ResNet-32/8 for 32x32 images (He et al. 2016, Sec. 4.2, as used by Meta-Weight-Net
and GDW) and ResNet-18 for 224x224 images, layer-for-layer compatible with torchvision."""
from __future__ import annotations

import keras

from gdw_tf.models.layers import (
    OptionAShortcut,
    batch_norm,
    check_image_shape,
    check_num_classes,
    classifier_head,
    conv2d,
    kaiming_normal,
    resnet_stage,
    torch_linear_bias,
    torch_linear_kernel,
)
from gdw_tf.models.weights import load_init_weights
from gdw_tf.models.zoo import register_model

# --- CIFAR: ResNet-32 (and ResNet-8 for CPU-sized runs) -----------------------------------

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


# --- ImageNet: ResNet-18 (torchvision) ---------------------------------------------------

IMAGENET_STAGE_WIDTHS = (64, 128, 256, 512)


def projection_shortcut(x, filters: int, stride: int, name: str, kernel_initializer=None):
    """torchvision ``downsample``: 1x1 conv (stride ``stride``, no bias) + BatchNorm."""
    init = kernel_initializer or kaiming_normal("fan_out")
    x = conv2d(x, filters, 1, stride, f"{name}_downsample_0", init)
    return batch_norm(x, f"{name}_downsample_1")


def imagenet_resnet(blocks_per_stage, num_classes: int, input_shape, name: str) -> keras.Model:
    """7x7/2 conv 64 -> 3x3/2 maxpool -> 4 stages of BasicBlocks -> GAP -> fc logits.

    Init as torchvision: Kaiming-normal (fan_out) convs, BN gamma=1 / beta=0, fc with
    nn.Linear's default U(+-1/sqrt(512)). (N, H, W, 3) -> (N, num_classes).
    """
    init = kaiming_normal("fan_out")
    inputs = keras.Input(shape=input_shape, name="images")
    x = conv2d(inputs, IMAGENET_STAGE_WIDTHS[0], 7, 2, "conv1", init)
    x = batch_norm(x, "bn1")
    x = keras.layers.ReLU(name="relu")(x)
    # Zero padding equals PyTorch's -inf padding here because the input is post-ReLU (>= 0).
    x = keras.layers.ZeroPadding2D(1, name="maxpool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="valid", name="maxpool")(x)
    for stage, (width, blocks) in enumerate(zip(IMAGENET_STAGE_WIDTHS, blocks_per_stage)):
        x = resnet_stage(x, width, blocks, 1 if stage == 0 else 2, f"layer{stage + 1}",
                         projection_shortcut, init)
    x = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    logits = classifier_head(x, num_classes, kernel_initializer=torch_linear_kernel(),
                             bias_initializer=torch_linear_bias(IMAGENET_STAGE_WIDTHS[-1]))
    return keras.Model(inputs, logits, name=name)


@register_model("resnet18", default_input_shape=(224, 224, 3))
def resnet18(num_classes: int = 1000, input_shape=(224, 224, 3),
             init_weights: str | None = None) -> keras.Model:
    """ResNet-18 (2 BasicBlocks per stage, 64/128/256/512 filters, projection shortcuts).

    (N, 224, 224, 3) -> (N, num_classes) logits. ``init_weights``: optional LOCAL file,
    either a ``.weights.h5`` of this architecture or an ``.npz`` torchvision ``resnet18``
    state_dict (see ``gdw_tf.convert_torchvision``). A pretrained head with a different number
    of classes (e.g. 1000 -> 14 for Clothing1M) is skipped and logged.
    """
    check_num_classes("resnet18", num_classes)
    input_shape = check_image_shape("resnet18", input_shape)
    model = imagenet_resnet((2, 2, 2, 2), num_classes, input_shape, name="resnet18")
    if init_weights is not None:
        load_init_weights(model, init_weights, formats=("keras", "torchvision"))
    return model
