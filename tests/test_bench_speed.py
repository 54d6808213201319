"""The speed benchmark can build and step every registered method."""
import numpy as np
import tensorflow as tf

from gdw_tf.bench import speed
from gdw_tf.methods import available_methods


def test_every_method_builds_and_steps_with_the_benchmarks_options():
    args = speed._parse(["--model=small_cnn", "--batch_size=8"])
    for method in available_methods():
        model, data = speed._setup(args, method)
        loss = float(tf.function(model.train_step)(data)["loss"])
        assert np.isfinite(loss), method


def test_memory_fit_recovers_a_line():
    fit = speed.memory_fit({8: 1000.0 + 8 * 50.0, 16: 1000.0 + 16 * 50.0, 32: 1000.0 + 32 * 50.0})
    assert np.isclose(fit["memory_per_example_mb"], 50.0) and np.isclose(fit["memory_fixed_mb"], 1000.0)
    assert speed.memory_fit({8: 1.0}) == {}


def test_image_size_sets_the_input_shape():
    args = speed._parse(["--model=small_cnn", "--batch_size=2", "--image_size=12"])
    model, data = speed._setup(args, "base")
    assert data["image"].shape == (2, 12, 12, 1) and model.backbone.input_shape == (None, 12, 12, 1)
