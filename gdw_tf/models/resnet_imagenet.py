"""ResNet-18 for 224x224 ImageNet-style images, layer-for-layer compatible with torchvision."""
from __future__ import annotations

import keras

from gdw_tf.models.blocks import batch_norm, conv2d, resnet_stage
from gdw_tf.models.heads import classifier_head
from gdw_tf.models.initializers import kaiming_normal, torch_linear_bias, torch_linear_kernel
from gdw_tf.models.zoo import register_model
from gdw_tf.models.validation import check_image_shape, check_num_classes
from gdw_tf.models.weights import load_init_weights

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
    state_dict (see ``convert_torchvision``). A pretrained head with a different number
    of classes (e.g. 1000 -> 14 for Clothing1M) is skipped and logged.
    """
    check_num_classes("resnet18", num_classes)
    input_shape = check_image_shape("resnet18", input_shape)
    model = imagenet_resnet((2, 2, 2, 2), num_classes, input_shape, name="resnet18")
    if init_weights is not None:
        load_init_weights(model, init_weights, formats=("keras", "torchvision"))
    return model
