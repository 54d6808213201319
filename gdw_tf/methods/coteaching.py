"""coteaching: two networks teach each other with their small-loss examples."""
import keras
import tensorflow as tf

from gdw_tf.distributed import add_weight_decay, replica_sum
from gdw_tf.losses import cross_entropy
from gdw_tf.methods.auxiliary import fresh_copy
from gdw_tf.methods.method import (
    Method,
    StepOutputs,
    backbone_forward,
    finite_guarded,
    register_method,
)


def kept_fraction(epoch, forget_rate, num_gradual):
    """R(e) = 1 - forget_rate * min(e / num_gradual, 1) for 0-based epoch e (scalar)."""
    epoch = tf.cast(epoch, tf.float32)
    return 1.0 - forget_rate * tf.minimum(epoch / float(num_gradual), 1.0)


def small_loss_mask(losses, keep):
    """1.0 on the floor(keep * n) smallest losses of [n] (at least one), else 0.

    Ties go to the lower position. Returns (mask [n] float, count int32).
    """
    n = tf.shape(losses)[0]
    count = tf.cast(tf.floor(keep * tf.cast(n, tf.float32) + 1e-4), tf.int32)
    count = tf.clip_by_value(count, tf.minimum(1, n), n)
    _, chosen = tf.math.top_k(-losses, k=count)
    mask = tf.scatter_nd(chosen[:, None], tf.ones([count], losses.dtype), [n])
    return mask, count


@register_method("coteaching")
class CoTeaching(Method):
    """Co-teaching (Han et al., 2018) without a meta set.

    A second network `peer` (the backbone's architecture, fresh weights,
    created in `setup`) trains alongside the backbone. Each step both
    networks rank the batch by their own cross-entropy; the backbone is
    updated on the R(e) fraction with the smallest loss under the PEER, and
    the peer on those with the smallest loss under the backbone, each with
    the mean loss over the kept examples. R(e) = 1 - forget_rate *
    min(e / num_gradual, 1), e the 0-based epoch counted from the backbone
    optimizer's iterations and `steps_per_epoch`.
    The peer uses its own SGD (momentum `peer_momentum`) at the backbone
    optimizer's current learning rate, plus the model's weight decay.
    Options (paper defaults): forget_rate = the noise rate (the trainer
    passes the synthetic noise rate, 0 for clean data or real noise: give
    it explicitly for real noise such as Clothing1M's), num_gradual=10,
    steps_per_epoch (from the data), peer_momentum=0.9 (as the main SGD).
    Evaluation uses the backbone.
    The reported weights are the backbone's 0/1 selection (so target_weight
    is the kept fraction and target_weight_clean/noisy the kept rates).
    """

    def __init__(self, forget_rate=None, num_gradual=10, steps_per_epoch=None,
                 peer_momentum=0.9, **kwargs):
        super().__init__(**kwargs)
        if forget_rate is None:
            raise ValueError(
                "coteaching needs the option forget_rate (the paper uses the noise "
                "rate; the trainer passes the synthetic noise rate)")
        if steps_per_epoch is None:
            raise ValueError(
                "coteaching needs the option steps_per_epoch (batches per epoch, "
                "for its forget-rate schedule; the trainer derives it from the data)")
        self.forget_rate = float(forget_rate)
        self.num_gradual = int(num_gradual)
        self.steps_per_epoch = int(steps_per_epoch)
        self.peer_momentum = float(peer_momentum)
        if not 0.0 <= self.forget_rate < 1.0:
            raise ValueError(f"coteaching: forget_rate must be in [0, 1), got {forget_rate!r}")
        if self.num_gradual < 1 or self.steps_per_epoch < 1:
            raise ValueError(
                f"coteaching: num_gradual and steps_per_epoch must be >= 1, got "
                f"{num_gradual!r} and {steps_per_epoch!r}")

    @classmethod
    def options_from_data(cls, bundle, epochs=None, noise_rate=0.0):
        return {"forget_rate": float(noise_rate), "steps_per_epoch": int(bundle.steps_per_epoch)}

    def setup(self, model):
        self.peer = fresh_copy(model.backbone, "coteaching")
        # The backbone optimizer only exists after compile: read its rate lazily.
        self.peer_optimizer = keras.optimizers.SGD(
            learning_rate=lambda: model.optimizer.learning_rate,
            momentum=self.peer_momentum, name="peer_optimizer")
        self.peer_optimizer.build(self.peer.trainable_variables)

    def get_config(self):
        return {**super().get_config(), "forget_rate": self.forget_rate,
                "num_gradual": self.num_gradual, "steps_per_epoch": self.steps_per_epoch,
                "peer_momentum": self.peer_momentum}

    def keep_rate(self, model):
        epoch = tf.math.floordiv(tf.cast(model.optimizer.iterations, tf.int64),
                                 self.steps_per_epoch)
        return kept_fraction(epoch, self.forget_rate, self.num_gradual)

    def train_gradients(self, model, batch, meta):
        theta = model.backbone.trainable_variables
        peer_theta = self.peer.trainable_variables
        labels = batch["label"]
        keep = self.keep_rate(model)
        with tf.GradientTape() as tape:
            logits = backbone_forward(model, batch["image"])
            peer_logits = tf.cast(self.peer(batch["image"], training=True), logits.dtype)
            losses = cross_entropy(labels, logits)
            peer_losses = cross_entropy(labels, peer_logits)
            # Each network learns from the examples its peer finds easy.
            mask, count = small_loss_mask(tf.stop_gradient(peer_losses), keep)
            peer_mask, _ = small_loss_mask(tf.stop_gradient(losses), keep)
            kept_global = replica_sum(tf.cast(count, logits.dtype))
            loss = tf.reduce_sum(mask * losses) / kept_global
            peer_loss = tf.reduce_sum(peer_mask * peer_losses) / kept_global
            total = loss + peer_loss  # the two networks share no variables
        grads = tape.gradient(total, theta + peer_theta)
        grads = finite_guarded(grads, tf.stack([loss, peer_loss]), "training loss")
        peer_grads = add_weight_decay(grads[len(theta):], peer_theta, model.weight_decay)
        self.peer_optimizer.apply_gradients(zip(peer_grads, peer_theta))
        weights = mask[:, None]
        return StepOutputs(grads[:len(theta)], logits, weights,
                           diagnostics=self.weight_stats(weights, batch))
