"""convert_torchvision on malformed .pth files: a one-line refusal, never a read past the file.

Tensor views (size, stride, offset) come from the file: the converter must check them
against their storage. Fuzzed inputs either convert to exactly the values an independent
element-by-element reading of the storage bytes gives, or raise ``ConversionError``.
"""
import errno
import math
import os
import pickle
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from gdw_tf import convert_torchvision
from gdw_tf.convert_torchvision import ConversionError
from tests.fixtures import TORCH_STORAGES, write_torch_zip
from tests.tiny import ROOT, subprocess_env

FOUR_FLOATS = np.arange(4, dtype="float32")
DTYPES = ["float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool"]
SAME_SIZE = {"float32": "int32", "int32": "float32", "float64": "int64", "int64": "float64",
             "float16": "int16", "int16": "float16", "int8": "uint8", "uint8": "int8",
             "bool": "uint8"}  # another dtype of the same element size


def _probe(tmp_path, monkeypatch, offset, size, stride):
    """A .pth whose only tensor, fc.weight, is the given view of a 4-float storage."""
    pth = str(tmp_path / "probe.pth")
    write_torch_zip(pth, {}, monkeypatch, views={"fc.weight": (FOUR_FLOATS, offset, size, stride)})
    return pth, str(tmp_path / "probe.npz")


def _rewrite(path, members):
    """Replaces zip members of ``path`` by suffix (``data.pkl``, ``data/0``, ...); None deletes."""
    with zipfile.ZipFile(path) as z:
        items = {name: z.read(name) for name in z.namelist()}
    with zipfile.ZipFile(path, "w") as z:
        for name, data in items.items():
            data = members.get(name.split("/", 1)[1], data)
            if data is not None:
                z.writestr(name, data)


def _one_error_line(err):
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


@pytest.mark.parametrize("offset, size, stride, match", [
    (0, (4096,), (1,), r"tensor 'fc\.weight'.*: size \(4096,\) stride \(1,\) offset 0 needs 4096 "
                       r"float32 elements, its storage holds 4$"),
    (-100000, (2,), (1,), r"tensor 'fc\.weight'.*: offset -100000 is negative$"),
])
def test_view_outside_its_storage_is_refused(tmp_path, monkeypatch, capsys, offset, size, stride,
                                             match):
    pth, npz = _probe(tmp_path, monkeypatch, offset, size, stride)
    assert convert_torchvision.main([pth, npz]) == 2
    err = capsys.readouterr().err
    assert re.search(match, _one_error_line(err)) and err.count("\n") == 1, err
    assert sorted(os.listdir(tmp_path)) == ["probe.pth"]


def test_huge_stride_is_refused_by_the_cli_not_a_segfault(tmp_path, monkeypatch):
    pth, npz = _probe(tmp_path, monkeypatch, 0, (1000,), (10**7,))
    proc = subprocess.run([sys.executable, "-m", "gdw_tf.convert_torchvision", pth, npz],
                          cwd=ROOT, env=subprocess_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    line = _one_error_line(proc.stderr)
    assert "tensor 'fc.weight'" in line and "stride (10000000,)" in line, line
    assert proc.stderr == line + "\n", proc.stderr  # one line: not even TensorFlow's start-up
    assert sorted(os.listdir(tmp_path)) == ["probe.pth"]


class _Pid:
    def __init__(self, pid):
        self.pid = pid


class _PidPickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, _Pid) else None


def _pickle_with_pid(pid):
    import io
    buffer = io.BytesIO()
    _PidPickler(buffer, protocol=2).dump({"fc.bias": _Pid(pid)})
    return buffer.getvalue()


def _corrupt_method(path):
    """Sets the compression method of every member to an unknown one (99)."""
    data = bytearray(open(path, "rb").read())
    for magic, at in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        for m in re.finditer(re.escape(magic), bytes(data)):
            data[m.start() + at:m.start() + at + 2] = (99).to_bytes(2, "little")
    open(path, "wb").write(bytes(data))


BAD_FILES = {  # what is wrong -> (edit of a good 2-tensor file, expected message)
    "truncated zip": (lambda p: open(p, "r+b").truncate(os.path.getsize(p) // 2),
                      r"not a complete zip archive"),
    "missing record": (lambda p: _rewrite(p, {"data/1": None}),
                       r"record 'archive/data/1'.* missing"),
    "garbage pickle": (lambda p: _rewrite(p, {"data.pkl": b"\x80\x02garbage"}), r"data\.pkl"),
    "persistent id not a tuple": (lambda p: _rewrite(p, {"data.pkl": _pickle_with_pid(42)}),
                                  r"storage.*42"),
    "odd storage length": (lambda p: _rewrite(p, {"data/0": b"\0" * 13}),
                           r"record 'archive/data/0'.* 13 bytes.*float32"),
    "storage size differs": (lambda p: _rewrite(p, {"data/0": b"\0" * 8}),
                             r"record 'archive/data/0'.* 2 float32 elements.*pickle says"),
    "byte order": (lambda p: _rewrite(p, {"byteorder": b"middle"}), r"byteorder"),
    "compression method": (_corrupt_method, r"probe\.pth"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_input_is_one_line_exit_2(tmp_path, monkeypatch, capsys, case):
    edit, match = BAD_FILES[case]
    pth, npz = str(tmp_path / "probe.pth"), str(tmp_path / "probe.npz")
    write_torch_zip(pth, {"w": np.ones(3, "float32"), "b": np.arange(2)}, monkeypatch)
    edit(pth)
    assert convert_torchvision.main([pth, npz]) == 2
    err = capsys.readouterr().err
    assert re.search(match, _one_error_line(err)) and err.count("\n") == 1, err
    assert sorted(os.listdir(tmp_path)) == ["probe.pth"]


def test_unknown_storage_dtype_is_refused(tmp_path, monkeypatch):
    pth, npz = str(tmp_path / "c.pth"), str(tmp_path / "c.npz")
    complex_storage = np.zeros(2, "complex64")
    write_torch_zip(pth, {}, monkeypatch, views={"fc.weight": (complex_storage, 0, (2,), (1,))})
    with pytest.raises(ConversionError, match="ComplexFloatStorage"):
        convert_torchvision.convert(pth, npz)


def _reference(raw, dtype, offset, size, stride):
    """The tensor the view denotes, read element by element from ``raw``; None if invalid.

    Valid: int sizes/strides/offset, none negative, equal ranks <= 32, a shape numpy can
    hold, every element inside the storage, and no more elements than the storage holds
    (no expanded views).
    """
    if not (type(size) is tuple and type(stride) is tuple and len(size) == len(stride) <= 32):
        return None
    if not all(type(v) is int and v >= 0 for v in (offset, *size, *stride)):
        return None
    n = len(raw) // dtype.itemsize
    if math.prod(size) > n or math.prod(d for d in size if d) * dtype.itemsize > sys.maxsize:
        return None
    out = np.zeros(size, dtype.newbyteorder("="))
    for index in np.ndindex(*size) if out.size else ():
        position = offset + sum(i * s for i, s in zip(index, stride))
        if position >= n:
            return None
        out[index] = np.frombuffer(raw, dtype, count=1, offset=position * dtype.itemsize)[0]
    return out


def _random_view(rng, n):
    """(offset, size, stride): mostly valid views of an n-element storage, some not."""
    rank = int(rng.integers(0, 4))
    size = [int(rng.integers(0, 4)) for _ in range(rank)]
    stride = [int(rng.integers(0, 6)) for _ in range(rank)]
    offset = int(rng.integers(0, n + 2))
    if rng.random() < 0.5:      # row-major, with axes permuted: fits if the storage is big enough
        stride = [math.prod(size[i + 1:]) for i in range(rank)]
        order = rng.permutation(rank)
        size, stride = [size[i] for i in order], [stride[i] for i in order]
        offset = int(rng.integers(0, max(n - math.prod(size), 0) + 1))
    odd = [-1, -100000, 10**7, 2**62, 10**30, 1.5, "2", None, True]
    kind = rng.integers(0, 16)  # 6..15: as generated
    if kind == 0 and rank:      # one odd entry in size or stride
        entries = size if rng.random() < 0.5 else stride
        entries[int(rng.integers(0, rank))] = odd[rng.integers(len(odd))]
    elif kind == 1:
        offset = odd[rng.integers(len(odd))]
    elif kind == 2:             # ranks differ
        stride.append(1)
    elif kind == 3:             # absurd rank
        size, stride = [1] * 40, [0] * 40
    elif kind == 4:             # a huge expanded view
        size, stride = [10**12], [0]
    elif kind == 5:             # strides not a tuple
        stride = 7
    return offset, tuple(size), tuple(stride) if isinstance(stride, list) else stride


def _fuzz_case(rng, tmp_path, monkeypatch):
    """Writes one fuzzed .pth; returns its path and the expected arrays (None: must be refused)."""
    dtype = np.dtype(DTYPES[rng.integers(len(DTYPES))])
    n = int(rng.integers(0, 13))
    high = 2 if dtype == np.dtype(bool) else 256
    raw = rng.integers(0, high, n * dtype.itemsize, dtype=np.uint8).tobytes()
    offset, size, stride = _random_view(rng, n)
    bias = rng.normal(size=3).astype("float32")
    pth = str(tmp_path / "fuzz.pth")
    write_torch_zip(pth, {"b": bias}, monkeypatch,
                    views={"w": (np.frombuffer(raw, dtype), offset, size, stride)})
    w = _reference(raw, dtype.newbyteorder("<"), offset, size, stride)
    expected = None if w is None else {"b": bias, "w": w}
    kind = rng.integers(0, 12)  # 7..11: the file as written
    data = open(pth, "rb").read()
    if kind == 0:                       # cut short
        open(pth, "wb").write(data[:rng.integers(2, len(data))])
        expected = None
    elif kind == 1:                     # one byte changed: refused, or read as if it were not
        at = int(rng.integers(0, len(data)))
        changed = bytes([data[at] ^ int(rng.integers(1, 256))])
        open(pth, "wb").write(data[:at] + changed + data[at + 1:])
    elif kind == 2:                     # big-endian storages
        _rewrite(pth, {"byteorder": b"big"})
        w = _reference(raw, dtype.newbyteorder(">"), offset, size, stride)
        bias = np.frombuffer(bias.tobytes(), ">f4").astype("float32")
        expected = None if w is None else {"b": bias, "w": w}
    elif kind == 3 and dtype.itemsize > 1:  # storage bytes not a whole number of elements
        _rewrite(pth, {"data/1": raw + b"\0" * int(rng.integers(1, dtype.itemsize))})
        expected = None
    elif kind == 4:                     # storage longer or shorter than the pickle says
        _rewrite(pth, {"data/1": raw + b"\0" * dtype.itemsize if rng.random() < 0.5 or not n
                       else raw[:-dtype.itemsize]})
        expected = None
    elif kind == 5:                     # pickle cut short
        with zipfile.ZipFile(pth) as z:
            pkl = z.read("archive/data.pkl")
        _rewrite(pth, {"data.pkl": pkl[:rng.integers(0, len(pkl))]})
        expected = None
    elif kind == 6:                     # the pickle names another dtype of the same size
        other = np.dtype(SAME_SIZE[dtype.name])
        with zipfile.ZipFile(pth) as z:
            pkl = z.read("archive/data.pkl")
        old, new = (f"torch\n{TORCH_STORAGES[t.name]}\n".encode() for t in (dtype, other))
        _rewrite(pth, {"data.pkl": pkl.replace(old, new)})
        w = _reference(raw, other.newbyteorder("<"), offset, size, stride)
        bias = bias.view(other) if dtype == np.float32 else bias
        expected = None if w is None else {"b": bias, "w": w}
    return pth, expected


def test_fuzzed_files_convert_exactly_or_are_refused(tmp_path, monkeypatch):
    rng = np.random.default_rng(20261201)
    outcomes = {"converted": 0, "refused": 0}
    for case in range(400):
        pth, expected = _fuzz_case(rng, tmp_path, monkeypatch)
        npz = str(tmp_path / "fuzz.npz")
        try:
            convert_torchvision.convert(pth, npz)
        except ConversionError as e:
            assert "\n" not in str(e), (case, str(e))
            assert sorted(os.listdir(tmp_path)) == ["fuzz.pth"], case
            outcomes["refused"] += 1
            continue
        assert expected is not None, f"case {case}: converted a file that must be refused"
        with np.load(npz) as got:
            assert sorted(got.files) == sorted(expected), case
            for name, want in expected.items():
                assert got[name].dtype == want.dtype and got[name].shape == want.shape, (case, name)
                assert got[name].tobytes() == want.tobytes(), (case, name)
        os.remove(npz)
        outcomes["converted"] += 1
    assert min(outcomes.values()) > 80, outcomes  # both outcomes well exercised


def test_views_with_zero_elements_and_shared_storage_convert(tmp_path, monkeypatch):
    pth, npz = str(tmp_path / "ok.pth"), str(tmp_path / "ok.npz")
    flat = np.arange(6, dtype="int64")
    write_torch_zip(pth, {}, monkeypatch, views={
        "empty": (flat, 9, (0, 3), (3, 1)), "scalar": (flat, 5, (), ()),
        "t": (flat, 0, (3, 2), (1, 3)), "rows": (flat, 1, (2, 2), (0, 1))})
    convert_torchvision.convert(pth, npz)
    with np.load(npz) as got:
        assert got["empty"].shape == (0, 3) and got["scalar"].shape == () and got["scalar"] == 5
        np.testing.assert_array_equal(got["t"], [[0, 3], [1, 4], [2, 5]])
        np.testing.assert_array_equal(got["rows"], [[1, 2], [1, 2]])
    arrays = convert_torchvision.read_torch_zip(pth)
    assert all(a.flags.owndata and a.flags.writeable for a in arrays.values())


def test_big_endian_storages_come_back_in_native_byte_order(tmp_path, monkeypatch):
    import ml_dtypes
    values = {"one": np.array([1.5], "float32"), "h": np.arange(3, dtype="float16"),
              "i": np.array([-2, 7], "int64"), "bf": np.array([1, -3.5], ml_dtypes.bfloat16)}
    pth = str(tmp_path / "big.pth")
    write_torch_zip(pth, values, monkeypatch)
    _rewrite(pth, {"byteorder": b"big", **{f"data/{i}": a.byteswap().tobytes()
                                           for i, a in enumerate(values.values())}})
    got = convert_torchvision.read_torch_zip(pth)
    for name, want in values.items():
        assert got[name].dtype == want.dtype and got[name].dtype.isnative, name
        assert got[name].tobytes() == want.tobytes(), name


def test_npz_keys_that_np_savez_reserves_are_written(tmp_path):
    path = str(tmp_path / "keys.npz")
    convert_torchvision.save_arrays_npz({"file": np.ones(2), "allow_pickle": np.zeros(1)}, path)
    with np.load(path) as got:
        assert sorted(got.files) == ["allow_pickle", "file"] and got["file"].sum() == 2


def _disk_full_on_second_array(monkeypatch):
    write_array, calls = np.lib.format.write_array, []

    def failing(fp, array, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            fp.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_array(fp, array, *args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", failing)


@pytest.mark.parametrize("failure", ["disk full", "destination is a directory"])
def test_failed_write_leaves_no_temp_file_and_the_old_output(tmp_path, monkeypatch, capsys,
                                                            failure):
    pth, out = str(tmp_path / "in.pth"), tmp_path / "out" / "weights.npz"
    write_torch_zip(pth, {"w": np.ones(3, "float32"), "b": np.arange(2)}, monkeypatch)
    out.parent.mkdir()
    if failure == "disk full":
        out.write_bytes(b"previous weights")
        _disk_full_on_second_array(monkeypatch)
    else:
        out.mkdir()
    before = {p.name: (p.read_bytes() if p.is_file() else None) for p in out.parent.iterdir()}
    assert convert_torchvision.main([pth, str(out)]) == 2
    assert "weights.npz" in _one_error_line(capsys.readouterr().err)
    after = {p.name: (p.read_bytes() if p.is_file() else None) for p in out.parent.iterdir()}
    assert after == before
