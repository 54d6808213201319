"""coteaching: the forget schedule and the cross update from the peer's selection."""
import numpy as np
import tensorflow as tf

from gdw_tf.losses import cross_entropy
from gdw_tf.methods.coteaching import kept_fraction, small_loss_mask
from tests import tiny

LR = 0.1


def test_kept_fraction_follows_the_schedule():
    got = [float(kept_fraction(e, 0.4, 10)) for e in (0, 1, 5, 10, 30)]
    np.testing.assert_allclose(got, [1.0, 0.96, 0.8, 0.6, 0.6], rtol=1e-6)
    mask, count = small_loss_mask(tf.constant([0.5, 0.1, 0.9, 0.3, 0.2]), 0.6)
    assert int(count) == 3
    np.testing.assert_array_equal(mask.numpy(), [0, 1, 0, 1, 1])
    mask, count = small_loss_mask(tf.constant([0.5, 0.1]), 0.0)
    assert int(count) == 1 and mask.numpy().tolist() == [0, 1]   # never empty


def _grads_of(network, x, y, mask):
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(mask * cross_entropy(y, network(x, training=True))) / mask.sum()
    return tape.gradient(loss, network.trainable_variables)


def test_each_network_updates_on_the_small_loss_examples_of_its_peer():
    model = tiny.gdw_model("coteaching", lr=LR, weight_decay=0.0, forget_rate=0.5,
                           num_gradual=10, steps_per_epoch=1)
    model.optimizer.iterations.assign(5)                # epoch 5: keep 1 - 0.5 * 0.5
    (batch, _), = tiny.batches(1, n=8, seed=2)
    x, y = batch["image"], batch["label"]
    backbone, peer = model.backbone, model.method.peer
    peer_before = [v.numpy().copy() for v in peer.trainable_variables]
    own_losses = cross_entropy(y, backbone(x)).numpy()
    peer_losses = cross_entropy(y, peer(x)).numpy()
    chosen_by_peer = np.isin(np.arange(8), np.argsort(peer_losses)[:6]).astype("float64")
    chosen_by_backbone = np.isin(np.arange(8), np.argsort(own_losses)[:6]).astype("float64")
    assert not np.array_equal(chosen_by_peer, chosen_by_backbone)   # not vacuous

    # Expected peer step: one SGD step (empty momentum buffer) on the backbone's choice.
    lr = float(np.float32(LR))                       # optimizers hold the rate in float32
    peer_expected = [v - lr * g.numpy() for v, g in
                     zip(peer_before, _grads_of(peer, x, y, chosen_by_backbone))]

    out = model.method.train_gradients(model, {k: tf.constant(v) for k, v in batch.items()},
                                       None)
    np.testing.assert_array_equal(out.weights.numpy()[:, 0], chosen_by_peer)
    for got, want in zip(out.grads, _grads_of(backbone, x, y, chosen_by_peer)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10)
    for got, want in zip(peer.trainable_variables, peer_expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)


def test_fit_keeps_the_scheduled_fraction_each_epoch():
    train, _, _ = tiny.indexed_data(n=12, batch=6)
    model = tiny.gdw_model("coteaching", dtype="float32", forget_rate=0.5,
                           num_gradual=2, steps_per_epoch=2)
    history = model.fit(train, epochs=3, verbose=0).history
    # epochs 0, 1, 2 keep 1, 0.75, 0.5 of each 6-example batch: 6, 4 and 3 examples.
    np.testing.assert_allclose(history["target_weight"], [1.0, 4 / 6, 0.5], rtol=1e-6)
