"""Loading torchvision-named ``.npz`` state_dicts into resnet18, and the converter CLI."""
import logging
import sys

import keras
import numpy as np
import pytest

from gdw_tf import convert_torchvision, models
from gdw_tf.convert_torchvision import save_arrays_npz, state_dict_to_arrays
from tests.fixtures import fake_resnet18_state_dict, write_torch_zip

SHAPE = (64, 64, 3)  # weights do not depend on the image size; keeps the test fast


@pytest.fixture(scope="module")
def state_dict():
    return fake_resnet18_state_dict()


@pytest.fixture(scope="module")
def npz_path(state_dict, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tv") / "resnet18.npz")
    save_arrays_npz(state_dict, path)
    return path


@pytest.fixture(scope="module")
def loaded(npz_path):
    return models.build("resnet18", 1000, input_shape=SHAPE, init_weights=npz_path)


def _conv_numpy(x, w_oihw, stride, pad):
    """Cross-correlation straight from the PyTorch OIHW kernel (no layout conversion)."""
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out_ch, _, kh, kw = w_oihw.shape
    ho = (xp.shape[1] - kh) // stride + 1
    wo = (xp.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, out_ch))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i:i + stride * ho:stride, j:j + stride * wo:stride, :]
            out += np.einsum("nhwc,oc->nhwo", patch, w_oihw[:, :, i, j])
    return out


def test_bn_and_dense_tensors_land_converted(loaded, state_dict):
    bn = loaded.get_layer("layer3_1_bn2")
    tv = "layer3.1.bn2"
    np.testing.assert_array_equal(bn.gamma.numpy(), state_dict[f"{tv}.weight"])
    np.testing.assert_array_equal(bn.beta.numpy(), state_dict[f"{tv}.bias"])
    np.testing.assert_array_equal(bn.moving_mean.numpy(), state_dict[f"{tv}.running_mean"])
    np.testing.assert_array_equal(bn.moving_variance.numpy(), state_dict[f"{tv}.running_var"])
    fc = loaded.get_layer("fc")
    np.testing.assert_array_equal(fc.kernel.numpy(), state_dict["fc.weight"].T)
    np.testing.assert_array_equal(fc.bias.numpy(), state_dict["fc.bias"])
    ds = loaded.get_layer("layer4_0_downsample_0").kernel.numpy()
    np.testing.assert_array_equal(ds[0, 0],
                                  state_dict["layer4.0.downsample.0.weight"][:, :, 0, 0].T)


def test_conv_outputs_match_direct_computation(loaded, state_dict):
    import tensorflow as tf

    probe = keras.Model(loaded.input, [loaded.get_layer("conv1").output,
                                       loaded.get_layer("layer1_1_relu2").output,
                                       loaded.get_layer("layer2_0_conv1").output])
    x = np.random.default_rng(3).normal(size=(2,) + SHAPE).astype("float32")
    stem, feat, block = (np.asarray(t) for t in probe(x, training=False))
    # Stem: 7x7 stride 2 pad 3, from the OIHW weights directly and via tf.nn.conv2d.
    w = state_dict["conv1.weight"]
    np.testing.assert_allclose(stem, _conv_numpy(x, w, 2, 3), rtol=1e-4, atol=1e-4)
    hwio = np.transpose(w, (2, 3, 1, 0))
    ref = tf.nn.conv2d(x, hwio, strides=2, padding=[[0, 0], [3, 3], [3, 3], [0, 0]])
    np.testing.assert_allclose(stem, ref.numpy(), rtol=1e-4, atol=1e-4)
    # Strided 3x3 block conv: checks PyTorch's symmetric padding alignment too.
    expected = _conv_numpy(feat, state_dict["layer2.0.conv1.weight"], 2, 1)
    assert block.shape == expected.shape == (2, 8, 8, 128)
    np.testing.assert_allclose(block, expected, rtol=1e-4, atol=1e-3)


def test_head_skipped_for_other_num_classes(npz_path, state_dict, caplog):
    with caplog.at_level(logging.WARNING, logger="gdw_tf.models"):
        model = models.resnet18(num_classes=14, input_shape=SHAPE, init_weights=npz_path)
    assert "skipped classifier head ['fc.weight', 'fc.bias']" in caplog.text
    assert "1000 classes, model has 14" in caplog.text
    assert model.get_layer("fc").kernel.shape == (512, 14)
    np.testing.assert_array_equal(model.get_layer("layer1_0_conv2").kernel.numpy(),
                                  np.transpose(state_dict["layer1.0.conv2.weight"], (2, 3, 1, 0)))
    report = models.load_init_weights(model, npz_path, formats=("torchvision",))
    n_tensors = sum(not k.endswith("num_batches_tracked") for k in state_dict)
    assert report.skipped == ["fc.weight", "fc.bias"]
    assert len(report.loaded) == n_tensors - 2


@pytest.mark.parametrize("edit, match", [
    (lambda sd: sd.pop("layer3.1.bn2.running_var"),
     r"missing tensor.*'layer3\.1\.bn2\.running_var'"),
    (lambda sd: sd.update({"layer1.0.conv1.weight": np.zeros((64, 64, 1, 3), "float32")}),
     r"'layer1\.0\.conv1\.weight' has shape \(64, 64, 1, 3\).*\(64, 64, 3, 3\)"),
    (lambda sd: sd.update({"layer5.0.conv1.weight": np.zeros(3, "float32")}),
     r"unexpected tensor.*'layer5\.0\.conv1\.weight'"),
    (lambda sd: sd.update({"fc.weight": np.zeros((1000, 256), "float32")}),
     r"'fc\.weight' has shape \(1000, 256\)"),
])
def test_bad_state_dict_names_file_and_tensor(state_dict, tmp_path, edit, match):
    sd = dict(state_dict)
    edit(sd)
    path = str(tmp_path / "bad.npz")
    save_arrays_npz(sd, path)
    model = models.resnet18(num_classes=1000, input_shape=SHAPE)
    before = model.get_layer("conv1").kernel.numpy()
    with pytest.raises(ValueError, match=match) as err:
        models.load_init_weights(model, path, formats=("keras", "torchvision"))
    assert "bad.npz" in str(err.value)
    np.testing.assert_array_equal(model.get_layer("conv1").kernel.numpy(), before)  # atomic


def test_bad_files_are_named(tmp_path):
    missing = str(tmp_path / "absent.npz")
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        models.resnet18(input_shape=SHAPE, init_weights=missing)
    pth = tmp_path / "resnet18.pth"
    pth.write_bytes(b"not really")
    with pytest.raises(ValueError, match=r"resnet18\.pth.*unsupported.*\.npz"):
        models.resnet18(input_shape=SHAPE, init_weights=str(pth))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"junk\.npz.*not a readable \.npz"):
        models.resnet18(input_shape=SHAPE, init_weights=str(junk))


class _FakeTensor:
    def __init__(self, value):
        self.value = value

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.value


def test_converter_arrays_and_cli_errors(tmp_path, monkeypatch, capsys):
    arrays = state_dict_to_arrays({"module.fc.weight": _FakeTensor(np.ones((2, 3))),
                                   "module.fc.bias": np.zeros(2), "module.meta": "text"})
    assert sorted(arrays) == ["fc.bias", "fc.weight"]
    assert convert_torchvision.main([str(tmp_path / "in.pth"), str(tmp_path / "o.npz")]) == 2
    assert "input file not found" in capsys.readouterr().err
    src = tmp_path / "in.pth"
    src.write_bytes(b"x")
    assert convert_torchvision.main([str(src), str(tmp_path / "o.h5")]) == 2
    assert "must end in .npz" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "torch", None)  # simulate: torch not installed
    assert convert_torchvision.main([str(src), str(tmp_path / "o.npz")]) == 2
    assert "needs PyTorch" in capsys.readouterr().err


def test_converter_reads_a_torch_save_file_with_numpy_only(state_dict, tmp_path, monkeypatch,
                                                           capsys):
    pth, npz = str(tmp_path / "resnet18-f37072fd.pth"), str(tmp_path / "resnet18.npz")
    write_torch_zip(pth, state_dict, monkeypatch)
    assert convert_torchvision.main([pth, npz]) == 0
    assert f"wrote {len(state_dict)} tensors" in capsys.readouterr().out
    with np.load(npz) as got:
        assert sorted(got.files) == sorted(state_dict)
        for name, value in state_dict.items():
            assert got[name].dtype == value.dtype and got[name].shape == value.shape, name
            np.testing.assert_array_equal(got[name], value, err_msg=name)
    model = models.build("resnet18", 14, input_shape=SHAPE, init_weights=npz)  # head skipped
    np.testing.assert_array_equal(model.get_layer("conv1").kernel.numpy(),
                                  state_dict["conv1.weight"].transpose(2, 3, 1, 0))


def test_converter_refuses_pickles_beyond_a_state_dict(state_dict, tmp_path, monkeypatch, capsys):
    import os
    pth = str(tmp_path / "evil.pth")
    write_torch_zip(pth, {"fc.bias": state_dict["fc.bias"]}, monkeypatch, extra=os.system)
    assert convert_torchvision.main([pth, str(tmp_path / "o.npz")]) == 2
    assert "system, which is not part of a plain state_dict" in capsys.readouterr().err
