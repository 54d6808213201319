"""Dump a PyTorch / torchvision state_dict (``.pth``/``.pt``) to ``.npz`` for ``init_weights``.

Usage (no PyTorch needed for files written by ``torch.save`` since PyTorch 1.6,
e.g. torchvision's ``resnet18-f37072fd.pth``)::

    python -m gdw_tf.models.convert_torchvision resnet18-f37072fd.pth resnet18.npz

Keys keep their torchvision names (``conv1.weight``, ``layer1.0.bn1.running_mean``, ...)
and tensors keep the PyTorch layout; ``torchvision_weights`` converts layouts on load.
Such files are zip archives of a pickle plus raw tensor storages: ``read_torch_zip``
reads them with numpy, allowing only the pickle globals a state dict uses (nothing
else is executed). Older (legacy, non-zip) files need PyTorch, imported lazily.
"""
from __future__ import annotations

import argparse
import collections
import os
import pickle
import sys
import zipfile

import numpy as np

DATA_PARALLEL_PREFIX = "module."


def _storage_dtypes() -> dict[str, np.dtype]:
    import ml_dtypes  # installed with TensorFlow

    return {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
            "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
            "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
            "BoolStorage": np.bool_}


class _StorageType:
    """Stands for ``torch.<Name>Storage`` in the pickle: which dtype a storage holds."""

    def __init__(self, name: str, dtype):
        self.name, self.dtype = name, np.dtype(dtype)


def _rebuild_tensor(storage, offset, size, stride, *_):
    """torch._utils._rebuild_tensor_v2: a view of `storage` (strides in elements), copied."""
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=[s * storage.itemsize for s in stride])
    return np.array(view)


def _rebuild_parameter(data, *_):
    return data


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, byteorder: str, path: str):
        super().__init__(file)
        self.archive, self.prefix, self.byteorder, self.path = archive, prefix, byteorder, path
        self.dtypes = _storage_dtypes()

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in self.dtypes:
            return _StorageType(name, self.dtypes[name])
        raise ValueError(f"convert_torchvision: '{self.path}' holds {module}.{name}, which is not "
                         "part of a plain state_dict (save model.state_dict() instead)")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid[:5]
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise ValueError(f"convert_torchvision: '{self.path}': unsupported storage {pid!r}")
        dtype = storage_type.dtype.newbyteorder("<" if self.byteorder == "little" else ">")
        data = np.frombuffer(self.archive.read(f"{self.prefix}data/{key}"), dtype)
        if data.size != numel:
            raise ValueError(f"convert_torchvision: '{self.path}': storage {key} has {data.size} "
                             f"elements, the pickle says {numel}")
        return data


def read_torch_zip(path: str) -> dict:
    """The object ``torch.save`` wrote to the zip file ``path`` (a state dict), with numpy only.

    Tensors come back as numpy arrays (native byte order) in their PyTorch layout.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
            if len(pickles) != 1:
                raise ValueError(f"convert_torchvision: '{path}' is a zip file but not a torch.save "
                                 f"archive (found {len(pickles)} data.pkl)")
            prefix = pickles[0][:-len("data.pkl")]
            names = set(archive.namelist())
            byteorder = (archive.read(f"{prefix}byteorder").decode().strip()
                         if f"{prefix}byteorder" in names else "little")
            with archive.open(pickles[0]) as f:
                obj = _StateDictUnpickler(f, archive, prefix, byteorder, path).load()
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, KeyError) as e:
        raise ValueError(f"convert_torchvision: cannot read '{path}': {e}") from e
    return _unwrap_state_dict(obj, path)


def _unwrap_state_dict(obj, path: str) -> dict:
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        obj = obj.state_dict()
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"convert_torchvision: '{path}' holds a {type(obj).__name__}, "
                         f"not a state_dict")
    return obj


def _load_torch_file(path: str):
    """A legacy (pre-1.6, non-zip) torch file, read with PyTorch."""
    try:
        import torch
    except ImportError as e:
        raise RuntimeError(
            f"convert_torchvision: '{path}' is not a zip archive (torch.save since PyTorch 1.6); "
            f"reading this older format needs PyTorch (pip install torch), or re-save it with "
            f"a recent PyTorch"
        ) from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"convert_torchvision: cannot read '{path}' with torch.load: {e}") from e
    return _unwrap_state_dict(obj, path)


def state_dict_to_arrays(state_dict) -> dict[str, np.ndarray]:
    """name -> numpy array for every tensor entry (a ``module.`` prefix on all keys is dropped)."""
    arrays = {}
    for name, value in state_dict.items():
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        if isinstance(value, np.ndarray):
            arrays[str(name)] = value
    if arrays and all(k.startswith(DATA_PARALLEL_PREFIX) for k in arrays):
        arrays = {k[len(DATA_PARALLEL_PREFIX):]: v for k, v in arrays.items()}
    return arrays


def save_arrays_npz(arrays: dict[str, np.ndarray], out_path: str) -> None:
    """Write ``arrays`` to ``out_path`` (must end in ``.npz``; written uncompressed)."""
    if not out_path.endswith(".npz"):
        raise ValueError(f"convert_torchvision: output '{out_path}' must end in .npz")
    if not arrays:
        raise ValueError(f"convert_torchvision: no tensors to write to '{out_path}'")
    np.savez(out_path, **arrays)


def convert(in_path: str, out_path: str) -> list[str]:
    """``in_path`` (.pth/.pt state_dict) -> ``out_path`` (.npz); returns the tensor names."""
    if not os.path.isfile(in_path):
        raise FileNotFoundError(f"convert_torchvision: input file not found: '{in_path}'")
    if not out_path.endswith(".npz"):  # check before the (slow) torch import
        raise ValueError(f"convert_torchvision: output '{out_path}' must end in .npz")
    state_dict = read_torch_zip(in_path) if zipfile.is_zipfile(in_path) else _load_torch_file(in_path)
    arrays = state_dict_to_arrays(state_dict)
    save_arrays_npz(arrays, out_path)
    return list(arrays)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gdw_tf.models.convert_torchvision",
        description="Dump a torchvision state_dict (.pth) to .npz for gdw_tf init_weights.")
    parser.add_argument("input", help="state_dict file written by torch.save (.pth / .pt)")
    parser.add_argument("output", help="output .npz path")
    args = parser.parse_args(argv)
    try:
        names = convert(args.input, args.output)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(names)} tensors to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
