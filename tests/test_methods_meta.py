"""l2rw, insw, soft_label and gen_label: weights, tables and targets of one step."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import gdw_tf
from gdw_tf.losses import cross_entropy
from gdw_tf.methods.label_learning import soft_target_cross_entropy
from tests import tiny

LR = 0.1


def _linear(seed=0, zero=False):
    keras.utils.set_random_seed(seed)
    init = "zeros" if zero else "glorot_uniform"
    return keras.Sequential([keras.Input((tiny.NUM_FEATURES,), dtype="float64"),
                             keras.layers.Dense(tiny.NUM_CLASSES, dtype="float64",
                                                kernel_initializer=init)])


def _per_example_grads(model, x, y):
    """Flattened d CE(x_i, y_i) / d theta, one row per example."""
    rows = []
    for i in range(len(y)):
        with tf.GradientTape() as tape:
            loss = cross_entropy(y[i:i + 1], model.backbone(x[i:i + 1]))[0]
        grads = tape.gradient(loss, model.backbone.trainable_variables)
        rows.append(np.concatenate([g.numpy().ravel() for g in grads]))
    return np.stack(rows)


def _flat(grads):
    return np.concatenate([g.numpy().ravel() for g in grads])


def test_l2rw_weights_are_the_clipped_normalised_gradient_alignment():
    """An exact copy of the meta example is up-weighted; the same image with a
    wrong label has a gradient opposing the meta gradient and gets weight 0."""
    rng = np.random.default_rng(0)
    x_meta = rng.normal(size=(1, 4))
    x = np.concatenate([x_meta, x_meta, rng.normal(size=(3, 4))])
    y = np.array([0, 1, 2, 0, 1], "int32")       # 0: aligned copy, 1: opposed
    model = tiny.gdw_model("l2rw", lr=LR, backbone=_linear(zero=True))
    batch = {"image": tf.constant(x), "label": tf.constant(y)}
    out = model.method.train_gradients(model, batch, (tf.constant(x_meta), tf.constant([0])))

    per_example = _per_example_grads(model, x, y)
    meta_grad = _per_example_grads(model, x_meta, np.array([0], "int32"))[0]
    alignment = np.maximum(per_example @ meta_grad, 0.0)   # -dL_meta/deps_i * n / lr
    expected = alignment / alignment.sum()
    weights = out.weights.numpy()[:, 0] / len(y)
    np.testing.assert_allclose(weights, expected, rtol=1e-8, atol=1e-15)
    assert np.all(weights >= 0) and weights.sum() == pytest.approx(1.0)
    assert weights[0] > 0.1 and weights[1] == 0.0
    assert per_example[1] @ meta_grad < 0                  # the opposing case is real
    np.testing.assert_allclose(_flat(out.grads), expected @ per_example, rtol=1e-8, atol=1e-14)


def test_l2rw_batch_that_only_opposes_the_meta_gradient_gets_zero_weights():
    x_meta = np.random.default_rng(1).normal(size=(1, 4))
    model = tiny.gdw_model("l2rw", lr=LR, backbone=_linear(zero=True))
    batch = {"image": tf.constant(np.repeat(x_meta, 2, axis=0)), "label": tf.constant([1, 2])}
    out = model.method.train_gradients(model, batch, (tf.constant(x_meta), tf.constant([0])))
    np.testing.assert_array_equal(out.weights.numpy(), 0.0)
    assert np.all(_flat(out.grads) == 0.0)


def _indexed_batch(index, seed=0):
    (batch, meta), = tiny.batches(1, n=len(index), seed=seed)
    batch = {k: tf.constant(v) for k, v in batch.items()}
    batch["index"] = tf.constant(index, tf.int32)
    return batch, tuple(tf.constant(v) for v in meta)


def test_insw_table_changes_only_at_the_batch_indices():
    index = [2, 5, 7, 9, 0, 4]
    others = np.setdiff1d(np.arange(12), index)
    batch, meta = _indexed_batch(index)

    frozen = tiny.gdw_model("insw", num_train=12, weight_learning_rate=0.0)
    frozen.method.train_gradients(frozen, batch, meta)
    table = frozen.method.table.numpy()
    np.testing.assert_array_equal(table[index], 0.5)   # w / table_decay, no meta step
    np.testing.assert_array_equal(table[others], 1.0)

    model = tiny.gdw_model("insw", num_train=12)
    out = model.method.train_gradients(model, batch, meta)
    table = model.method.table.numpy()
    np.testing.assert_array_equal(table[others], 1.0)
    assert np.all(table[index] != 0.5) and np.all(table[index] >= 1e-5)
    np.testing.assert_allclose(out.weights.numpy()[:, 0] / 6,  # the table is float32
                               table[index] / table[index].sum(), rtol=1e-6)


def test_gen_label_table_changes_only_at_the_batch_indices_and_targets_are_used():
    index = [1, 3, 8, 4, 6, 11]
    batch, meta = _indexed_batch(index, seed=4)
    model = tiny.gdw_model("gen_label", num_train=12)
    out = model.method.train_gradients(model, batch, meta)
    table = model.method.table.numpy()
    assert table.shape == (12, tiny.NUM_CLASSES)
    np.testing.assert_array_equal(np.delete(table, index, axis=0), 0.0)
    assert np.all(np.abs(table[index]).sum(axis=1) > 0)
    onehot = np.eye(tiny.NUM_CLASSES)[batch["label"].numpy()]
    targets = tf.nn.softmax(10.0 * onehot + table[index]).numpy()
    np.testing.assert_allclose(out.weights.numpy(), targets, rtol=1e-12)
    theta = model.backbone.trainable_variables
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(soft_target_cross_entropy(targets, model.backbone(batch["image"])))
    np.testing.assert_allclose(_flat(out.grads), _flat(tape.gradient(loss, theta)), rtol=1e-10)


def test_soft_label_with_zero_smoothing_is_cross_entropy():
    logits = tf.constant(np.random.default_rng(2).normal(size=(5, 3)))
    labels = tf.constant([0, 2, 1, 1, 0])
    method = gdw_tf.methods.SoftLabel(num_train=5)
    method.num_classes = 3
    targets = method.targets(tf.zeros([5], tf.float64), labels)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(logits)
        soft = soft_target_cross_entropy(targets, logits)
        plain = cross_entropy(labels, logits)
        soft_sum, plain_sum = tf.reduce_sum(soft), tf.reduce_sum(plain)
    np.testing.assert_allclose(soft.numpy(), plain.numpy(), rtol=1e-12)
    np.testing.assert_allclose(tape.gradient(soft_sum, logits).numpy(),
                               tape.gradient(plain_sum, logits).numpy(), rtol=1e-12)
    # With the smoothing held at zero, whole training steps are BaseModel's.
    train, meta, _ = tiny.indexed_data(n=12, dtype="float64")
    soft_model = tiny.gdw_model("soft_label", num_train=12, label_learning_rate=0.0)
    base_model = tiny.gdw_model("base")
    soft_model.fit(gdw_tf.data.with_meta(train, meta), epochs=1, verbose=0)
    base_model.fit(train, epochs=1, verbose=0)
    for a, b in zip(soft_model.backbone.weights, base_model.backbone.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)
    np.testing.assert_array_equal(soft_model.method.table.numpy(), 0.0)


def test_soft_label_smoothing_is_learned_within_bounds():
    index = list(range(6))
    batch, meta = _indexed_batch(index, seed=5)
    model = tiny.gdw_model("soft_label", num_train=8, label_learning_rate=50.0)
    model.method.table.assign(np.full(8, 0.5, "float32"))
    out = model.method.train_gradients(model, batch, meta)
    table = model.method.table.numpy()
    np.testing.assert_array_equal(table[6:], 0.5)
    assert np.all((table >= 0) & (table <= 1)) and np.any(table[index] != 0.5)
    np.testing.assert_allclose(out.weights.numpy().sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("method", ["insw", "coteaching"])
def test_save_and_load_round_trip_keeps_tables_and_peers(method, tmp_path):
    train, meta, _ = tiny.indexed_data()
    model = tiny.gdw_model(method, dtype="float32", **tiny.options_for(method))
    model.fit(gdw_tf.data.with_meta(train, meta) if model.method.needs_meta else train,
              epochs=1, verbose=0)
    path = str(tmp_path / f"{method}.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.method.method_name == method
    assert loaded.method.get_config() == model.method.get_config()
    assert len(loaded.method.weights) == len(model.method.weights) > 0
    for a, b in zip(loaded.method.weights, model.method.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    if method == "insw":
        assert np.any(model.method.table.numpy() != 1.0)
    x = np.random.default_rng(1).normal(size=(5, 4)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6)


def test_the_weight_check_metric_is_the_binned_auc_of_its_two_groups():
    from gdw_tf.diagnostics import binned_auc
    from gdw_tf.metrics import Histogram, WeightSeparation

    rng = np.random.default_rng(3)
    high, low = rng.uniform(0, 2, 300), rng.uniform(0, 1.5, 200)
    check = WeightSeparation()
    assert float(check.result()) == 0.5  # no evidence yet
    check.update_state(high[:100], low[:50])
    check.update_state(high[100:], low[50:])
    a, b = Histogram(bins=400), Histogram(bins=400)
    a.update_state(high)
    b.update_state(low)
    assert float(check.result()) == pytest.approx(binned_auc(a.result(), b.result()), abs=1e-6)
    exact = (high[:, None] > low[None, :]).mean()  # the unbinned AUC, within a bin's ties
    assert float(check.result()) == pytest.approx(exact, abs=0.01)


def test_weight_trust_reads_the_last_epoch_of_the_fit_check():
    from gdw_tf.diagnostics import TRUSTED_FIT_AUC, weight_trust

    history = {"weight_check_fit_auc": [0.2, 0.9], "weight_check_meta_auc": [0.5, 0.4]}
    assert weight_trust(history).trusted and weight_trust(history).fit_auc == 0.9
    history["weight_check_fit_auc"][-1] = TRUSTED_FIT_AUC - 0.01
    assert not weight_trust(history).trusted
    assert weight_trust({"loss": [1.0]}) is None
