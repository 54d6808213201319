"""The opt-in class-aware weighting network (weight_inputs="loss+class") of MW-Net and GDW.

Checked against a numpy re-implementation (forward and float64 central finite
differences of the meta loss w.r.t. phi); the default stays the loss-only 1-h-1.
"""
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

import gdw_tf
from gdw_tf.losses import MAX_TARGET_PROB
from gdw_tf.methods import create_method
from gdw_tf.methods.gdw import WeightingNetwork
from tests import tiny

LR = 0.1
C = tiny.NUM_CLASSES


softmax, forward = tiny.softmax, tiny.mlp_forward


def class_vnet(phi, costs, labels):
    """The class-aware V_phi written out: [cost, onehot] -> ReLU -> sigmoid [n, C] -> given
    column."""
    k1, b1, k2, b2 = phi
    one_hot = np.eye(k2.shape[1])[labels]
    h = np.maximum(np.concatenate([costs[:, None], one_hot], axis=1) @ k1 + b1, 0)
    per_class = 1 / (1 + np.exp(-(h @ k2 + b2)))
    return np.sum(per_class * one_hot, axis=1, keepdims=True)


def constrain(omega, p, y):
    """GDW's zero-mean constraint (target weight from the non-target ones)."""
    p_t = np.sum(p * y, axis=1)
    omega_t = np.sum(omega * p * (1 - y), axis=1) / (1 - np.minimum(p_t, MAX_TARGET_PROB))
    return omega * (1 - y) + omega_t[:, None] * y


def test_the_default_network_is_the_loss_only_one_unchanged():
    for method in ("mwnet", "gdw"):
        assert create_method(method).options()["weight_inputs"] == "loss"
    model = tiny.gdw_model("mwnet", hidden_units=4)
    net = model.method.weighting_net
    assert net.num_classes is None
    assert [tuple(v.shape) for v in net.trainable_variables] == [(1, 4), (4,), (4, 1), (1,)]
    k1, b1, k2, b2 = [v.numpy() for v in net.trainable_variables]
    costs = np.array([0.1, 1.0, 2.5, 7.0])
    want = 1 / (1 + np.exp(-(np.maximum(costs[:, None] @ k1 + b1, 0) @ k2 + b2)))
    np.testing.assert_allclose(model.method.instance_weights(tf.constant(costs), None).numpy(),
                               want, rtol=1e-12)


def test_the_class_aware_network_matches_its_numpy_form_and_depends_on_the_class():
    net = WeightingNetwork(6, num_classes=C, dtype="float64")
    net.build((None, 1))
    phi = [v.numpy() for v in net.trainable_variables]
    assert [p.shape for p in phi] == [(1 + C, 6), (6,), (6, C), (C,)]
    costs = np.array([0.3, 0.3, 0.3, 2.0, 2.0, 2.0])
    labels = np.array([0, 1, 2, 0, 1, 2], dtype="int32")
    got = net(tf.constant(costs[:, None]), tf.constant(labels)).numpy()
    np.testing.assert_allclose(got, class_vnet(phi, costs, labels), rtol=1e-12)
    # Same loss, other class: other weight.
    assert np.ptp(got[:3]) > 1e-3 and np.ptp(got[3:]) > 1e-3
    # Class 1's output bias moves the weights of class 1's examples only.
    net.output_layer.bias.assign(net.output_layer.bias.numpy() + np.array([0.0, 1.0, 0.0]))
    moved = net(tf.constant(costs[:, None]), tf.constant(labels)).numpy()
    assert np.all(moved[labels == 1] > got[labels == 1])
    np.testing.assert_array_equal(moved[labels != 1], got[labels != 1])


@pytest.mark.parametrize("value", ["class", "loss,class", "", None, 1])
def test_a_bad_weight_inputs_is_one_error_naming_the_option_and_value(value):
    with pytest.raises(ValueError, match=r"^method 'gdw': weight_inputs must be 'loss' .* or "
                                         r"'loss\+class' .*, " + re.escape(f"got {value!r}") + "$"):
        create_method("gdw", weight_inputs=value)


@pytest.mark.parametrize("base", [gdw_tf.methods.MWNet, gdw_tf.methods.GDW])
def test_meta_gradients_of_the_class_aware_network_match_central_finite_differences(base):
    class Recording(base):
        def second_stage(self, model, batch, state, meta_grads, source_grads):
            self.recorded = [g.numpy() for g in meta_grads]
            return super().second_stage(model, batch, state, meta_grads, source_grads)

    is_gdw = base is gdw_tf.methods.GDW
    method = Recording(hidden_units=5, weight_inputs="loss+class")
    model = tiny.gdw_model(method, lr=LR)
    (batch, meta), = tiny.batches(1, n=9, seed=11)
    batch["label"] = batch["label"] % 2  # class 2 absent from the training batch
    theta = [v.numpy() for v in model.backbone.trainable_variables]
    phi = [v.numpy().copy() for v in method.weighting_net.trainable_variables]
    method.train_gradients(model, {k: tf.constant(v) for k, v in batch.items()},
                           tuple(tf.constant(v) for v in meta))

    x, labels = batch["image"], batch["label"]
    y = np.eye(C)[labels]
    p = softmax(forward(theta, x))
    costs = -np.log(np.sum(p * y, axis=1))  # constants, as the labels

    def meta_loss(phi_values):
        omega = class_vnet(phi_values, costs, labels) * np.ones_like(p)
        if is_gdw:
            omega = constrain(omega, p, y)
        return tiny.meta_loss_after_virtual_step(theta, x, labels, meta, omega, LR)

    for k, fd in enumerate(tiny.central_differences(meta_loss, phi)):
        np.testing.assert_allclose(method.recorded[k], fd, rtol=1e-5, atol=1e-10)
    # Not vacuous: the class embedding rows (kernel rows 1..C) and every class's
    # output unit present in the batch get a meta-gradient.
    assert np.abs(method.recorded[0][1:]).max() > 1e-6
    for c in np.unique(labels):
        assert np.abs(method.recorded[3][c]) > 1e-8
    # A class absent from the batch: no gradient to its output unit or embedding row.
    assert method.recorded[3][2] == 0 and not method.recorded[0][1 + 2].any()
    assert not method.recorded[2][:, 2].any()


@pytest.mark.parametrize("method", ["mwnet", "gdw"])
def test_a_tiny_fit_with_the_class_aware_network(method):
    train, meta, _ = tiny.indexed_data(dtype="float64")
    model = tiny.gdw_model(method, hidden_units=8, weight_inputs="loss+class")
    phi = [v.numpy().copy() for v in model.method.weighting_net.trainable_variables]
    history = model.fit(gdw_tf.data.with_meta(train, meta.repeat()), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    net = model.method.weighting_net
    assert net.num_classes == C and tuple(net.hidden.kernel.shape) == (1 + C, 8)
    assert all(not np.allclose(a, b.numpy()) for a, b in zip(phi, net.trainable_variables))
    options = model.method.options()
    assert options["weight_inputs"] == "loss+class"
    assert create_method(method, **options).options() == options


@pytest.mark.slow
def test_weight_inputs_from_the_command_line(tmp_path):
    out = str(tmp_path / "gdw")
    tiny.train("--dataset=digits", "--method=gdw", "--epochs=1", "--train_per_class=40",
               "--batch_size=50", "--hidden_units=8", "--method_option=weight_inputs=loss+class",
               "--verbose=0", f"--output_dir={out}")
    with open(os.path.join(out, "results.json")) as f:
        res = json.load(f)
    assert res["method_options"]["weight_inputs"] == "loss+class"
    assert res["epochs_completed"] == 1 and all(v == v for v in res["history"]["loss"])


@pytest.mark.slow
def test_a_bad_weight_inputs_from_the_command_line_is_one_error_line(tmp_path):
    proc = tiny.train("--dataset=digits", "--method=mwnet", "--epochs=1",
                      "--train_per_class=40", "--method_option=weight_inputs=class",
                      "--verbose=0", f"--output_dir={tmp_path / 'run'}", check=False)
    assert "weight_inputs must be 'loss'" in tiny.user_error_line(proc)
    assert "got 'class'" in tiny.user_error_line(proc)
