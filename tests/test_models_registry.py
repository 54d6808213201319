"""Registry / build API and output contract (logits) of every registered model."""
import keras
import numpy as np
import pytest

from gdw_tf import models


def test_available_models_lists_registered_names():
    assert set(models.available_models()) >= {"resnet32", "resnet18", "small_cnn",
                                              "small_cnn_nobn", "mlp"}
    assert models.available_models() == sorted(models.available_models())


def test_unknown_name_lists_available_models():
    with pytest.raises(ValueError, match="resnet33") as err:
        models.build("resnet33", 10)
    for name in models.available_models():
        assert name in str(err.value)


@pytest.mark.parametrize("name", ["small_cnn", "small_cnn_nobn", "mlp"])
def test_small_models_output_logits(name):
    model = models.build(name, 7)
    assert model.input_shape == (None, 8, 8, 1)
    assert model.output_shape == (None, 7)
    head = model.get_layer(models.HEAD_LAYER)
    assert head is model.layers[-1] and head.activation is keras.activations.linear
    out = np.asarray(model(np.random.default_rng(0).normal(size=(5, 8, 8, 1)), training=False))
    assert out.shape == (5, 7)
    assert (out < 0).any() and not np.allclose(out.sum(axis=1), 1.0)


def test_build_passes_input_shape_and_kwargs():
    model = models.build("mlp", 3, input_shape=(4, 5, 2), hidden_units=(16, 8))
    assert model.input_shape == (None, 4, 5, 2) and model.output_shape == (None, 3)
    assert [layer.name for layer in model.layers if isinstance(layer, keras.layers.Dense)] == [
        "hidden1", "hidden2", "fc"]


def test_small_cnn_nobn_has_no_batchnorm():
    assert any(isinstance(layer, keras.layers.BatchNormalization)
               for layer in models.small_cnn().layers)
    for model in (models.small_cnn_nobn(), models.small_cnn(batch_norm=False)):
        assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
        assert not model.non_trainable_weights


@pytest.mark.parametrize("bad", [0, -3, 2.5, "10", True])
def test_bad_num_classes_names_argument(bad):
    with pytest.raises(ValueError, match="num_classes"):
        models.build("small_cnn", bad)


def test_bad_input_shape_names_argument():
    with pytest.raises(ValueError, match=r"resnet32: input_shape .*\(32, 32\)"):
        models.build("resnet32", 10, input_shape=(32, 32))
