"""``keras_hub:PRESET``: a KerasHub image backbone preset as a GDW backbone (optional
``pip install keras-hub``), registered lazily like ``keras:NAME``.

PRESET is found offline only (KerasHub would otherwise download it):

- a local preset directory: what ``Backbone.save_to_preset(DIR)`` or
  ``ImageClassifier.save_to_preset(DIR)`` writes, or a preset downloaded elsewhere from
  Kaggle or Hugging Face (``config.json``, ``model.weights.h5``, ``image_converter.json``);
- the name of a built-in preset (``resnet_50_imagenet``, ...) that kagglehub has already
  cached: ``$KAGGLEHUB_CACHE`` (default ``~/.cache/kagglehub``)
  ``/models/OWNER/MODEL/FRAMEWORK/VARIATION/VERSION``, from the preset's Kaggle handle.

A preset that is neither is one error naming where it was looked for.

``build("keras_hub:DIR", num_classes, input_shape, init_weights, augment=...)`` returns a
flat functional model (every layer of the backbone at top level, so ``virtual_scope``
counts them):

    images (N, H, W, 3), as the --augment recipe leaves them
      -> ``input_adapter``: the preset's ImageConverter rescaling (x * scale + offset of
         pixels x in [0, 255]), per channel
      -> the backbone's layers, with the preset's weights -> (N, h, w, C) feature maps
      -> global average pooling -> Dense ``fc`` (N, num_classes) logits, no softmax.

The input side defaults to the converter's ``image_size`` (224 where it has none); the
backbone takes any side. ``init_weights``: None (the preset's weights) or a local
``.weights.h5`` / ``.keras`` file saved from the same ``keras_hub:PRESET`` model (a head of
another number of classes is skipped). Only backbones giving feature maps are supported
(the CNN families: ResNet, EfficientNet, MobileNet, DenseNet, CSPNet, VGG, ...); token
backbones (ViT, DeiT, Swin) are one error.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os

import keras
import numpy as np

from gdw_tf.models.layers import check_image_shape, check_num_classes, classifier_head
from gdw_tf.models.weights import load_init_weights

PREFIX = "keras_hub:"
DEFAULT_SIZE = 224


def _keras_hub(model_name: str):
    if importlib.util.find_spec("keras_hub") is None:
        raise ValueError(f"--model={model_name} needs KerasHub: pip install keras-hub "
                         "(or the optional extra: pip install .[keras_hub])")
    import keras_hub

    return keras_hub


def kagglehub_cache_dir() -> str:
    """Where kagglehub keeps what it downloads: ``$KAGGLEHUB_CACHE``, else
    ``~/.cache/kagglehub``."""
    return os.path.expanduser(os.environ.get("KAGGLEHUB_CACHE")
                              or os.path.join("~", ".cache", "kagglehub"))


def preset_dir(model_name: str) -> str:
    """The local directory of ``keras_hub:PRESET`` (see the module doc); ValueError, naming
    where it was looked for, if there is none. Nothing is downloaded."""
    keras_hub = _keras_hub(model_name)
    preset = model_name[len(PREFIX):]
    path = os.path.expanduser(preset)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ValueError(f"--model={model_name}: {path} is not a KerasHub preset directory "
                             "(it has no config.json)")
        return path
    known = keras_hub.models.Backbone.presets
    if preset not in known:
        raise ValueError(f"--model={model_name}: {preset!r} is neither a preset directory nor "
                         "a KerasHub preset name (keras_hub.models.Backbone.presets lists them)")
    handle = known[preset].get("kaggle_handle", "")
    parts = handle.removeprefix("kaggle://").split("/")
    cached = os.path.join(kagglehub_cache_dir(), "models", *parts) if len(parts) == 5 else None
    if cached and os.path.isfile(os.path.join(cached, "config.json")):
        return cached
    raise ValueError(f"--model={model_name}: KerasHub downloads this preset from {handle}; "
                     f"nothing is downloaded here: put it in {cached or 'a directory'} "
                     "(kagglehub's cache, KAGGLEHUB_CACHE) or pass --model=keras_hub:DIR, DIR a "
                     "directory written by save_to_preset")


def _converter_config(directory: str) -> dict:
    """The preset's ImageConverter config ({} if it has none)."""
    path = os.path.join(directory, "image_converter.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f).get("config", {})


def default_image_size(model_name: str) -> int:
    """The side the preset's ImageConverter resizes to (DEFAULT_SIZE if it does not)."""
    size = _converter_config(preset_dir(model_name)).get("image_size")
    return int(size[0]) if size else DEFAULT_SIZE


def input_adapter(directory: str, mean, std):
    """The layer taking the pipeline's (x / pixel_max - mean) / std (RGB) to the preset
    converter's x * 255 / pixel_max * scale + offset (scale, offset: None, a number or one per
    channel)."""
    from gdw_tf.models.keras_apps import pixel_map_adapter

    config = _converter_config(directory)
    scale = np.broadcast_to(np.asarray(1.0 if config.get("scale") is None else config["scale"],
                                       np.float64), (3,))
    offset = np.broadcast_to(np.asarray(0.0 if config.get("offset") is None
                                        else config["offset"], np.float64), (3,))
    return pixel_map_adapter((0, 1, 2), scale, offset, mean, std)


def keras_hub_model(model_name: str, num_classes: int, input_shape, init_weights=None,
                    augment: str = "none") -> keras.Model:
    """``keras_hub:PRESET``: (N, H, W, 3) images as recipe ``augment`` leaves them -> (N,
    num_classes) logits, the backbone initialised from the preset (module doc)."""
    from gdw_tf.data.augment import output_normalization
    from gdw_tf.keras_internals import call_layers_on

    keras_hub = _keras_hub(model_name)
    check_num_classes(model_name, num_classes)
    shape = check_image_shape(model_name, input_shape)
    directory = preset_dir(model_name)
    backbone = keras_hub.models.Backbone.from_preset(directory)
    inputs = keras.Input(shape=shape, name="images")
    adapted = input_adapter(directory, *output_normalization(augment))(inputs)
    features = call_layers_on(backbone, adapted)
    if len(features.shape) != 4:
        raise ValueError(f"--model={model_name}: {type(backbone).__name__} gives outputs of shape "
                         f"{tuple(features.shape)}, not feature maps (N, h, w, C); only such "
                         "backbones are supported")
    pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
    logits = classifier_head(pooled, num_classes, kernel_initializer="glorot_uniform")
    model = keras.Model(inputs, logits, name=backbone.name)
    if init_weights is not None:
        load_init_weights(model, init_weights, formats=("keras", "keras_file"))
    return model


def register(model_name: str):
    """Registers ``keras_hub:PRESET`` in the zoo (called by ``zoo.get_model_spec`` on first
    use; the preset must be found, see :func:`preset_dir`)."""
    from gdw_tf.models.zoo import register_model

    size = default_image_size(model_name)
    register_model(model_name, default_input_shape=(size, size, 3), adapts_input=True)(
        functools.partial(keras_hub_model, model_name))
