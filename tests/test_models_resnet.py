"""ResNet-32 / ResNet-18 architecture, option-A shortcut, saving and Keras weight files."""
import logging

import keras
import numpy as np
import pytest

from gdw_tf import models
from gdw_tf.models import OptionAShortcut


def _n_params(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


@pytest.fixture(scope="module")
def resnet32_10():
    keras.utils.set_random_seed(1)
    return models.resnet32(num_classes=10)


def test_option_a_shortcut_exact_values():
    x = np.arange(1 * 5 * 5 * 2, dtype="float32").reshape(1, 5, 5, 2)
    out = np.asarray(OptionAShortcut(out_channels=6, stride=2)(x))
    expected = np.zeros((1, 3, 3, 6), "float32")
    expected[..., 2:4] = x[:, 0::2, 0::2, :]  # rows/cols 0, 2, 4; 2 zero channels each side
    np.testing.assert_array_equal(out, expected)
    assert OptionAShortcut(6, 2).compute_output_shape((None, 5, 5, 2)) == (None, 3, 3, 6)
    # 16 -> 32 channels as in ResNet-32: 8 zeros before and after.
    y = np.ones((2, 4, 4, 16), "float32")
    z = np.asarray(OptionAShortcut(32)(y))
    assert z.shape == (2, 2, 2, 32)
    assert (z[..., :8] == 0).all() and (z[..., 8:24] == 1).all() and (z[..., 24:] == 0).all()


def test_option_a_shortcut_rejects_shrinking_and_serializes():
    with pytest.raises(ValueError, match="more than out_channels=4"):
        OptionAShortcut(4)(np.zeros((1, 2, 2, 8), "float32"))
    layer = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(OptionAShortcut(64, 2, name="sc")))
    assert isinstance(layer, OptionAShortcut) and (layer.out_channels, layer.stride) == (64, 2)


def test_resnet32_structure_and_parameter_count(resnet32_10):
    m = resnet32_10
    assert m.input_shape == (None, 32, 32, 3) and m.output_shape == (None, 10)
    assert _n_params(m.trainable_weights) == 464_154
    assert _n_params(m.non_trainable_weights) == 2_272  # BN moving mean / variance
    convs = [layer for layer in m.layers if isinstance(layer, keras.layers.Conv2D)]
    bns = [layer for layer in m.layers if isinstance(layer, keras.layers.BatchNormalization)]
    shortcuts = [layer.name for layer in m.layers if isinstance(layer, OptionAShortcut)]
    assert len(convs) == 31 and len(bns) == 31
    assert shortcuts == ["layer2_0_shortcut", "layer3_0_shortcut"]
    assert all(not c.use_bias and c.data_format == "channels_last" for c in convs)
    assert all(b.momentum == 0.9 and b.epsilon == 1e-5 for b in bns)
    for layer in convs + [m.get_layer("fc")]:
        init = layer.kernel_initializer
        assert isinstance(init, keras.initializers.VarianceScaling)
        assert (init.scale, init.mode, init.distribution) == (2.0, "fan_in", "untruncated_normal")
    assert m.get_layer("layer3_4_relu2").output.shape == (None, 8, 8, 64)
    assert m.get_layer("fc").activation is keras.activations.linear


def test_resnet32_save_load_round_trip(resnet32_10, tmp_path):
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype("float32")
    before = np.asarray(resnet32_10(x, training=False))
    assert (before < 0).any()  # logits, not probabilities
    path = tmp_path / "resnet32.keras"
    resnet32_10.save(path)
    loaded = keras.models.load_model(path)
    assert any(isinstance(layer, OptionAShortcut) for layer in loaded.layers)
    np.testing.assert_array_equal(np.asarray(loaded(x, training=False)), before)


def test_keras_weights_file_round_trip_and_head_skip(resnet32_10, tmp_path, caplog):
    path = str(tmp_path / "r32.weights.h5")
    resnet32_10.save_weights(path)
    x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype("float32")
    same = models.build("resnet32", 10, init_weights=path)
    np.testing.assert_array_equal(np.asarray(same(x, training=False)),
                                  np.asarray(resnet32_10(x, training=False)))
    with caplog.at_level(logging.WARNING, logger="gdw_tf.models"):
        other = models.resnet32(num_classes=100, init_weights=path)
    assert "skipped classifier head 'fc'" in caplog.text
    for name in ("conv1", "layer3_4_bn2", "layer2_0_conv1"):
        for a, b in zip(other.get_layer(name).get_weights(),
                        resnet32_10.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert other.get_layer("fc").kernel.shape == (64, 100)


def test_keras_weights_head_skip_with_several_dense_layers(tmp_path, caplog):
    src = models.mlp(num_classes=10, hidden_units=(12, 9))
    path = str(tmp_path / "mlp.weights.h5")
    src.save_weights(path)
    with caplog.at_level(logging.WARNING, logger="gdw_tf.models"):
        dst = models.mlp(num_classes=4, hidden_units=(12, 9), init_weights=path)
    assert "10 classes, model has 4" in caplog.text
    for name in ("hidden1", "hidden2"):
        np.testing.assert_array_equal(dst.get_layer(name).kernel, src.get_layer(name).kernel)


def test_keras_weights_errors_name_the_file(tmp_path):
    path = str(tmp_path / "cnn.weights.h5")
    models.small_cnn().save_weights(path)
    with pytest.raises(ValueError, match="cnn.weights.h5.*does not match.*'mlp'"):
        models.mlp(init_weights=path)
    with pytest.raises(FileNotFoundError, match="nowhere.weights.h5"):
        models.small_cnn(init_weights=str(tmp_path / "nowhere.weights.h5"))
    npz = tmp_path / "w.npz"
    np.savez(npz, a=np.zeros(1))
    with pytest.raises(ValueError, match=r"w\.npz.*resnet32.*\.weights\.h5"):
        models.resnet32(init_weights=str(npz))


def test_resnet18_structure():
    m = models.resnet18(num_classes=1000)
    assert m.input_shape == (None, 224, 224, 3) and m.output_shape == (None, 1000)
    assert _n_params(m.trainable_weights) == 11_689_512  # = torchvision resnet18
    assert m.get_layer("maxpool").output.shape == (None, 56, 56, 64)
    assert m.get_layer("layer4_1_relu2").output.shape == (None, 7, 7, 512)
    downsample = [layer.name for layer in m.layers if "downsample_0" in layer.name]
    assert downsample == ["layer2_0_downsample_0", "layer3_0_downsample_0",
                          "layer4_0_downsample_0"]
    small = models.build("resnet18", 14, input_shape=(64, 64, 3))
    out = np.asarray(small(np.zeros((2, 64, 64, 3), "float32"), training=False))
    assert out.shape == (2, 14)
