"""Model zoo for GDW: ``build(name, num_classes, ...)`` returns a Keras model giving logits.

Registered models: ``resnet32`` (CIFAR, option-A shortcuts), ``resnet18`` (ImageNet,
torchvision-compatible, optional local pretrained weights), ``small_cnn`` /
``small_cnn_nobn`` / ``mlp`` (8x8x1 scikit-learn digits), ``strided_cnn`` (CPU-sized CIFAR).
"""
from gdw_tf.models import torchvision_weights  # noqa: F401  (registers the .npz format)
from gdw_tf.models.batch_norm import FusedBatchNormalization
from gdw_tf.models.layers import HEAD_LAYER, OptionAShortcut
from gdw_tf.models.resnet import resnet8, resnet18, resnet32
from gdw_tf.models.small_nets import mlp, small_cnn, small_cnn_nobn, strided_cnn
from gdw_tf.models.weights import WeightLoadReport, load_init_weights
from gdw_tf.models.zoo import (
    available_models,
    build,
    check_init_weights,
    default_image_size,
    freeze_backbone,
    get_model_spec,
    register_model,
)

__all__ = [
    "FusedBatchNormalization", "HEAD_LAYER", "OptionAShortcut", "WeightLoadReport",
    "available_models", "build", "check_init_weights", "default_image_size", "freeze_backbone",
    "get_model_spec", "load_init_weights", "mlp",
    "register_model", "resnet18", "resnet8", "resnet32", "small_cnn", "small_cnn_nobn",
    "strided_cnn",
]
