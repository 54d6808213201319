"""Every comparison method fits through GDWModel.fit; two replicas equal one."""
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

import gdw_tf
from gdw_tf.methods.auxiliary import optimizer_like
from tests import tiny

NEW_METHODS = ["finetune", "l2rw", "insw", "soft_label", "gen_label", "coteaching", "glc",
               "focal", "class_balanced"]


def fit_input(model, train, meta):
    return gdw_tf.data.with_meta(train, meta) if model.method.needs_meta else train


@pytest.mark.parametrize("method", NEW_METHODS)
def test_each_method_fits_one_epoch_with_finite_metrics(method):
    train, meta, labels = tiny.indexed_data()
    model = tiny.gdw_model(method, dtype="float32", **tiny.options_for(method, labels))
    before = [v.numpy().copy() for v in model.backbone.trainable_variables]
    history = model.fit(fit_input(model, train, meta), epochs=1, verbose=0).history
    assert "loss" in history and "accuracy" in history
    for key, values in history.items():
        assert np.isfinite(values).all(), (method, key)
    assert ("meta_loss" in history) == (method in ("l2rw", "insw", "soft_label", "gen_label",
                                                  "glc"))
    assert not np.allclose(before[0], model.backbone.trainable_variables[0].numpy())


def test_options_from_data_supply_what_the_methods_need():
    bundle = types.SimpleNamespace(num_train=1234, num_meta=100, num_classes=3,
                                   steps_per_epoch=12, train_labels=np.array([0, 0, 2, 2, 2]))
    run = {"epochs": 7, "noise_rate": 0.4}
    methods = gdw_tf.methods
    assert methods.INSW.options_from_data(bundle, **run) == {"num_train": 1234}
    assert methods.GenLabel.options_from_data(bundle, **run) == {"num_train": 1234}
    assert methods.SoftLabel.options_from_data(bundle, **run) == {"num_train": 1234}
    assert methods.CoTeaching.options_from_data(bundle, **run) == {
        "forget_rate": 0.4, "steps_per_epoch": 12}
    assert methods.CoTeaching.options_from_data(bundle, epochs=7)["forget_rate"] == 0.0
    assert methods.ClassBalanced.options_from_data(bundle, **run) == {
        "class_counts": [2, 0, 3]}
    glc = methods.GLC.options_from_data(bundle, **run)
    assert glc == {"trusted_fraction": pytest.approx(100 / 1334), "estimation_epochs": 7}


def test_missing_required_options_are_named():
    for method, option in [("insw", "num_train"), ("gen_label", "num_train"),
                           ("coteaching", "forget_rate"), ("class_balanced", "class_counts")]:
        with pytest.raises(ValueError, match=option):
            gdw_tf.GDWModel(tiny.mlp(), 3, method=method)
    with pytest.raises(ValueError, match="beta"):
        gdw_tf.GDWModel(tiny.mlp(), 3, method="class_balanced", class_counts=[1, 2, 3], beta=1.0)
    with pytest.raises(ValueError, match="index"):
        model = tiny.gdw_model("insw", dtype="float32", num_train=8)
        model.fit(tiny.paired_dataset(tiny.batches(1, dtype="float32")), epochs=1, verbose=0)


def test_finetune_trains_on_the_meta_set_after_fit():
    train, meta, _ = tiny.indexed_data()
    model = tiny.gdw_model("finetune", dtype="float32", finetune_epochs=2,
                           finetune_learning_rate=0.05)
    model.fit(train, epochs=1, verbose=0)
    trained = [v.numpy().copy() for v in model.backbone.trainable_variables]
    bundle = types.SimpleNamespace(meta_once=meta, test=meta, num_classes=3)
    results = model.method.finish(model, bundle)["finetune"]
    assert len(results["meta_train_loss"]) == 2
    assert set(results["test_before"]) == {"loss", "accuracy"}
    assert results["test_after"]["loss"] < results["test_before"]["loss"]
    assert not np.allclose(trained[0], model.backbone.trainable_variables[0].numpy())
    with pytest.raises(ValueError, match="num_meta"):
        model.method.finish(model, types.SimpleNamespace(meta_once=None, test=None))


def test_optimizer_like_copies_the_configuration_and_respreads_the_cosine():
    original = keras.optimizers.SGD(gdw_tf.EpochCosineDecay(0.1, 10, 30), momentum=0.8)
    copy = optimizer_like(original, epochs=5)
    config = copy.get_config()
    assert copy is not original and config["momentum"] == 0.8
    assert config["learning_rate"]["config"] == {
        "initial_learning_rate": 0.1, "steps_per_epoch": 10, "epochs": 5}
    constant = optimizer_like(keras.optimizers.SGD(0.05, momentum=0.9), epochs=5)
    assert float(constant.learning_rate) == pytest.approx(0.05)


def _fit_on(strategy, method, initial, data):
    with strategy.scope():
        model = tiny.gdw_model(method, dtype="float32", **tiny.options_for(method))
        for var, value in zip(model.backbone.weights + model.method.weights, initial):
            var.assign(value)
    model.fit(fit_input(model, *data), epochs=1, verbose=0)
    return [v.numpy() for v in model.backbone.weights + model.method.weights]


@pytest.mark.parametrize("method", ["insw", "coteaching", "glc"])
def test_two_replicas_equal_one(method, mirrored):
    """A batch of 8 split over two replicas gives the same update (global-batch
    scaling, table writes from both replicas, the peer network, the meta batch)."""
    train, meta, _ = tiny.indexed_data(n=16, batch=8, seed=3)
    meta = meta.unbatch().batch(6)
    reference = tiny.gdw_model(method, dtype="float32", **tiny.options_for(method))
    initial = [v.numpy() for v in reference.backbone.weights + reference.method.weights]
    one = _fit_on(tf.distribute.OneDeviceStrategy("/cpu:0"), method, initial, (train, meta))
    two = _fit_on(mirrored, method, initial, (train, meta))
    for a, b in zip(one, two):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(one[0], initial[0])
