"""Dump a PyTorch / torchvision state_dict (``.pth``/``.pt``) to ``.npz`` for ``init_weights``.

Usage (no PyTorch needed for files written by ``torch.save`` since PyTorch 1.6,
e.g. torchvision's ``resnet18-f37072fd.pth``)::

    python -m gdw_tf.convert_torchvision resnet18-f37072fd.pth resnet18.npz

Keys keep their torchvision names (``conv1.weight``, ``layer1.0.bn1.running_mean``, ...)
and tensors keep the PyTorch layout; ``torchvision_weights`` converts layouts on load.
Such files are zip archives of a pickle plus raw tensor storages: ``read_torch_zip``
reads them with numpy, allowing only the pickle globals a state dict uses (nothing
else is executed), and copies a tensor out only after checking that its view (size,
stride, offset) lies inside its storage record. A malformed file is refused with one
line naming the file and tensor. Older (legacy, non-zip) files need PyTorch, imported lazily.
"""
from __future__ import annotations

import argparse
import collections
import math
import os
import pickle
import reprlib
import sys
import zipfile

import numpy as np

from gdw_tf.files import WriteError, atomic_open
from gdw_tf.run_dir import USER_ERROR_EXIT_CODE

DATA_PARALLEL_PREFIX = "module."
MAX_DIMS = 32  # more dimensions than any real tensor has: refused


class ConversionError(ValueError):
    """A file (or output path) the converter refuses, with one line saying what is wrong."""

    def __init__(self, message):
        super().__init__(" ".join(str(message).split()))


def _storage_dtypes() -> dict[str, np.dtype]:
    import ml_dtypes  # installed with TensorFlow

    return {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
            "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
            "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
            "BoolStorage": np.bool_}


class _Sealed:
    """An object handed to the pickle: its BUILD opcode may not set attributes on it."""

    def __setstate__(self, state):
        raise ConversionError(f"the pickle modifies a {type(self).__name__.lstrip('_')}, "
                              "which a state_dict never does")


class _StorageType(_Sealed):
    """Stands for ``torch.<Name>Storage`` in the pickle: which dtype a storage holds."""

    def __init__(self, name: str, dtype):
        self.name, self.dtype = name, np.dtype(dtype)


class _Storage(_Sealed):
    """The storage record ``record`` of the zip: ``data`` holds its bytes (uint8, C order)
    in native byte order, ``data.size // dtype.itemsize`` elements of ``dtype``."""

    def __init__(self, record: str, dtype: np.dtype, data: np.ndarray):
        self.record, self.dtype, self.data = record, dtype, data

    @property
    def numel(self) -> int:
        return self.data.size // self.dtype.itemsize


class _TensorView(_Sealed):
    """A tensor as the pickle describes it, checked and copied out by `_tensor_array`."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _rebuild_tensor(storage, offset, size, stride, *_):
    """torch._utils._rebuild_tensor_v2: the view of `storage` (strides in elements), unchecked."""
    return _TensorView(storage, offset, size, stride)


def _rebuild_parameter(data, *_):
    return data


def _short(value) -> str:
    return reprlib.repr(value)


def _tensor_array(view: _TensorView, name) -> np.ndarray:
    """The elements of `view` as a new C-contiguous array of shape ``view.size``.

    Refused (ConversionError naming the tensor): anything but a view of a storage record
    with int sizes, strides and offset, none negative, at most MAX_DIMS dimensions, every
    element inside the storage, and no more elements than the storage holds (an expanded
    view could otherwise make a huge array from a small file). A zero-size tensor reads
    nothing, so only its shape matters.
    """
    where = f"tensor {name!r}"
    storage = view.storage
    if not isinstance(storage, _Storage):
        raise ConversionError(f"{where} is not a view of a tensor storage "
                              f"(the pickle gives a {type(storage).__name__})")
    where += f" (record {storage.record!r})"
    size, stride, offset = view.size, view.stride, view.offset
    if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)):
        raise ConversionError(f"{where}: size {_short(size)} and stride {_short(stride)} are not "
                              "tuples of one length")
    if len(size) > MAX_DIMS:
        raise ConversionError(f"{where}: {len(size)} dimensions, more than {MAX_DIMS}")
    for label, values in (("size", size), ("stride", stride), ("offset", (offset,))):
        shown = _short(values if label != "offset" else offset)
        if not all(type(v) is int for v in values):  # not bool, float, str, ...
            raise ConversionError(f"{where}: {label} {shown} is not made of integers")
        if min(values, default=0) < 0:
            raise ConversionError(f"{where}: {label} {shown} is negative")
    dtype, n = storage.dtype, storage.numel
    if math.prod(d for d in size if d) * dtype.itemsize > sys.maxsize:
        raise ConversionError(f"{where}: size {_short(size)} is too large for an array")
    numel = math.prod(size)
    if numel == 0:
        return np.zeros(size, dtype)
    needed = offset + sum((d - 1) * s for d, s in zip(size, stride)) + 1  # last element + 1
    if needed > n:
        raise ConversionError(f"{where}: size {_short(size)} stride {_short(stride)} offset "
                              f"{offset} needs {needed} {dtype.name} elements, "
                              f"its storage holds {n}")
    if numel > n:
        raise ConversionError(f"{where}: size {_short(size)} has {numel} elements, more than its "
                              f"storage's {n} (an expanded view: save a contiguous copy)")
    # Every addressed element is inside the storage (and np.ndarray checks that again).
    strides = [s * dtype.itemsize if d > 1 else 0 for d, s in zip(size, stride)]
    return np.ndarray(size, dtype, buffer=storage.data, offset=offset * dtype.itemsize,
                      strides=strides).copy()


def _read_storage(archive: zipfile.ZipFile, record: str, dtype: np.dtype, numel,
                  swap: bool) -> _Storage:
    """Storage `record` of `numel` elements of `dtype` (byte-swapped if `swap`), checked."""
    try:
        info = archive.getinfo(record)
    except KeyError:
        raise ConversionError(f"storage record {record!r} is missing") from None
    if type(numel) is not int or numel < 0:
        raise ConversionError(f"storage record {record!r}: the pickle gives its size as "
                              f"{_short(numel)}")
    if info.file_size % dtype.itemsize:
        raise ConversionError(f"storage record {record!r} has {info.file_size} bytes, not a whole "
                              f"number of {dtype.name} elements ({dtype.itemsize} bytes each)")
    if info.file_size // dtype.itemsize != numel:
        raise ConversionError(f"storage record {record!r} holds {info.file_size // dtype.itemsize} "
                              f"{dtype.name} elements, the pickle says {numel}")
    try:
        raw = archive.read(info)  # the zip module checks the size and CRC
    except Exception as e:  # corrupt bytes raise many types (BadZipFile, zlib.error, ...)
        raise ConversionError(f"cannot read storage record {record!r}: "
                              f"{type(e).__name__}: {e}") from e
    data = np.frombuffer(raw, np.uint8)
    if swap and dtype.itemsize > 1:
        data = data.reshape(-1, dtype.itemsize)[:, ::-1].copy().reshape(-1)  # C order
    if dtype == np.bool_:
        data = (data != 0).view(np.uint8)  # any non-zero byte is True
    return _Storage(record, dtype, data)


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, byteorder: str):
        super().__init__(file)
        self.archive, self.prefix, self.swap = archive, prefix, byteorder != sys.byteorder
        self.dtypes = _storage_dtypes()
        self.storages = {}  # (record key, storage type) -> _Storage, read once

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in self.dtypes:
            return _StorageType(name, self.dtypes[name])
        if module == "torch" and name.endswith("Storage"):
            raise ConversionError(f"it holds a torch.{name}, an unsupported storage type "
                                  f"(supported: {', '.join(self.dtypes)})")
        raise ConversionError(f"it holds {module}.{name}, which is not part of a plain state_dict "
                              "(save model.state_dict() instead)")

    def persistent_load(self, pid):
        """('storage', storage type, record key, device, number of elements) -> _Storage."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)):
            raise ConversionError(f"unsupported storage reference {_short(pid)} in the pickle")
        _, storage_type, key, _device, numel = pid
        if (key, storage_type.name) not in self.storages:
            self.storages[key, storage_type.name] = _read_storage(
                self.archive, f"{self.prefix}data/{key}", storage_type.dtype, numel, self.swap)
        storage = self.storages[key, storage_type.name]
        if storage.numel != numel:
            raise ConversionError(f"storage record {storage.record!r} holds {storage.numel} "
                                  f"elements, the pickle says {_short(numel)}")
        return storage


def read_torch_zip(path: str) -> dict:
    """The state dict ``torch.save`` wrote to the zip file ``path``, with numpy only.

    Tensors come back as new numpy arrays (native byte order) in their PyTorch layout,
    read only from the bytes of their storage records. Any malformed file raises
    ConversionError naming the file (and the record or tensor).
    """
    try:
        state_dict = _unwrap_state_dict(_unpickle_zip(path), path)
        return {name: _tensor_array(value, name) if isinstance(value, _TensorView) else value
                for name, value in state_dict.items()}
    except ConversionError as e:
        if str(e).startswith("convert_torchvision:"):
            raise
        raise ConversionError(f"convert_torchvision: '{path}': {e}") from e


def _unpickle_zip(path: str):
    """The unpickled data.pkl of the torch.save zip ``path`` (tensors as `_TensorView`s)."""
    if not zipfile.is_zipfile(path):
        raise ConversionError(f"convert_torchvision: '{path}' is not a complete zip archive "
                              "(truncated or corrupt?)")
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
            if len(pickles) != 1:
                raise ConversionError(f"it is a zip file but not a torch.save archive "
                                      f"(found {len(pickles)} data.pkl)")
            prefix = pickles[0][:-len("data.pkl")]
            byteorder = "little"
            if f"{prefix}byteorder" in archive.namelist():
                byteorder = archive.read(f"{prefix}byteorder").decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise ConversionError(f"record '{prefix}byteorder' says {_short(byteorder)}, "
                                      "not 'little' or 'big'")
            try:
                with archive.open(pickles[0]) as f:
                    return _StateDictUnpickler(f, archive, prefix, byteorder).load()
            except ConversionError:
                raise
            except Exception as e:  # what corrupt pickle bytes raise varies (EOFError, ...)
                raise ConversionError(f"{pickles[0]!r} is not a readable state_dict pickle "
                                      f"({type(e).__name__}: {e})") from e
    except ConversionError:
        raise
    except Exception as e:  # the zip module on corrupt bytes (BadZipFile, NotImplementedError, ...)
        raise ConversionError(f"convert_torchvision: cannot read '{path}': "
                              f"{type(e).__name__}: {e}") from e


def _unwrap_state_dict(obj, path: str) -> dict:
    if not isinstance(obj, dict) and hasattr(obj, "state_dict") and callable(obj.state_dict):
        obj = obj.state_dict()
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ConversionError(f"convert_torchvision: '{path}' holds a {type(obj).__name__}, "
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
    """Write ``arrays`` to ``out_path`` (must end in ``.npz``; uncompressed, no pickles).

    Atomic: written to a temporary file in the same directory, renamed over ``out_path``
    once complete; on any failure the temporary file is removed and ``out_path`` is
    untouched. Write errors raise ConversionError naming ``out_path``.
    """
    if not out_path.endswith(".npz"):
        raise ConversionError(f"convert_torchvision: output '{out_path}' must end in .npz")
    if not arrays:
        raise ConversionError(f"convert_torchvision: no tensors to write to '{out_path}'")
    try:
        with atomic_open(out_path, "wb") as f:
            _write_npz(f, arrays)
    except WriteError as e:
        raise ConversionError(f"convert_torchvision: {e}") from e


def _write_npz(file, arrays: dict[str, np.ndarray]) -> None:
    """The .npz layout of np.savez (a zip of NAME.npy), for any key (np.savez reserves some)."""
    with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def convert(in_path: str, out_path: str) -> list[str]:
    """``in_path`` (.pth/.pt state_dict) -> ``out_path`` (.npz); returns the tensor names.

    Bad input raises ConversionError (a ValueError), FileNotFoundError, or RuntimeError
    (a legacy file without PyTorch installed), each with a one-line message.
    """
    if not os.path.isfile(in_path):
        raise FileNotFoundError(f"convert_torchvision: input file not found: '{in_path}'")
    if not out_path.endswith(".npz"):  # check before the (slow) torch import
        raise ConversionError(f"convert_torchvision: output '{out_path}' must end in .npz")
    with open(in_path, "rb") as f:
        looks_like_zip = f.read(2) == b"PK"  # torch.save zips start so; a cut one fails later
    if looks_like_zip or zipfile.is_zipfile(in_path):
        state_dict = read_torch_zip(in_path)
    else:
        state_dict = _load_torch_file(in_path)
    arrays = state_dict_to_arrays(state_dict)
    save_arrays_npz(arrays, out_path)
    return list(arrays)


def main(argv=None) -> int:
    """The command line: exit status 0, or USER_ERROR_EXIT_CODE with one line on stderr."""
    parser = argparse.ArgumentParser(
        prog="python -m gdw_tf.convert_torchvision",
        description="Dump a torchvision state_dict (.pth) to .npz for gdw_tf init_weights.")
    parser.add_argument("input", help="state_dict file written by torch.save (.pth / .pt)")
    parser.add_argument("output", help="output .npz path")
    args = parser.parse_args(argv)
    try:
        names = convert(args.input, args.output)
    except (ValueError, OSError, RuntimeError) as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    print(f"wrote {len(names)} tensors to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
