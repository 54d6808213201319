"""The model zoo: names -> constructors (registered by the model modules), ``build``, and the
check that a weights file fits a model."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import keras

from gdw_tf.registry import Registry


@dataclass(frozen=True)
class ModelSpec:
    """A registered constructor ``fn(num_classes, input_shape, init_weights, **kw)``.

    default_input_shape: (H, W, C) the model is built at when none is given (for
    ``keras:NAME``, the application's own ImageNet size). adapts_input: ``fn`` also takes
    ``augment``, the recipe whose images it gets, and converts them to what it expects.
    """

    name: str
    fn: Callable[..., keras.Model]
    default_input_shape: tuple
    adapts_input: bool = False


_MODELS = Registry("model")


def register_model(name: str, default_input_shape: tuple, adapts_input: bool = False):
    """Decorator registering a model constructor under ``name``."""

    def decorator(fn):
        _MODELS.register(name)(ModelSpec(name, fn, tuple(default_input_shape), adapts_input))
        return fn

    return decorator


def available_models() -> list[str]:
    """Sorted names of the zoo's own models, accepted by :func:`build` (so is
    ``keras:NAME`` for every ``keras.applications`` constructor, registered on first use)."""
    return [name for name in _MODELS.names() if ":" not in name]


def get_model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` registered under ``name``; unknown names list the choices."""
    from gdw_tf.models import keras_apps, keras_hub_presets

    if name.startswith(keras_apps.PREFIX) and name not in _MODELS:
        keras_apps.register(name)
    elif name.startswith(keras_hub_presets.PREFIX) and name not in _MODELS:
        keras_hub_presets.register(name)
    return _MODELS.get(name)


def default_image_size(name: str) -> int:
    """The side (pixels) model ``name`` is built at by default (its ImageNet size for
    ``keras:NAME``: 224 for most, e.g. 299 for keras:InceptionV3), for --image_size."""
    return get_model_spec(name).default_input_shape[0]


def build(name: str, num_classes: int, input_shape=None, init_weights: str | None = None,
          augment: str | None = None, **kwargs) -> keras.Model:
    """Build registered model ``name`` -> functional ``keras.Model`` outputting logits.

    ``input_shape`` (H, W, C) defaults to the model's own (e.g. (32, 32, 3) for resnet32);
    ``init_weights`` is an optional local weights file (see each constructor; ``imagenet``
    for ``keras:NAME``); ``augment``: the recipe (--augment) whose output the model is fed,
    for the models that convert it to their own preprocessing (``keras:NAME``; default
    ``none``: pixels in [0, 1]); other keyword arguments go to the constructor.
    """
    spec = get_model_spec(name)
    if input_shape is None:
        input_shape = spec.default_input_shape
    if spec.adapts_input and augment is not None:
        kwargs["augment"] = augment
    return spec.fn(num_classes=num_classes, input_shape=input_shape,
                   init_weights=init_weights, **kwargs)


def check_init_weights(name: str, path, known_input: tuple[int, tuple] | None = None) -> None:
    """Fails, naming the file, unless ``path`` can initialise model ``name`` (before data is read;
    ``imagenet``: Keras' cached file of a ``keras:NAME`` model, never downloaded).

    ``known_input`` = (num_classes, input_shape) of the run: the model is built and
    the file loaded into it (every tensor's shape checked). None (not known before
    the data): only that the file exists and has a weights format's extension.
    """
    from gdw_tf.models.keras_apps import IMAGENET, PREFIX
    from gdw_tf.models.weights import registered_suffixes

    get_model_spec(name)
    path = os.fspath(path)
    if path == IMAGENET:
        if not name.startswith(PREFIX):
            raise ValueError(f"init_weights={IMAGENET} (Keras' cached ImageNet weights) applies to "
                             f"--model=keras:NAME, not --model={name}")
        num_classes, input_shape = known_input or (2, None)
        build(name, num_classes, input_shape, init_weights=path)  # fails if the file is absent
        return
    if not os.path.isfile(path):
        raise FileNotFoundError(f"init_weights={path}: file not found")
    if known_input is None:
        if not path.endswith(registered_suffixes()):
            raise ValueError(f"init_weights={path}: unsupported file extension; expected one of "
                             f"{', '.join(registered_suffixes())}")
        return
    num_classes, input_shape = known_input
    build(name, num_classes, input_shape, init_weights=path)


def freeze_backbone(model: keras.Model) -> None:
    """Makes every layer of ``model`` but its classifier head (``HEAD_LAYER``) non-trainable
    (a linear probe): their weights leave ``trainable_variables``, so neither the optimizer
    nor a bi-level virtual step moves them, and Keras runs a frozen BatchNormalization in
    inference mode (its moving statistics, never updated)."""
    from gdw_tf.models.layers import HEAD_LAYER

    model.get_layer(HEAD_LAYER)  # a ValueError if the model has no head of that name
    for layer in model.layers:
        layer.trainable = layer.name == HEAD_LAYER
