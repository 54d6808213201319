"""``keras:NAME``: any ``keras.applications`` constructor as a GDW backbone, registered lazily.

``build("keras:EfficientNetV2B0", num_classes, input_shape, init_weights, augment=...)``
returns a flat functional model (one ``keras.Model`` over every layer, so that
``virtual_scope`` counts the application's own layers):

    images (N, H, W, C), as the --augment recipe leaves them
      -> ``input_adapter``: the application's preprocessing, per channel (see below)
      -> the application without its top (include_top=False, pooling="avg")
      -> Dense ``fc`` (N, num_classes) logits, no softmax.

Preprocessing: the data pipeline feeds (x / pixel_max - mean) / std per RGB channel, with
(mean, std) of the recipe (``augment.output_normalization``: ImageNet's for ``imagenet``,
CIFAR's for ``cifar``, (0, 1) for ``none``). ``input_adapter`` maps that back to pixels in
[0, 255] and applies the module's ``preprocess_input`` (``caffe``: RGB->BGR minus the
ImageNet mean, ``tf``: [-1, 1], ``torch``: ImageNet mean/std, or nothing for applications
whose first layers rescale [0, 255] themselves: EfficientNet(V2), MobileNetV3, ConvNeXt).
Every such map is an affine map per channel after a channel permutation, read off
``preprocess_input`` by probing it with one pixel per channel.

Weights (``init_weights``): ``"imagenet"``: Keras' own cached file, in
``$KERAS_HOME/models`` (default ``~/.keras/models``), whose name the constructor decides
(it depends on its arguments); nothing is ever downloaded: a missing file is one error
naming it, the directory and the address to fetch it from (the file's published hash is
not checked; Keras' own loader fails on a file that does not fit). A local ``.weights.h5`` or
``.keras`` file saved from the same ``keras:NAME`` also works (a head of another number of
classes is skipped); a file that does not fit names the first mismatching tensor.
"""
from __future__ import annotations

import functools
import os
from typing import Callable

import keras
import numpy as np

from gdw_tf.models.layers import check_image_shape, check_num_classes, classifier_head
from gdw_tf.models.weights import load_init_weights

PREFIX = "keras:"
IMAGENET = "imagenet"

# The constructors' own default input side where it is not 224 (their `default_size`).
_DEFAULT_SIZES = {
    "EfficientNetB1": 240, "EfficientNetB2": 260, "EfficientNetB3": 300, "EfficientNetB4": 380,
    "EfficientNetB5": 456, "EfficientNetB6": 528, "EfficientNetB7": 600,
    "EfficientNetV2B1": 240, "EfficientNetV2B2": 260, "EfficientNetV2B3": 300,
    "EfficientNetV2S": 384, "EfficientNetV2M": 480, "EfficientNetV2L": 480,
    "InceptionV3": 299, "InceptionResNetV2": 299, "Xception": 299, "NASNetLarge": 331,
}


def application_names() -> list[str]:
    """The constructors of ``keras.applications`` (``ResNet50``, ``EfficientNetV2B0``, ...)."""
    return sorted(name for name in dir(keras.applications)
                  if name[:1].isupper() and callable(getattr(keras.applications, name)))


def application(name: str) -> Callable[..., keras.Model]:
    """The constructor ``keras.applications.<name>``; unknown names list the choices."""
    if name not in application_names():
        raise ValueError(f"unknown model '{PREFIX}{name}': keras.applications has no "
                         f"'{name}'; available: {', '.join(application_names())}")
    return getattr(keras.applications, name)


def default_image_size(name: str) -> int:
    """The side (pixels) application ``name`` was trained at on ImageNet, e.g. 224."""
    application(name)
    return _DEFAULT_SIZES.get(name, 224)


@functools.cache
def preprocessing_map(name: str) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
    """(perm, scale, offset) with ``preprocess_input(x)[..., c] = scale[c] * x[..., perm[c]] +
    offset[c]`` for RGB pixels x in [0, 255]: the module's preprocessing of application
    ``name``, read off by probing it with black and one full channel at a time."""
    import importlib

    module = importlib.import_module(application(name).__module__)
    probe = np.zeros((1, 4, 3), np.float32)
    for k in range(3):
        probe[0, k + 1, k] = 255.0
    out = np.asarray(module.preprocess_input(probe.copy()), np.float64)[0]
    offset = out[0]
    perm, scale = [None] * 3, np.zeros(3)
    for k in range(3):
        changed = np.flatnonzero(np.abs(out[k + 1] - offset) > 1e-6)
        if len(changed) != 1 or perm[changed[0]] is not None:
            raise ValueError(f"{PREFIX}{name}: preprocess_input is not a per-channel affine map")
        perm[changed[0]] = k
        scale[changed[0]] = (out[k + 1, changed[0]] - offset[changed[0]]) / 255.0
    return tuple(perm), scale, offset


@keras.saving.register_keras_serializable("gdw_tf")
class ChannelAffine(keras.layers.Layer):
    """(N, H, W, C) -> (N, H, W, C): ``y[..., c] = x[..., perm[c]] * scale[c] + offset[c]``
    (constants, no weights)."""

    def __init__(self, perm, scale, offset, **kwargs):
        super().__init__(**kwargs)
        self.perm = [int(p) for p in perm]
        self.scale = [float(s) for s in scale]
        self.offset = [float(o) for o in offset]

    def call(self, x):
        if self.perm != list(range(len(self.perm))):
            x = keras.ops.take(x, self.perm, axis=-1)
        scale = keras.ops.convert_to_tensor(self.scale, dtype=x.dtype)
        offset = keras.ops.convert_to_tensor(self.offset, dtype=x.dtype)
        return x * scale + offset

    def get_config(self):
        return {**super().get_config(), "perm": self.perm, "scale": self.scale,
                "offset": self.offset}


def pixel_map_adapter(perm, scale, offset, mean, std) -> ChannelAffine:
    """The layer ``input_adapter`` taking the pipeline's y = (x / pixel_max - mean) / std (RGB)
    to ``scale[c] * 255 * x[..., perm[c]] / pixel_max + offset[c]``: a model's own per-channel
    map of pixels in [0, 255] (perm: channel order; scale, offset: (3,))."""
    mean = np.asarray(mean, np.float64)[list(perm)]
    std = np.asarray(std, np.float64)[list(perm)]
    # map(255 * (y * std + mean)) = scale * 255 * std * y + scale * 255 * mean + offset
    return ChannelAffine(perm, scale * 255.0 * std, scale * 255.0 * mean + offset,
                         name="input_adapter")


def input_adapter(name: str, mean, std) -> ChannelAffine:
    """The layer taking the pipeline's (x / pixel_max - mean) / std (RGB) to what application
    ``name`` expects from ``preprocess_input`` of x * 255 / pixel_max."""
    return pixel_map_adapter(*preprocessing_map(name), mean, std)


def keras_application_model(name: str, num_classes: int, input_shape, init_weights=None,
                            augment: str = "none", **app_kwargs) -> keras.Model:
    """``keras:<name>``: (N, H, W, C) images as recipe ``augment`` leaves them -> (N,
    num_classes) logits. ``init_weights``: None, ``"imagenet"`` (Keras' cached file, never
    downloaded) or a local ``.weights.h5`` / ``.keras`` file of this model; ``app_kwargs``
    go to the constructor (e.g. ``alpha``, ``minimalistic``)."""
    from gdw_tf.data.augment import output_normalization

    model_name = PREFIX + name
    constructor = application(name)
    check_num_classes(model_name, num_classes)
    shape = check_image_shape(model_name, input_shape)
    mean, std = output_normalization(augment)
    inputs = keras.Input(shape=shape, name="images")
    adapted = input_adapter(name, mean, std)(inputs)
    weights = IMAGENET if init_weights == IMAGENET else None
    with _cached_weights_only(model_name):
        backbone = constructor(include_top=False, weights=weights, input_tensor=adapted,
                               pooling="avg", **app_kwargs)
    logits = classifier_head(backbone.output, num_classes, kernel_initializer="glorot_uniform")
    model = keras.Model(inputs, logits, name=name.lower())
    if init_weights is not None and init_weights != IMAGENET:
        load_init_weights(model, init_weights, formats=("keras", "keras_file"))
    return model


def keras_cache_dir() -> str:
    """Where Keras keeps the files it downloads: ``$KERAS_HOME``, else ``~/.keras``."""
    return os.path.expanduser(os.environ.get("KERAS_HOME") or os.path.join("~", ".keras"))


def _cached_weights_only(model_name: str):
    """Constructors inside get their pretrained file from Keras' cache only (no download)."""
    from gdw_tf.keras_internals import application_weights_resolved_by

    def resolve(fname, origin=None, cache_subdir="datasets", **unused):
        directory = os.path.join(keras_cache_dir(), cache_subdir)
        path = os.path.join(directory, fname)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"init_weights={IMAGENET}: --model={model_name} loads Keras' cached file "
                f"{fname}, not found in {directory} (KERAS_HOME/{cache_subdir}; nothing is "
                f"downloaded): fetch {origin} and put it there")
        return path

    return application_weights_resolved_by(resolve)


def register(model_name: str):
    """Registers ``keras:NAME`` in the zoo (called by ``zoo.get_model_spec`` on first use)."""
    from gdw_tf.models.zoo import register_model

    name = model_name[len(PREFIX):]
    size = default_image_size(name)
    constructor = functools.partial(keras_application_model, name)
    register_model(model_name, default_input_shape=(size, size, 3),
                   adapts_input=True)(constructor)
