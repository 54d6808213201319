"""focal, class_balanced and glc: their losses and estimates against closed forms."""
import types

import numpy as np
import pytest
import tensorflow as tf

import gdw_tf
from gdw_tf.losses import cross_entropy
from gdw_tf.methods.glc import corrected_cross_entropy, estimate_corruption
from gdw_tf.methods.reweighted_losses import effective_number_weights, focal_loss
from tests import tiny


def _logits_and_labels(n=7, c=4, seed=0):
    rng = np.random.default_rng(seed)
    return (tf.constant(rng.normal(size=(n, c)) * 3.0),
            tf.constant(rng.integers(0, c, n).astype("int32")))


def _value_and_logit_grad(loss_fn, labels, logits):
    with tf.GradientTape() as tape:
        tape.watch(logits)
        values = loss_fn(labels, logits)
        total = tf.reduce_sum(values)
    return values.numpy(), tape.gradient(total, logits).numpy()


def test_focal_with_gamma_zero_is_cross_entropy_gradients_too():
    logits, labels = _logits_and_labels()
    focal = _value_and_logit_grad(lambda y, z: focal_loss(y, z, 0.0), labels, logits)
    plain = _value_and_logit_grad(cross_entropy, labels, logits)
    np.testing.assert_allclose(focal[0], plain[0], rtol=1e-12)
    np.testing.assert_allclose(focal[1], plain[1], rtol=1e-12)
    # ... and a whole training step of focal(gamma=0) is the BaseModel step.
    (batch, _), = tiny.batches(1)
    batch = {k: tf.constant(v) for k, v in batch.items()}
    model = tiny.gdw_model("focal", gamma=0.0)
    base = gdw_tf.methods.Plain()
    for a, b in zip(model.method.train_gradients(model, batch, None).grads,
                    base.train_gradients(model, batch, None).grads):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)


def test_focal_loss_formula_and_default_gamma():
    logits, labels = _logits_and_labels(seed=1)
    p = tf.nn.softmax(logits).numpy()[np.arange(7), labels.numpy()]
    values, grads = _value_and_logit_grad(lambda y, z: focal_loss(y, z, 2.0), labels, logits)
    np.testing.assert_allclose(values, -(1 - p) ** 2 * np.log(p), rtol=1e-10)
    assert np.isfinite(grads).all()
    assert gdw_tf.methods.Focal().gamma == 2.0
    # Confident examples lose (relatively) the most: the ratio to CE is (1 - p)^2.
    ratio = values / -np.log(p)
    assert np.all(np.diff(ratio[np.argsort(p)]) <= 1e-12)


def test_class_balanced_weights_follow_the_effective_number():
    counts, beta = [5000, 500, 50, 5], 0.999
    weights = effective_number_weights(counts, beta)
    raw = np.array([(1 - beta) / (1 - beta ** n) for n in counts])
    np.testing.assert_allclose(weights, raw / raw.sum() * 4, rtol=1e-12)
    assert weights.sum() == pytest.approx(4) and np.all(np.diff(weights) > 0)
    np.testing.assert_allclose(effective_number_weights(counts, 0.0), np.ones(4))
    inverse = 1 / np.array(counts, float)
    np.testing.assert_allclose(effective_number_weights(counts, 1 - 1e-12),
                               inverse / inverse.sum() * 4, rtol=1e-3)
    np.testing.assert_allclose(effective_number_weights([3, 0, 1], 0.5)[1], 0.0)
    assert gdw_tf.methods.ClassBalanced(class_counts=counts).beta == 0.9999


def test_class_balanced_step_weights_each_example_by_its_class():
    (batch, _), = tiny.batches(1)
    batch = {k: tf.constant(v) for k, v in batch.items()}
    counts = [30, 10, 2]
    model = tiny.gdw_model("class_balanced", class_counts=counts, beta=0.99)
    out = model.method.train_gradients(model, batch, None)
    expected = effective_number_weights(counts, 0.99)[batch["label"].numpy()]
    np.testing.assert_allclose(out.weights.numpy()[:, 0], expected, rtol=1e-12)
    theta = model.backbone.trainable_variables
    with tf.GradientTape() as tape:
        logits = model.backbone(batch["image"])
        loss = tf.reduce_mean(expected * cross_entropy(batch["label"], logits))
    for a, b in zip(out.grads, tape.gradient(loss, theta)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10)


def test_glc_corrected_loss_with_identity_is_cross_entropy_gradients_too():
    logits, labels = _logits_and_labels(seed=2)
    eye = tf.eye(4, dtype=tf.float64)
    glc = _value_and_logit_grad(lambda y, z: corrected_cross_entropy(y, z, eye), labels, logits)
    plain = _value_and_logit_grad(cross_entropy, labels, logits)
    np.testing.assert_allclose(glc[0], plain[0], rtol=1e-12)
    np.testing.assert_allclose(glc[1], plain[1], rtol=1e-12, atol=1e-15)
    corruption = np.random.default_rng(0).dirichlet(np.ones(4), size=4)
    values = corrected_cross_entropy(labels, logits, corruption).numpy()
    mixed = tf.nn.softmax(logits).numpy() @ corruption
    np.testing.assert_allclose(values, -np.log(mixed[np.arange(7), labels.numpy()]), rtol=1e-10)


CORRUPTION = np.array([[0.7, 0.2, 0.1],
                       [0.1, 0.6, 0.3],
                       [0.25, 0.05, 0.7]])


def test_glc_estimate_from_an_oracle_classifier_is_exact():
    """With p(noisy label | x) known exactly, the estimate is C itself."""
    true = np.random.default_rng(0).integers(0, 3, 5000)
    np.testing.assert_allclose(estimate_corruption(CORRUPTION[true], true, 3), CORRUPTION,
                               atol=1e-12)
    np.testing.assert_allclose(estimate_corruption(CORRUPTION[[0, 0]], [0, 0], 3)[1:],
                               np.eye(3)[1:])  # classes without trusted data: identity


def _blobs_with_known_corruption(n=8000, m=300, batch=200, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.array([[4.0, 0, 0, 0], [0, 4.0, 0, 0], [0, 0, 4.0, 0]])
    true = rng.integers(0, 3, n)
    noisy = np.array([rng.choice(3, p=CORRUPTION[t]) for t in true])
    x = (centers[true] + 0.5 * rng.normal(size=(n, 4))).astype("float32")
    ym = np.repeat(np.arange(3), m // 3)
    xm = (centers[ym] + 0.5 * rng.normal(size=(m, 4))).astype("float32")
    train = tf.data.Dataset.from_tensor_slices(
        {"image": x, "label": noisy.astype("int32"), "index": np.arange(n, dtype="int32")}
    ).shuffle(n, seed=seed).batch(batch)
    meta_once = tf.data.Dataset.from_tensor_slices((xm, ym.astype("int32"))).batch(100)
    return types.SimpleNamespace(train=train, meta_once=meta_once, meta=meta_once.repeat(),
                                 num_classes=3, num_train=n, num_meta=m, steps_per_epoch=n // batch)


def test_glc_prepare_recovers_a_known_corruption_matrix():
    """Noisy labels drawn from C; prepare() trains on them and estimates C on clean data.

    (Seeds 0-2 give errors <= 0.022; sampling alone gives ~0.017.)"""
    bundle = _blobs_with_known_corruption()
    schedule = gdw_tf.EpochCosineDecay(0.1, bundle.steps_per_epoch, epochs=30)
    model = tiny.gdw_model("glc", lr=schedule, dtype="float32",
                           backbone=tiny.mlp("float32", hidden=16), estimation_epochs=8)
    model.method.prepare(model, bundle)  # the estimator's schedule: 8 epochs
    estimate = model.method.corruption.numpy()
    np.testing.assert_allclose(estimate, CORRUPTION, atol=0.05)
    np.testing.assert_allclose(estimate.sum(axis=1), 1.0, rtol=1e-5)
    report = model.method.finish(model, bundle)["glc"]
    assert report["estimation_epochs"] == 8
    # Training then uses the estimate, and the trusted batch's plain CE as meta_loss.
    history = model.fit(gdw_tf.data.with_meta(bundle.train, bundle.meta), epochs=1,
                        verbose=0).history
    assert np.isfinite(history["loss"]).all() and np.isfinite(history["meta_loss"]).all()
