"""The private Keras members in gdw_tf.keras_internals still exist and do what GDWModel needs.

A failure here means a Keras release renamed, removed or changed one of them: adapt
keras_internals (and only it) to the new release.
"""
import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from gdw_tf import keras_internals
from tests import tiny


def _compiled(metrics=("accuracy",)):
    model = keras.Sequential([keras.Input((tiny.NUM_FEATURES,)),
                              keras.layers.Dense(tiny.NUM_CLASSES)])
    model.compile("sgd", metrics=list(metrics) if metrics else None)
    return model


def test_the_loss_tracker_is_the_loss_keras_logs():
    model = _compiled(metrics=None)
    tracker = keras_internals.loss_tracker(model)
    assert isinstance(tracker, keras.metrics.Mean) and tracker.name == "loss"
    assert model.metrics[0] is tracker
    tracker.update_state(3.0)
    tracker.update_state(5.0)
    assert float(model.get_metrics_result()["loss"]) == 4.0
    model.compile("sgd")  # every compile makes a new one
    assert keras_internals.loss_tracker(model) is not tracker


def test_compiled_metrics_are_built_from_keras_tensors_and_updated_by_compute_metrics():
    model = _compiled()
    assert not keras_internals.compiled_metrics_built(model)
    labels = keras.KerasTensor((None,), "int32")
    logits = keras.KerasTensor((None, tiny.NUM_CLASSES), "float32")
    keras_internals.build_compiled_metrics(model, labels, logits)
    assert keras_internals.compiled_metrics_built(model)
    variables = len(model.metrics_variables)
    keras_internals.build_compiled_metrics(model, labels, logits)  # built once
    assert len(model.metrics_variables) == variables > 2  # loss (total, count) and accuracy
    # The public compute_metrics updates what was built: 1 of 2 labels is the argmax.
    results = model.compute_metrics(None, tf.constant([0, 1]),
                                    tf.constant([[2.0, 0, 0], [2.0, 0, 0]]))
    assert float(results["accuracy"]) == 0.5
    plain = _compiled(metrics=None)  # no metrics: nothing to build
    assert keras_internals.compiled_metrics_built(plain)
    keras_internals.build_compiled_metrics(plain, labels, logits)


def test_a_step_function_wraps_any_step_as_make_train_function_wraps_train_step(
        monkeypatch, mirrored):
    assert list(inspect.signature(keras.Model._make_function).parameters) == [
        "self", "step_function"]
    model = _compiled()
    wrapped = []
    original = keras.Model._make_function
    monkeypatch.setattr(keras.Model, "_make_function",
                        lambda self, step: wrapped.append(step) or original(self, step))
    model.make_train_function(force=True)
    assert wrapped == [model.train_step]

    with mirrored.scope():
        model = _compiled()

    def replica_id(data):  # runs on every replica; the logs are averaged
        context = tf.distribute.get_replica_context()
        return {"replica": tf.cast(context.replica_id_in_sync_group, "float32"),
                "size": tf.cast(tf.shape(data)[0], "float32")}

    function = keras_internals.step_function(model, replica_id)
    data = mirrored.experimental_distribute_dataset(tf.data.Dataset.range(8).batch(4))
    logs = function(iter(data))
    assert float(logs["replica"]) == 0.5 and float(logs["size"]) == 2.0


@pytest.mark.slow  # in process, but among the slowest (docs/development.md)
def test_fit_under_a_strategy_skips_the_symbolic_build_once_state_is_built(monkeypatch, mirrored):
    assert list(inspect.signature(keras.Model._maybe_symbolic_build).parameters) == [
        "self", "iterator", "data_batch"]
    built = []
    original = keras.Model._symbolic_build
    monkeypatch.setattr(keras.Model, "_symbolic_build",
                        lambda self, **kwargs: built.append(type(self).__name__)
                        or original(self, **kwargs))
    x = np.zeros((4, tiny.NUM_FEATURES), "float32")
    y = np.zeros(4, "int32")
    with mirrored.scope():
        plain = _compiled()
        plain.compile("sgd", loss="sparse_categorical_crossentropy")
        prebuilt = tiny.gdw_model("base", dtype="float32", backbone=tiny.mlp("float32"))
    plain.fit(x, y, batch_size=2, verbose=0)
    assert built == ["Sequential"]  # what Keras does under a strategy, and PrebuiltModel skips
    assert isinstance(prebuilt, keras_internals.PrebuiltModel)
    prebuilt.fit(tf.data.Dataset.from_tensor_slices({"image": x, "label": y}).batch(2), verbose=0)
    prebuilt.evaluate(tf.data.Dataset.from_tensor_slices({"image": x, "label": y}).batch(2),
                      verbose=0)
    assert built == ["Sequential"]


def test_application_weights_are_resolved_by_the_given_function_not_downloaded():
    class Asked(Exception):
        pass

    def resolve(fname, origin=None, cache_subdir="datasets", **kwargs):
        raise Asked(fname, cache_subdir)

    with keras_internals.application_weights_resolved_by(resolve):
        try:
            keras.applications.MobileNetV3Small(include_top=False, weights="imagenet",
                                                input_shape=(32, 32, 3), minimalistic=True)
        except Asked as asked:
            fname, subdir = asked.args
    assert fname == "weights_mobilenet_v3_small_minimalistic_224_1.0_float_no_top_v2.h5"
    assert subdir == "models"
    from keras.src.utils import file_utils
    assert file_utils.get_file is not resolve  # restored


def test_call_layers_on_puts_every_layer_of_a_functional_model_in_the_callers_graph():
    inner_in = keras.Input((4,))
    hidden = keras.layers.Dense(3, activation="relu", name="d1")(inner_in)
    skip = keras.layers.Dense(3, name="d2")(inner_in)
    inner = keras.Model(inner_in, keras.layers.Add(name="add")([hidden, skip]))
    outer_in = keras.Input((4,))
    scaled = keras.layers.Rescaling(2.0, name="scale")(outer_in)
    outer = keras.Model(outer_in, keras_internals.call_layers_on(inner, scaled))
    assert [layer.name for layer in outer.layers][1:] == ["scale", "d1", "d2", "add"]
    assert outer.get_layer("d1") is inner.get_layer("d1")  # the same weights, not copies
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    np.testing.assert_allclose(outer(x), inner(2 * x), rtol=1e-6)
