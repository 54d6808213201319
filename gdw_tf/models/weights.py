"""Loading initial weights from LOCAL files (never downloads), dispatched on the file extension.

Formats are registered with :func:`register_weight_format`; this module provides
``"keras"`` (``.weights.h5`` saved by ``model.save_weights`` from the same
architecture) and ``"keras_file"`` (a ``.keras`` model saved by ``model.save``).
``torchvision_weights`` adds ``"torchvision"`` (``.npz`` state_dicts).
A pretrained classifier head (layer ``HEAD_LAYER``) whose number of classes differs
from the model's is skipped and reported; every other mismatch is an error.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import keras

from gdw_tf.models.layers import HEAD_LAYER

logger = logging.getLogger(__name__)


@dataclass
class WeightLoadReport:
    """What a loader did: ``loaded`` / ``skipped`` are layer or tensor names."""

    path: str
    format: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class WeightFormat:
    """A loadable file format: ``loader(model, path) -> WeightLoadReport``."""

    name: str
    suffix: str
    description: str
    loader: Callable[[keras.Model, str], WeightLoadReport]


_FORMATS: dict[str, WeightFormat] = {}


def register_weight_format(name: str, suffix: str, description: str):
    """Decorator registering ``loader(model, path)`` for files ending in ``suffix``."""

    def decorator(loader):
        _FORMATS[name] = WeightFormat(name, suffix, description, loader)
        return loader

    return decorator


def registered_suffixes() -> tuple[str, ...]:
    """File name endings of the registered weight formats."""
    return tuple(f.suffix for f in _FORMATS.values())


def load_init_weights(model: keras.Model, path, formats: Sequence[str]) -> WeightLoadReport:
    """Load the local file ``path`` into ``model`` using one of ``formats`` (by extension)."""
    path = os.fspath(path)
    allowed = [_FORMATS[f] for f in formats]
    if not os.path.isfile(path):
        raise FileNotFoundError(f"init_weights file not found: '{path}' (model '{model.name}')")
    for fmt in allowed:
        if path.endswith(fmt.suffix):
            report = fmt.loader(model, path)
            logger.info("%s: loaded %d entries from '%s' (%s)%s", model.name,
                        len(report.loaded), path, fmt.name,
                        f", skipped {report.skipped}" if report.skipped else "")
            return report
    expected = "; ".join(f"{f.suffix} ({f.description})" for f in allowed)
    raise ValueError(
        f"init_weights='{path}': unsupported file extension for model '{model.name}'; "
        f"expected {expected}"
    )


def head_layer(model: keras.Model):
    """The model's classifier Dense layer (named ``HEAD_LAYER``), or None."""
    try:
        return model.get_layer(HEAD_LAYER)
    except ValueError:
        return None


def _snake_case(class_name: str) -> str:
    out = []
    for i, ch in enumerate(class_name):
        if ch.isupper() and i > 0 and (class_name[i - 1].islower() or (
                i + 1 < len(class_name) and class_name[i + 1].islower())):
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def _h5_head_kernel_shape(model: keras.Model, path: str):
    """Shape of the head kernel stored in a Keras ``.weights.h5`` file, or None.

    Keras stores layer variables under ``layers/<snake_class>[_<k>]/vars/<i>`` where
    ``k`` counts earlier layers of the same class, so the head's key is derived from
    its position in ``model.layers``.
    """
    import h5py

    head = head_layer(model)
    if head is None:
        return None
    index = model.layers.index(head)
    same = sum(type(layer).__name__ == type(head).__name__ for layer in model.layers[:index])
    key = _snake_case(type(head).__name__) + (f"_{same}" if same else "")
    try:
        with h5py.File(path, "r") as f:
            dataset = f.get(f"layers/{key}/vars/0")
            if dataset is None or len(dataset.shape) != 2:
                return None
            return tuple(int(d) for d in dataset.shape)
    except OSError as e:
        raise ValueError(f"init_weights='{path}': not a readable HDF5 weights file ({e})") from e


# Keras' error for the first tensor of a file that does not fit (saving_lib reports the
# first object that failed to load, in loading order).
_SHAPE_MISMATCH = re.compile(r"variable\.shape=(\([^)]*\)), Received: value\.shape=(\([^)]*\))"
                             r"\. Target variable: <Variable path=([^,]+),")


def _mismatch(error: Exception) -> str:
    """One line from Keras' (multi-line) loading error: the first mismatching tensor."""
    found = _SHAPE_MISMATCH.search(str(error))
    if found:
        model_shape, file_shape, tensor = found.groups()
        return f"first mismatching tensor {tensor}: file {file_shape}, model {model_shape}"
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    detail = next((line for line in lines if not line.startswith("A total of")), "")
    return detail or type(error).__name__


def _strict_keras_load(model: keras.Model, path: str) -> None:
    try:
        model.load_weights(path)
    except Exception as e:  # Keras raises ValueError / KeyError depending on the mismatch
        raise ValueError(
            f"init_weights='{path}': does not match the architecture of model "
            f"'{model.name}': {_mismatch(e)}"
        ) from e


def _with_head_units(model: keras.Model, units: int) -> keras.Model:
    """A fresh copy of ``model`` whose head has ``units`` outputs (all else identical)."""

    def clone_layer(layer):
        config = layer.get_config()
        if layer.name == HEAD_LAYER:
            config["units"] = units
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=clone_layer)


@register_weight_format("keras", ".weights.h5", "Keras weights saved from this architecture")
def load_keras_weights(model: keras.Model, path: str) -> WeightLoadReport:
    """Load a ``.weights.h5`` of the same architecture; a head of another size is skipped."""
    report = WeightLoadReport(path, "keras")
    weighted = [layer.name for layer in model.layers if layer.weights]
    head = head_layer(model)
    file_head = _h5_head_kernel_shape(model, path)
    if head is None or file_head is None or file_head == tuple(head.kernel.shape):
        _strict_keras_load(model, path)
        report.loaded = weighted
        return report
    if file_head[0] != head.kernel.shape[0]:
        raise ValueError(
            f"init_weights='{path}': head '{HEAD_LAYER}' kernel has shape {file_head}, "
            f"model '{model.name}' expects ({head.kernel.shape[0]}, num_classes)"
        )
    donor = _with_head_units(model, file_head[1])
    _strict_keras_load(donor, path)
    for name in weighted:
        if name != HEAD_LAYER:
            model.get_layer(name).set_weights(donor.get_layer(name).get_weights())
            report.loaded.append(name)
    report.skipped = [HEAD_LAYER]
    logger.warning(
        "%s: skipped classifier head '%s' from '%s': file has %d classes, model has %d; "
        "the head keeps its fresh initialization", model.name, HEAD_LAYER, path,
        file_head[1], head.kernel.shape[1])
    return report


@register_weight_format("keras_file", ".keras",
                        "a Keras model saved (model.save) from this architecture")
def load_keras_model_file(model: keras.Model, path: str) -> WeightLoadReport:
    """Load the weights of a whole saved ``.keras`` model of the same architecture (strict)."""
    _strict_keras_load(model, path)
    return WeightLoadReport(path, "keras_file",
                            loaded=[layer.name for layer in model.layers if layer.weights])
