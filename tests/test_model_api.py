"""GDWModel as a Keras model: fit on a noisy task, save/load, bad input."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import gdw_tf
from tests import tiny


def _noisy_blobs(n=1600, classes=4, dims=8, rate=0.4, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dims)) * 2.5
    true = rng.integers(0, classes, n)
    x = (centers[true] + rng.normal(size=(n, dims))).astype("float32")
    noisy = np.where(rng.random(n) < rate, rng.integers(0, classes, n), true)
    ym = np.repeat(np.arange(classes), 25)
    xm = (centers[ym] + rng.normal(size=(len(ym), dims))).astype("float32")
    train = tf.data.Dataset.from_tensor_slices(
        {"image": x, "label": noisy.astype("int32"), "true_label": true.astype("int32")}
    ).shuffle(n, seed=seed).batch(100, drop_remainder=True)
    meta = tf.data.Dataset.from_tensor_slices((xm, ym.astype("int32"))).shuffle(
        100, seed=seed).batch(50)
    return train, meta


def _blob_model(method="gdw", classes=4, dims=8):
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential([keras.Input((dims,)), keras.layers.Dense(64, activation="relu"),
                                 keras.layers.Dense(classes)])
    model = gdw_tf.GDWModel(backbone, classes, method=method)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), metrics=["accuracy"])
    return model


def test_fit_with_uniform_noise_weights_clean_above_noisy():
    train, meta = _noisy_blobs()
    model = _blob_model("gdw")
    history = model.fit(gdw_tf.data.with_meta(train, meta), epochs=8, verbose=0).history
    assert history["target_weight_clean"][-1] > history["target_weight_noisy"][-1] + 0.1
    for key in ("loss", "meta_loss", "accuracy", "target_weight",
                "increased_nontarget_clean", "increased_truetarget_noisy",
                "increased_nontarget_noisy"):
        assert key in history and np.isfinite(history[key]).all(), key
    # Figure 5: the harmful true-target flows of noisy examples mostly decrease.
    assert history["increased_truetarget_noisy"][-1] < history["increased_nontarget_clean"][-1]


def test_save_and_load_round_trip_keeps_the_weighting_network(tmp_path):
    train, meta = _noisy_blobs(n=400)
    model = _blob_model("gdw")
    model.fit(gdw_tf.data.with_meta(train, meta), epochs=1, verbose=0)
    path = str(tmp_path / "gdw.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(1).normal(size=(5, 8)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    assert loaded.method.method_name == "gdw" and loaded.method.outer_lr == 100.0
    for a, b in zip(loaded.method.weighting_net.weights, model.method.weighting_net.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    evaluated = loaded.evaluate(
        tf.data.Dataset.from_tensor_slices((x, np.zeros(5, "int32"))).batch(5),
        return_dict=True, verbose=0)
    assert set(evaluated) == {"loss", "accuracy"}


def test_label_outside_range_is_rejected_before_any_update():
    model = tiny.gdw_model("gdw")
    before = [v.numpy().copy() for v in model.weights]
    steps = tiny.batches(1)
    steps[0][0]["label"][2] = tiny.NUM_CLASSES
    with pytest.raises(tf.errors.InvalidArgumentError, match="training label outside"):
        model.fit(tiny.paired_dataset(steps), epochs=1, verbose=0)
    for a, b in zip(before, model.weights):
        np.testing.assert_array_equal(a, b.numpy())


def test_meta_label_outside_range_is_rejected():
    model = tiny.gdw_model("mwnet")
    steps = tiny.batches(1)
    steps[0][1][1][0] = -1
    with pytest.raises(tf.errors.InvalidArgumentError, match="meta label outside"):
        model.fit(tiny.paired_dataset(steps), epochs=1, verbose=0)


def test_non_finite_loss_is_rejected_before_any_update():
    model = tiny.gdw_model("gdw")
    before = [v.numpy().copy() for v in model.weights]
    steps = tiny.batches(1)
    steps[0][0]["image"][0, 0] = np.inf
    with pytest.raises(tf.errors.InvalidArgumentError, match="non-finite (training|meta) loss"):
        model.fit(tiny.paired_dataset(steps), epochs=1, verbose=0)
    for a, b in zip(before, model.weights):
        np.testing.assert_array_equal(a, b.numpy())


def test_backbone_width_must_match_num_classes():
    with pytest.raises(ValueError, match="outputs 3 logits per example but num_classes=5"):
        gdw_tf.GDWModel(tiny.mlp(), num_classes=5)


def test_meta_method_without_meta_set_names_the_fix():
    model = tiny.gdw_model("gdw")
    x, y = np.zeros((4, 4)), np.zeros(4, "int32")
    with pytest.raises(ValueError, match="with_meta"):
        model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(2), epochs=1, verbose=0)


def test_base_trains_without_a_meta_set():
    model = tiny.gdw_model("base")
    x = np.random.default_rng(0).normal(size=(8, 4))
    y = np.arange(8, dtype="int32") % 3
    history = model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(4), epochs=1, verbose=0)
    assert "meta_loss" not in history.history


def test_unknown_method_and_option_are_named():
    with pytest.raises(ValueError, match="unknown method 'gwd'"):
        gdw_tf.GDWModel(tiny.mlp(), 3, method="gwd")
    with pytest.raises(ValueError, match="method 'gdw' has no option outer_lrr; its options: "
                       "clip, hidden_units, meta_interval, "):
        gdw_tf.GDWModel(tiny.mlp(), 3, method="gdw", outer_lrr=1.0)
    with pytest.raises(ValueError,
                       match="method 'base' has no option trainable; it takes no options"):
        # a Keras argument, not an option
        gdw_tf.GDWModel(tiny.mlp(), 3, method="base", trainable=False)


def test_compiling_a_loss_is_refused():
    model = gdw_tf.GDWModel(tiny.mlp(), 3)
    with pytest.raises(ValueError, match="do not pass `loss`"):
        model.compile("sgd", loss="mse")


def test_epoch_cosine_schedule_is_constant_within_an_epoch():
    schedule = gdw_tf.EpochCosineDecay(0.1, steps_per_epoch=10, epochs=4)
    values = [float(schedule(s)) for s in (0, 9, 10, 20, 39)]
    np.testing.assert_allclose(values, [0.1, 0.1, 0.1 * (1 + np.cos(np.pi / 4)) / 2,
                                        0.05, 0.1 * (1 + np.cos(3 * np.pi / 4)) / 2], rtol=1e-6)


def test_meta_optimizer_is_a_constructor_knob_and_survives_save(tmp_path):
    model = tiny.gdw_model("gdw", meta_optimizer=keras.optimizers.SGD(0.5), hidden_units=4)
    assert isinstance(model.method.meta_optimizer, keras.optimizers.SGD)
    phi = [v.numpy().copy() for v in model.method.weighting_net.weights]
    model.fit(tiny.paired_dataset(tiny.batches(1)), epochs=1, verbose=0)
    assert any(not np.array_equal(a, b.numpy())
               for a, b in zip(phi, model.method.weighting_net.weights))
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.method.meta_optimizer, keras.optimizers.SGD)
    with pytest.raises(ValueError, match="meta_optimizer must be a keras optimizer"):
        tiny.gdw_model("gdw", meta_optimizer="adam")


def test_histogram_counts_values_per_bin_with_weights():
    hist = gdw_tf.metrics.Histogram(bins=4, low=0.0, high=2.0)
    hist.update_state(tf.constant([0.1, 0.6, 0.7, 1.9, 5.0, -1.0]),
                      tf.constant([1.0, 1.0, 0.0, 1.0, 1.0, 1.0]))
    np.testing.assert_array_equal(hist.result().numpy(), [2, 1, 0, 2])


@pytest.mark.parametrize("method", ["base", "gdw"])
def test_train_step_compiles_with_xla(method):
    model = tiny.gdw_model(method, dtype="float32")
    (batch, meta), = tiny.batches(1, dtype="float32")
    step = tf.function(model.train_step, jit_compile=True)
    logs = step({**batch, "meta_image": meta[0], "meta_label": meta[1]})
    assert np.isfinite(float(logs["loss"]))
