"""meta_interval=k: the bi-level step every k-th step, plain-cost steps between."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import gdw_tf
from gdw_tf.losses import class_weighted_cross_entropy
from tests import tiny


def _weights(model):
    return [v.numpy().copy() for v in model.backbone.weights + model.method.weights]


@pytest.mark.parametrize("method", ["gdw", "insw"])
def test_meta_interval_one_is_the_exact_step_bit_for_bit(method):
    train, meta, _ = tiny.indexed_data(dtype="float64")
    runs = []
    for options in ({}, {"meta_interval": 1}):
        model = tiny.gdw_model(method, **tiny.options_for(method), **options)
        model.fit(gdw_tf.data.with_meta(train, meta.repeat()), epochs=1, steps_per_epoch=3,
                  verbose=0)
        runs.append(_weights(model))
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(runs[0][0], tiny.mlp().weights[0].numpy())


class _Snapshots(keras.callbacks.Callback):
    def __init__(self, variables):
        super().__init__()
        self.variables, self.after = variables, []

    def on_train_batch_end(self, batch, logs=None):
        self.after.append([v.numpy().copy() for v in self.variables])


def test_meta_interval_three_runs_the_meta_step_on_steps_zero_and_three():
    steps = tiny.batches(6)
    model = tiny.gdw_model("gdw", meta_interval=3, hidden_units=8)
    phi = model.method.weighting_net.trainable_variables
    before = [v.numpy().copy() for v in phi]
    backbone = _Snapshots(model.backbone.trainable_variables)
    snapshots = _Snapshots(phi)
    # steps_per_epoch: a fit that runs its data dry counts one step more (Keras).
    history = model.fit(tiny.paired_dataset(steps), epochs=1, steps_per_epoch=6, verbose=0,
                        callbacks=[snapshots, backbone]).history
    assert int(model.optimizer.iterations) == 6
    assert int(model.method.meta_optimizer.iterations) == 2
    previous = [before] + snapshots.after[:-1]
    moved = [not all(np.array_equal(a, b) for a, b in zip(now, prev))
             for now, prev in zip(snapshots.after, previous)]
    assert moved == [True, False, False, True, False, False]
    previous = backbone.after[:-1]
    assert all(not np.array_equal(now[0], prev[0])
               for now, prev in zip(backbone.after[1:], previous))

    exact = tiny.gdw_model("gdw", hidden_units=8)
    exact_history = exact.fit(tiny.paired_dataset(steps[:1]), epochs=1, steps_per_epoch=1,
                              verbose=0).history
    assert sorted(history) == sorted(exact_history)
    assert all(np.isfinite(v).all() for v in history.values())


def _indexed_batch(n=6, seed=0):
    (batch, _), = tiny.batches(1, n=n, seed=seed)
    batch = {k: tf.constant(v) for k, v in batch.items()}
    batch["index"] = tf.constant(np.arange(n), tf.int32)
    return batch


def test_steps_between_meta_steps_use_the_current_first_stage_weights():
    batch = _indexed_batch()
    model = tiny.gdw_model("gdw", meta_interval=2, hidden_units=8)
    out = model.method.train_gradients_without_meta(model, batch)
    logits = model.backbone(batch["image"], training=True)
    expected = model.method.first_stage(logits, batch).weights
    np.testing.assert_allclose(out.weights.numpy(), expected.numpy(), rtol=1e-12)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(class_weighted_cross_entropy(
            batch["label"], model.backbone(batch["image"], training=True), expected))
    grads = tape.gradient(loss, model.backbone.trainable_variables)
    for got, want in zip(out.grads, grads):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10)
    assert out.meta_loss is None
    # Increase fractions exist only for meta steps: reported with zero weight.
    _, weight = out.diagnostics["increased_nontarget_clean"]
    assert np.all(weight.numpy() == 0)

    # Table methods read their rows and leave the table alone.
    insw = tiny.gdw_model("insw", meta_interval=2, num_train=6)
    insw.method.table.assign([1.0, 2.0, 3.0, 1.0, 2.0, 3.0])
    out = insw.method.train_gradients_without_meta(insw, batch)
    np.testing.assert_allclose(out.weights.numpy()[:, 0], [0.5, 1, 1.5, 0.5, 1, 1.5], rtol=1e-6)
    np.testing.assert_array_equal(insw.method.table.numpy(), [1, 2, 3, 1, 2, 3])
    soft = tiny.gdw_model("soft_label", meta_interval=2, num_train=6)
    soft.method.table.assign(np.full(6, 0.3, "float32"))
    out = soft.method.train_gradients_without_meta(soft, batch)
    onehot = np.eye(tiny.NUM_CLASSES)[batch["label"].numpy()]
    np.testing.assert_allclose(out.weights.numpy(), 0.7 * onehot + 0.1, rtol=1e-6)
    np.testing.assert_array_equal(soft.method.table.numpy(), np.float32(0.3))


@pytest.mark.parametrize("value", [0, -2, 2.5, "3", True, None])
def test_bad_meta_interval_is_a_clear_error(value):
    with pytest.raises(ValueError, match="meta_interval"):
        gdw_tf.GDWModel(tiny.mlp(), 3, method="mwnet", meta_interval=value)


def test_meta_interval_is_rejected_where_it_cannot_apply_and_kept_in_the_config():
    with pytest.raises(ValueError, match="'l2rw'.*meta_interval"):
        gdw_tf.GDWModel(tiny.mlp(), 3, method="l2rw", meta_interval=2)
    model = gdw_tf.GDWModel(tiny.mlp(), 3, method="gen_label", num_train=6, meta_interval=4)
    assert model.get_config()["meta_interval"] == 4
    model.compile(keras.optimizers.SGD(0.1), steps_per_execution=2)
    with pytest.raises(ValueError, match="steps_per_execution"):
        model.fit(tiny.paired_dataset(tiny.batches(2)), epochs=1, verbose=0)


def _fit_on(strategy, method, initial, data):
    with strategy.scope():
        model = tiny.gdw_model(method, dtype="float32", meta_interval=2, **tiny.options_for(method))
        for var, value in zip(model.backbone.weights + model.method.weights, initial):
            var.assign(value)
    model.fit(gdw_tf.data.with_meta(*data), epochs=1, steps_per_epoch=3, verbose=0)
    return model, _weights(model)


@pytest.mark.slow  # in process, but among the slowest (docs/development.md)
@pytest.mark.parametrize("method", ["gdw", "soft_label"])
def test_meta_interval_trains_on_two_replicas_as_on_one(method, mirrored):
    train, meta, _ = tiny.indexed_data(n=24, batch=8, seed=3)  # steps: meta, plain, meta
    meta = meta.unbatch().batch(6).repeat()
    reference = tiny.gdw_model(method, dtype="float32", **tiny.options_for(method))
    initial = [v.numpy() for v in reference.backbone.weights + reference.method.weights]
    one_model, one = _fit_on(tf.distribute.OneDeviceStrategy("/cpu:0"), method, initial,
                             (train, meta))
    two_model, two = _fit_on(mirrored, method, initial, (train, meta))
    for a, b in zip(one, two):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert two_model.optimizer.iterations.numpy() == 3
    assert not np.allclose(one[0], initial[0])


def _fit_one_step(model, steps):
    model.fit(tiny.paired_dataset(steps), epochs=1, steps_per_epoch=len(steps), verbose=0)
    return model


def test_virtual_scope_head_is_the_exact_step_of_a_backbone_frozen_below_the_head():
    # The virtual step moving only the head gives the meta-gradient of the exact step
    # on a backbone whose other layers do not train; the real step still trains all.
    steps = tiny.batches(1)
    head = _fit_one_step(tiny.gdw_model("gdw", virtual_scope="head", hidden_units=8), steps)
    frozen_backbone = tiny.mlp()
    frozen_backbone.layers[0].trainable = False
    frozen = _fit_one_step(tiny.gdw_model("gdw", backbone=frozen_backbone, hidden_units=8), steps)
    for a, b in zip(head.method.weighting_net.weights, frozen.method.weighting_net.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-14)
    for a, b in zip(head.backbone.layers[1].weights, frozen.backbone.layers[1].weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-14)
    exact = _fit_one_step(tiny.gdw_model("gdw", hidden_units=8), steps)
    assert not np.allclose(head.method.weighting_net.weights[0].numpy(),
                           exact.method.weighting_net.weights[0].numpy(), rtol=1e-6)
    untrained = tiny.mlp().layers[0].weights[0].numpy()
    assert not np.array_equal(head.backbone.layers[0].weights[0].numpy(), untrained)
    np.testing.assert_array_equal(frozen.backbone.layers[0].weights[0].numpy(), untrained)


def test_virtual_scope_of_every_layer_is_the_exact_step_bit_for_bit():
    steps = tiny.batches(2)
    runs = [_weights(_fit_one_step(tiny.gdw_model("mwnet", hidden_units=8, **options), steps))
            for options in ({}, {"virtual_scope": "all"}, {"virtual_scope": 2})]
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("value", [0, -1, 1.5, "last", True, None])
def test_bad_virtual_scope_is_a_clear_error(value):
    with pytest.raises(ValueError, match="virtual_scope"):
        gdw_tf.GDWModel(tiny.mlp(), 3, method="gdw", virtual_scope=value)


def test_virtual_scope_deeper_than_the_backbone_is_a_clear_error_and_kept_in_the_config():
    model = tiny.gdw_model("gdw", virtual_scope=3)
    with pytest.raises(ValueError, match="virtual_scope=3.*only 2 layers"):
        _fit_one_step(model, tiny.batches(1))
    assert tiny.gdw_model("mwnet", virtual_scope="head").get_config()["virtual_scope"] == "head"


def _fit_head_on(strategy, initial, data):
    with strategy.scope():
        model = tiny.gdw_model("gdw", dtype="float32", virtual_scope="head", meta_interval=2)
        for var, value in zip(model.backbone.weights + model.method.weights, initial):
            var.assign(value)
    model.fit(gdw_tf.data.with_meta(*data), epochs=1, steps_per_epoch=3, verbose=0)
    return _weights(model)


@pytest.mark.slow  # in process, but among the slowest (docs/development.md)
def test_virtual_scope_head_trains_on_two_replicas_as_on_one(mirrored):
    train, meta, _ = tiny.indexed_data(n=24, batch=8, seed=3)
    meta = meta.unbatch().batch(6).repeat()
    reference = tiny.gdw_model("gdw", dtype="float32")
    initial = [v.numpy() for v in reference.backbone.weights + reference.method.weights]
    one = _fit_head_on(tf.distribute.OneDeviceStrategy("/cpu:0"), initial, (train, meta))
    two = _fit_head_on(mirrored, initial, (train, meta))
    for a, b in zip(one, two):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(one[0], initial[0])
