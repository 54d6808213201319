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
    """A registered constructor ``fn(num_classes, input_shape, init_weights, **kw)``."""

    name: str
    fn: Callable[..., keras.Model]
    default_input_shape: tuple


_MODELS = Registry("model")


def register_model(name: str, default_input_shape: tuple):
    """Decorator registering a model constructor under ``name``."""

    def decorator(fn):
        _MODELS.register(name)(ModelSpec(name, fn, tuple(default_input_shape)))
        return fn

    return decorator


def available_models() -> list[str]:
    """Sorted names accepted by :func:`build`."""
    return _MODELS.names()


def get_model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` registered under ``name``; unknown names list the choices."""
    return _MODELS.get(name)


def build(name: str, num_classes: int, input_shape=None, init_weights: str | None = None,
          **kwargs) -> keras.Model:
    """Build registered model ``name`` -> functional ``keras.Model`` outputting logits.

    ``input_shape`` (H, W, C) defaults to the model's own (e.g. (32, 32, 3) for resnet32);
    ``init_weights`` is an optional local weights file (see each constructor); other
    keyword arguments go to the constructor.
    """
    spec = get_model_spec(name)
    if input_shape is None:
        input_shape = spec.default_input_shape
    return spec.fn(num_classes=num_classes, input_shape=input_shape,
                   init_weights=init_weights, **kwargs)


def check_init_weights(name: str, path, known_input: tuple[int, tuple] | None = None) -> None:
    """Fails, naming the file, unless ``path`` can initialise model ``name`` (before data is read).

    ``known_input`` = (num_classes, input_shape) of the run: the model is built and
    the file loaded into it (every tensor's shape checked). None (not known before
    the data): only that the file exists and has a weights format's extension.
    """
    from gdw_tf.models.weights import registered_suffixes

    get_model_spec(name)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"init_weights={path}: file not found")
    if known_input is None:
        if not path.endswith(registered_suffixes()):
            raise ValueError(f"init_weights={path}: unsupported file extension; expected one of "
                             f"{', '.join(registered_suffixes())}")
        return
    num_classes, input_shape = known_input
    build(name, num_classes, input_shape, init_weights=path)
