"""Load a torchvision state_dict saved as ``.npz`` (torchvision tensor names as keys).

Keras layer ``a_b_c`` corresponds to torchvision module ``a.b.c`` (see ``blocks``), and
parameters are converted as follows:

* Conv2D ``weight`` (O, I, kh, kw) -> ``kernel`` (kh, kw, I, O); ``bias`` as is;
* BatchNormalization ``weight`` / ``bias`` / ``running_mean`` / ``running_var`` ->
  ``gamma`` / ``beta`` / ``moving_mean`` / ``moving_variance``;
* Dense ``weight`` (out, in) -> ``kernel`` (in, out); ``bias`` as is.

``*.num_batches_tracked`` entries are ignored. Any missing, unexpected or mis-shaped
tensor raises before anything is assigned, except a head (``fc``) with a different
number of classes, which is skipped and logged.
"""
from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np

from gdw_tf.models.layers import HEAD_LAYER
from gdw_tf.models.weights import WeightLoadReport, register_weight_format

logger = logging.getLogger(__name__)

IGNORED_SUFFIXES = ("num_batches_tracked",)


@dataclass(frozen=True)
class ParamMap:
    """torchvision parameter ``torch`` <-> Keras variable attribute ``keras``."""

    torch: str
    keras: str
    to_keras: Callable[[np.ndarray], np.ndarray]
    torch_shape: Callable[[tuple], tuple]  # Keras variable shape -> torch tensor shape


def _identity(a):
    return a


_CONV_KERNEL = ParamMap("weight", "kernel", lambda a: np.transpose(a, (2, 3, 1, 0)),
                        lambda s: (s[3], s[2], s[0], s[1]))
_DENSE_KERNEL = ParamMap("weight", "kernel", lambda a: np.transpose(a, (1, 0)),
                         lambda s: (s[1], s[0]))


def _same(torch_name, keras_name):
    return ParamMap(torch_name, keras_name, _identity, tuple)


# Keras layer class -> how its variables are named and laid out in torchvision.
PARAM_MAPS: dict[type, tuple[ParamMap, ...]] = {
    keras.layers.Conv2D: (_CONV_KERNEL, _same("bias", "bias")),
    keras.layers.BatchNormalization: (
        _same("weight", "gamma"), _same("bias", "beta"),
        _same("running_mean", "moving_mean"), _same("running_var", "moving_variance")),
    keras.layers.Dense: (_DENSE_KERNEL, _same("bias", "bias")),
}


def torch_module_name(layer_name: str) -> str:
    """Keras layer name -> torchvision module name
    (``layer2_0_downsample_0`` -> ``layer2.0.downsample.0``)."""
    return layer_name.replace("_", ".")


def expected_tensors(model: keras.Model) -> dict[str, tuple]:
    """torchvision tensor name -> (keras variable, ParamMap) for every weight of ``model``."""
    out = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        maps = next((PARAM_MAPS[c] for c in type(layer).__mro__ if c in PARAM_MAPS), None)
        if maps is None:
            raise ValueError(f"model '{model.name}': layer '{layer.name}' of type "
                             f"{type(layer).__name__} has no torchvision mapping")
        for pm in maps:
            variable = getattr(layer, pm.keras, None)
            if variable is not None:
                out[f"{torch_module_name(layer.name)}.{pm.torch}"] = (variable, pm)
    return out


def _read_npz(path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"init_weights='{path}': not a readable .npz archive ({e})") from e


def _head_to_skip(model, path, arrays, expected) -> list[str]:
    """torch names of a head whose class count differs from the model's (else [])."""
    name = f"{torch_module_name(HEAD_LAYER)}.weight"
    if name not in arrays or name not in expected:
        return []
    variable, pm = expected[name]
    want, got = pm.torch_shape(tuple(variable.shape)), arrays[name].shape
    if got == want or len(got) != 2 or got[1] != want[1]:
        return []  # identical, or a real mismatch reported by the shape check
    skipped = [n for n in expected if n.startswith(f"{torch_module_name(HEAD_LAYER)}.")]
    logger.warning(
        "%s: skipped classifier head %s from '%s': file has %d classes, model has %d; "
        "the head keeps its fresh initialization", model.name, skipped, path, got[0], want[0])
    return skipped


@register_weight_format("torchvision", ".npz", "torchvision state_dict saved as npz")
def load_torchvision_npz(model: keras.Model, path: str) -> WeightLoadReport:
    """Assign every variable of ``model`` from the torchvision-named arrays in ``path``."""
    arrays = _read_npz(path)
    expected = expected_tensors(model)
    skipped = _head_to_skip(model, path, arrays, expected)
    missing = [n for n in expected if n not in arrays and n not in skipped]
    if missing:
        raise ValueError(f"init_weights='{path}': missing tensor(s) {missing[:8]}"
                         f"{' ...' if len(missing) > 8 else ''} needed by model '{model.name}'")
    unexpected = [n for n in arrays
                  if n not in expected and not n.endswith(IGNORED_SUFFIXES)]
    if unexpected:
        raise ValueError(f"init_weights='{path}': unexpected tensor(s) {unexpected[:8]}"
                         f"{' ...' if len(unexpected) > 8 else ''} not in model '{model.name}'")
    assignments = []
    for name, (variable, pm) in expected.items():
        if name in skipped:
            continue
        want = pm.torch_shape(tuple(variable.shape))
        if arrays[name].shape != want:
            raise ValueError(
                f"init_weights='{path}': tensor '{name}' has shape {arrays[name].shape}, "
                f"model '{model.name}' expects {want} (torch layout)")
        assignments.append((name, variable, pm.to_keras(arrays[name])))
    for _, variable, value in assignments:
        variable.assign(np.asarray(value, dtype=variable.dtype))
    return WeightLoadReport(path, "torchvision", [n for n, _, _ in assignments], skipped)
