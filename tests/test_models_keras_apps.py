"""keras:NAME backbones: preprocessing, head, input sizes, weights files, Keras' cache, freezing."""
import json
import os

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

import gdw_tf
from gdw_tf import models
from gdw_tf.data.augment import output_normalization
from gdw_tf.models import keras_apps

MOBILE = "keras:MobileNetV3Small"
SMALL = {"minimalistic": True}  # ~0.4M weights; Keras has ImageNet weights for it (alpha 1.0)
SHAPE = (32, 32, 3)


def small_model(num_classes=3, seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    return models.build(MOBILE, num_classes, SHAPE, **{**SMALL, **kwargs})


def assert_same_weights(a, b, skip=()):
    """Layer by layer in order (auto-named layers get other names in another model)."""
    assert len(a.layers) == len(b.layers)
    for layer_a, layer_b in zip(a.layers, b.layers):
        if layer_a.name not in skip:
            for x, y in zip(layer_a.weights, layer_b.weights, strict=True):
                np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=x.path)


@pytest.mark.parametrize("name, module", [
    ("ResNet50", keras.applications.resnet),                 # caffe: BGR minus ImageNet mean
    ("MobileNetV2", keras.applications.mobilenet_v2),        # tf: [-1, 1]
    ("DenseNet121", keras.applications.densenet),            # torch: ImageNet mean / std
    ("EfficientNetV2B0", keras.applications.efficientnet_v2),  # none: rescales itself
])
@pytest.mark.parametrize("augment", ["cifar", "imagenet", "none"])
def test_input_adapter_gives_the_application_what_preprocess_input_gives(name, module, augment):
    pixels = np.random.default_rng(0).integers(0, 256, (2, 5, 5, 3)).astype("float32")
    mean, std = output_normalization(augment)
    fed = ((pixels / 255.0 - np.array(mean)) / np.array(std)).astype("float32")
    adapted = keras_apps.input_adapter(name, mean, std)(fed)
    np.testing.assert_allclose(np.asarray(adapted), module.preprocess_input(pixels.copy()),
                               rtol=1e-5, atol=2e-4)


def test_keras_model_is_one_flat_model_giving_logits_at_the_given_size():
    model = small_model(num_classes=5)
    assert model.input_shape == (None, *SHAPE)
    # virtual_scope counts them
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    head = model.layers[-1]
    assert head.name == models.HEAD_LAYER and head.activation is keras.activations.linear
    assert head.kernel.shape == (model.layers[-2].output.shape[-1], 5)
    logits = model(np.random.default_rng(0).normal(size=(2, *SHAPE)).astype("float32"))
    assert logits.shape == (2, 5) and np.min(logits) < 0  # logits, not probabilities
    assert isinstance(model.get_layer("input_adapter"), keras_apps.ChannelAffine)


def test_each_application_has_its_own_default_input_size():
    assert set(keras_apps.application_names()) >= {"ResNet50", "EfficientNetV2B0", "ConvNeXtTiny"}
    sizes = {"keras:MobileNetV3Small": 224, "keras:InceptionV3": 299, "keras:EfficientNetV2S": 384,
             "keras:EfficientNetB7": 600, "keras:NASNetLarge": 331}
    for name, size in sizes.items():
        assert models.default_image_size(name) == size
        assert models.get_model_spec(name).default_input_shape == (size, size, 3)
    for name in ("InceptionV3", "EfficientNetV2B1"):  # what Keras builds with its top by default
        built = getattr(keras.applications, name)(weights=None).input_shape[1]
        assert models.default_image_size(f"keras:{name}") == built
    with pytest.raises(ValueError, match="keras.applications has no 'ResNet51'.*ResNet50"):
        models.build("keras:ResNet51", 3)


def test_weights_files_saved_from_a_random_model_load_back(tmp_path):
    source = small_model(seed=1)
    source.save_weights(tmp_path / "w.weights.h5")
    source.save(tmp_path / "w.keras")
    for path in ("w.weights.h5", "w.keras"):
        loaded = small_model(seed=2, init_weights=str(tmp_path / path))
        assert_same_weights(source, loaded)
    # A head of another number of classes is skipped; the rest loads.
    other = small_model(num_classes=4, seed=2, init_weights=str(tmp_path / "w.weights.h5"))
    assert_same_weights(source, other, skip=(models.HEAD_LAYER,))
    # A file of another architecture: one line naming the first tensor that differs.
    narrow = small_model(seed=3, alpha=0.75, minimalistic=False)
    narrow.save(tmp_path / "narrow.keras")
    with pytest.raises(ValueError) as error:
        small_model(init_weights=str(tmp_path / "narrow.keras"), alpha=1.0, minimalistic=False)
    message = str(error.value)
    assert "\n" not in message, message
    assert message.endswith("first mismatching tensor expanded_conv_3_project/kernel: "
                            "file (1, 1, 96, 32), model (1, 1, 96, 40)"), message


@pytest.fixture
def empty_keras_home(tmp_path, monkeypatch):
    """KERAS_HOME is an empty directory and Keras' downloader fails the test if called."""
    from keras.src.utils import file_utils

    def download(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args} {kwargs}")

    monkeypatch.setattr(file_utils, "get_file", download)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return tmp_path / "keras_home"


def test_imagenet_without_the_cached_file_is_one_line_naming_it(empty_keras_home):
    expected = "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"
    with pytest.raises(FileNotFoundError) as error:
        models.check_init_weights(MOBILE, "imagenet")
    message = str(error.value)
    assert "\n" not in message and expected in message
    assert os.path.join(str(empty_keras_home), "models") in message
    with pytest.raises(ValueError, match="applies to --model=keras:NAME"):
        models.check_init_weights("resnet32", "imagenet")


def test_imagenet_loads_the_file_keras_cached(empty_keras_home):
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(4)  # stands in for Keras' download: a random application
    app = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=SHAPE,
                                              pooling="avg", **SMALL)
    os.makedirs(empty_keras_home / "models")
    name = "weights_mobilenet_v3_small_minimalistic_224_1.0_float_no_top_v2.h5"
    with h5py.File(empty_keras_home / "models" / name, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, app)
    model = small_model(seed=5, init_weights="imagenet")
    weighted = [layer for layer in model.layers if layer.weights and layer.name != "fc"]
    assert len(weighted) > 30 and len(app.weights) == sum(len(layer.weights) for layer in weighted)
    for x, y in zip(app.weights, [w for layer in weighted for w in layer.weights], strict=True):
        np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_frozen_backbone_gdw_steps_move_only_the_head():
    backbone = small_model(seed=6)
    models.freeze_backbone(backbone)
    before = {v.path: v.numpy() for v in backbone.weights}
    assert [v.path for v in backbone.trainable_variables] == ["fc/kernel", "fc/bias"]
    model = gdw_tf.GDWModel(backbone, 3, method="gdw")
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9))
    rng = np.random.default_rng(0)
    train = tf.data.Dataset.from_tensor_slices({
        "image": rng.normal(size=(8, *SHAPE)).astype("float32"),
        "label": rng.integers(0, 3, 8).astype("int32")}).batch(4)
    meta = tf.data.Dataset.from_tensor_slices(
        (rng.normal(size=(8, *SHAPE)).astype("float32"), rng.integers(0, 3, 8).astype("int32"))
    ).batch(4)
    model.fit(gdw_tf.data.with_meta(train, meta), epochs=1, verbose=0)
    for v in backbone.weights:  # BatchNorm moving statistics included
        if v.path.startswith("fc/"):
            assert not np.allclose(v.numpy(), before[v.path]), v.path
        else:
            np.testing.assert_array_equal(v.numpy(), before[v.path], err_msg=v.path)


def test_a_keras_application_takes_its_own_input_size_unless_image_size_is_given():
    from gdw_tf.config import RunConfig

    config = RunConfig.from_flag_values({"dataset": "folder", "model": MOBILE})
    assert config.data.image_size == 224
    assert RunConfig.from_flag_values({"model": "keras:InceptionV3"}).data.image_size == 299
    assert RunConfig.from_flag_values({"model": MOBILE, "image_size": 64}).data.image_size == 64
    assert RunConfig.from_flag_values({"model": "resnet32"}).data.image_size is None


@pytest.mark.slow  # runs the trainer (docs/development.md)
def test_train_fine_tunes_a_keras_application_on_an_image_folder(tmp_path):
    """The command line: a folder of 64x64 JPEGs, keras:MobileNetV3Small from a weights file
    saved from a random model, one GDW epoch; --init_weights=imagenet without Keras' cached
    file is one line, exit status 2."""
    from tests import fixtures, tiny

    root = str(tmp_path / "photos")
    fixtures.write_image_folder(root, ["a", "b", "c"], {"train": [6, 6, 6], "test": [2, 2, 2]},
                                size=(64, 64), ext=".jpg")
    keras.utils.set_random_seed(7)
    models.build(MOBILE, 3, (64, 64, 3)).save_weights(tmp_path / "w.weights.h5")
    common = ["--dataset=folder", f"--data_dir={root}", f"--cache_dir={tmp_path / 'cache'}",
              f"--model={MOBILE}", "--image_size=64", "--method=gdw", "--num_meta=6",
              "--batch_size=6", "--epochs=1", "--lr=1e-3", "--verbose=0"]
    tiny.train(*common, f"--init_weights={tmp_path / 'w.weights.h5'}",
               f"--output_dir={tmp_path / 'run'}")
    with open(tmp_path / "run" / "results.json") as f:
        done = json.load(f)
    assert done["model"] == MOBILE and done["epochs_completed"] == 1
    assert done["optimizer_iterations"] == done["meta_optimizer_iterations"] == 2  # 12 / 6
    proc = tiny.train(*common, "--init_weights=imagenet", f"--output_dir={tmp_path / 'run2'}",
                      check=False, KERAS_HOME=str(tmp_path / "empty_keras_home"))
    line = tiny.user_error_line(proc)
    assert "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5" in line
    assert "nothing is downloaded" in line
    assert not os.path.exists(tmp_path / "run2" / "data_summary.json")  # failed before the data
