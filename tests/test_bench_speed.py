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
