"""Dump a PyTorch / torchvision state_dict (``.pth``/``.pt``) to ``.npz`` for ``init_weights``.

Usage::

    python -m gdw_tf.models.convert_torchvision resnet18-f37072fd.pth resnet18.npz

Keys keep their torchvision names (``conv1.weight``, ``layer1.0.bn1.running_mean``, ...)
and tensors keep the PyTorch layout; ``torchvision_weights`` converts layouts on load.
PyTorch is needed only here and is imported lazily.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

DATA_PARALLEL_PREFIX = "module."


def _load_torch_file(path: str):
    try:
        import torch
    except ImportError as e:
        raise RuntimeError(
            f"convert_torchvision: reading '{path}' needs PyTorch, which is not installed "
            f"(pip install torch), or export the state_dict to .npz elsewhere"
        ) from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"convert_torchvision: cannot read '{path}' with torch.load: {e}") from e
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        obj = obj.state_dict()
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"convert_torchvision: '{path}' holds a {type(obj).__name__}, "
                         f"not a state_dict")
    return obj


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
    arrays = state_dict_to_arrays(_load_torch_file(in_path))
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
