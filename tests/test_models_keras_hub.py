"""keras_hub:PRESET backbones (optional KerasHub): preset lookup offline, preprocessing, flat
layers, weights, and the command line. Presets are written here by save_to_preset from a tiny
random ResNet; nothing is downloaded."""
import importlib.util
import json
import os
import shutil

import keras
import numpy as np
import pytest

from gdw_tf import models
from gdw_tf.data.augment import output_normalization
from gdw_tf.methods.bilevel import moved_variable_positions

keras_hub = pytest.importorskip("keras_hub")

SCALE, OFFSET = [1 / 51.0, 1 / 102.0, 1 / 255.0], [-1.0, -0.5, 0.0]


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    """A tiny ImageClassifier preset (ResNet backbone, converter at 40x40 with per-channel
    scale and offset) saved to a directory."""
    keras.utils.set_random_seed(3)
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 32],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block")
    converter = keras_hub.layers.ResNetImageConverter(image_size=(40, 40), scale=SCALE,
                                                      offset=OFFSET)
    preprocessor = keras_hub.models.ResNetImageClassifierPreprocessor(image_converter=converter)
    classifier = keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=7,
                                                        preprocessor=preprocessor)
    directory = str(tmp_path_factory.mktemp("preset") / "tiny_resnet")
    classifier.save_to_preset(directory)
    return directory


def test_the_model_is_the_presets_backbone_on_its_converters_pixels(preset):
    name = f"keras_hub:{preset}"
    assert models.default_image_size(name) == 40
    model = models.build(name, 3, (40, 40, 3), augment="cifar")
    backbone = keras_hub.models.Backbone.from_preset(preset)
    # Flat: the backbone's own layers are the model's, so virtual_scope counts them.
    names = {layer.name for layer in model.layers}
    assert {layer.name for layer in backbone.layers[1:]} <= names
    assert all(not isinstance(layer, keras.Model) for layer in model.layers)
    moved = moved_variable_positions(model, 2)
    assert len(moved) < len(model.trainable_variables) - 2  # the head and one more layer
    # The preset's weights, and its converter's rescaling of the pixels.
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 40, 40, 3)).astype("float32")
    mean, std = (np.asarray(v, np.float32) for v in output_normalization("cifar"))
    fed = (pixels / 255.0 - mean) / std
    features = backbone(pixels * np.float32(SCALE) + np.float32(OFFSET))
    head = model.get_layer(models.HEAD_LAYER)
    want = head(keras.ops.mean(features, axis=(1, 2)))
    np.testing.assert_allclose(model(fed), want, rtol=1e-4, atol=1e-4)
    assert model.output_shape == (None, 3)


def test_a_built_in_name_is_read_from_kagglehubs_cache_never_downloaded(preset, tmp_path,
                                                                      monkeypatch):
    name = "resnet_18_imagenet"
    handle = keras_hub.models.Backbone.presets[name]["kaggle_handle"]
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ValueError) as error:
        models.build(f"keras_hub:{name}", 3, (40, 40, 3))
    message = str(error.value)
    assert "\n" not in message and handle in message and "nothing is downloaded" in message
    cached = tmp_path / "cache" / "models" / handle.removeprefix("kaggle://")
    assert str(cached) in message
    shutil.copytree(preset, cached)
    model = models.build(f"keras_hub:{name}", 3, (40, 40, 3))
    assert model.output_shape == (None, 3)


def test_bad_presets_are_one_line_each(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    cases = {f"keras_hub:{tmp_path / 'empty'}": "is not a KerasHub preset directory",
             "keras_hub:no_such_preset": "neither a preset directory nor a KerasHub preset name"}
    for name, needle in cases.items():
        with pytest.raises(ValueError, match=needle):
            models.build(name, 3)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "keras_hub" else real(n, *a))
    with pytest.raises(ValueError, match="needs KerasHub: pip install keras-hub"):
        models.build("keras_hub:elsewhere", 3)


def test_a_weights_file_of_the_same_model_replaces_the_presets(preset, tmp_path):
    name = f"keras_hub:{preset}"
    keras.utils.set_random_seed(9)
    source = models.build(name, 3, (40, 40, 3))
    for v in source.trainable_variables:
        v.assign(v + 0.5)
    source.save_weights(tmp_path / "tuned.weights.h5")
    loaded = models.build(name, 3, (40, 40, 3), init_weights=str(tmp_path / "tuned.weights.h5"))
    for a, b in zip(source.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_the_command_line_defaults_to_the_presets_size_and_fine_tuning_lr(preset):
    from gdw_tf.config import FINE_TUNE_LR, RunConfig

    config = RunConfig.from_flag_values({"dataset": "folder", "model": f"keras_hub:{preset}"})
    assert config.data.image_size == 40 and config.optim.lr == FINE_TUNE_LR
    with pytest.raises(ValueError, match="always starts from its own weights"):
        RunConfig.from_flag_values({"model": f"keras_hub:{preset}", "init_weights": "none"})


@pytest.mark.slow  # runs the trainer (docs/development.md)
def test_train_fine_tunes_a_keras_hub_preset_on_an_image_folder(preset, tmp_path):
    """The command line: a folder of 40x40 JPEGs, the preset's own size and weights, GDW with
    virtual_scope=3 on two replicas."""
    from tests import fixtures, tiny

    root = str(tmp_path / "photos")
    fixtures.write_image_folder(root, ["a", "b", "c"], {"train": [6, 6, 6], "test": [2, 2, 2]},
                                size=(40, 40), ext=".jpg")
    tiny.train("--dataset=folder", f"--data_dir={root}", f"--model=keras_hub:{preset}",
               "--method=gdw", "--method_option=virtual_scope=3", "--num_meta=6",
               "--batch_size=6", "--epochs=1", "--verbose=0", "--strategy=mirrored",
               "--num_cpu_devices=2", f"--output_dir={tmp_path / 'run'}")
    with open(tmp_path / "run" / "results.json") as f:
        done = json.load(f)
    assert done["epochs_completed"] == 1 and done["meta_optimizer_iterations"] == 2
    assert done["num_replicas"] == 2 and done["model"] == f"keras_hub:{preset}"
    assert os.path.exists(tmp_path / "run" / "label_issues.csv")
