"""glc: Gold Loss Correction (Hendrycks et al., 2018) with the meta set as trusted data.

Before training (`prepare`), a fresh copy of the backbone is trained on the
noisy training set; its softmax on the trusted set gives the corruption
estimate C_hat[i, j] = mean over trusted examples of true class i of
p(noisy label j | x). Training then uses the corrected loss
-log((softmax(l) @ C_hat)[noisy label]) on noisy batches and plain
cross-entropy on trusted (meta) batches.
"""
import numpy as np
import tensorflow as tf

from gdw_tf.distributed import global_batch_size
from gdw_tf.losses import cross_entropy
from gdw_tf.methods.auxiliary import fresh_copy, optimizer_like, plain_trainer
from gdw_tf.methods.method import Method, StepOutputs, loss_gradients, register_method


def corrected_cross_entropy(labels, logits, corruption):
    """-log((softmax(l) @ C)[y]) per example: [n] noisy labels, [n, C], [C, C] -> [n].

    Computed as -logsumexp_k(log p_k + log C[k, y]) so that zero entries of C
    (log 0 = -inf) are exact: with C = I this is the plain cross-entropy,
    gradients included.
    """
    log_probs = tf.nn.log_softmax(logits)
    columns = tf.gather(tf.transpose(tf.cast(corruption, logits.dtype)),
                        tf.cast(labels, tf.int32))          # [n, C]: C[k, y_i]
    return -tf.reduce_logsumexp(log_probs + tf.math.log(columns), axis=-1)


def estimate_corruption(probs, true_labels, num_classes):
    """GLC's estimate: row i = mean predicted (noisy-label) distribution on class i.

    probs: float [m, C], softmax of a model trained on the noisy labels, on
    trusted examples; true_labels: int [m] (their clean labels). Classes
    without trusted examples keep the identity row. Returns float64 [C, C].
    """
    probs = np.asarray(probs, dtype=np.float64)
    true_labels = np.asarray(true_labels, dtype=np.int64)
    estimate = np.eye(num_classes)
    for c in range(num_classes):
        rows = probs[true_labels == c]
        if len(rows):
            estimate[c] = rows.mean(axis=0)
    return estimate


def _images_and_labels(element):
    if isinstance(element, dict):
        return element["image"], element["label"]
    return element[0], element[1]


@register_method("glc")
class GLC(Method):
    """Gold Loss Correction; trusted data = the meta set (needs `with_meta`).

    Options:
      estimation_epochs: epochs of the noisy-label model trained in `prepare`
        (GLC trains it like the main model; the trainer passes the run's
        epochs). It is a fresh copy of the backbone trained with a copy of
        the model's compiled optimizer (a per-epoch cosine schedule spread
        over estimation_epochs) and the model's weight decay; so `prepare`
        needs a compiled model.
      trusted_fraction: weight a of the trusted loss; the step minimises
        (1 - a) * mean corrected loss + a * mean trusted CE. GLC trains on the
        union of both sets, so the trainer passes a = num_meta / (num_train +
        num_meta); None (default) weights each example of the concatenated
        batch equally.
    The corruption estimate is kept in the non-trainable variable
    `corruption` [C, C] (identity until `prepare` runs, i.e. plain CE).
    """
    needs_meta = True
    metric_names = ()

    def __init__(self, estimation_epochs=None, trusted_fraction=None, **kwargs):
        super().__init__(**kwargs)
        self.estimation_epochs = None if estimation_epochs is None else int(estimation_epochs)
        self.trusted_fraction = None if trusted_fraction is None else float(trusted_fraction)
        if self.trusted_fraction is not None and not 0.0 <= self.trusted_fraction <= 1.0:
            raise ValueError(f"glc: trusted_fraction must be in [0, 1], got {trusted_fraction!r}")
        if self.estimation_epochs is not None and self.estimation_epochs < 1:
            raise ValueError(f"glc: estimation_epochs must be >= 1, got {estimation_epochs!r}")
        self.estimate_report = None

    @classmethod
    def options_from_data(cls, bundle, epochs=None, noise_rate=0.0):
        options = {"trusted_fraction": bundle.num_meta / (bundle.num_train + bundle.num_meta)}
        if epochs:
            options["estimation_epochs"] = int(epochs)
        return options

    def setup(self, model):
        self.corruption = self.add_weight(
            name="corruption", shape=(model.num_classes, model.num_classes),
            initializer="identity", dtype="float32", trainable=False, autocast=False)

    def get_config(self):
        return {**super().get_config(), "estimation_epochs": self.estimation_epochs,
                "trusted_fraction": self.trusted_fraction}

    def prepare(self, model, bundle, verbose=0):
        """Trains the noisy-label model and stores C_hat in `corruption`."""
        if bundle.meta_once is None:
            raise ValueError("glc needs a trusted set (a meta set): num_meta must be > 0")
        epochs = self.estimation_epochs
        if epochs is None:
            raise ValueError("glc: set the option estimation_epochs (the trainer passes the "
                             "run's epochs)")
        estimator = plain_trainer(model, fresh_copy(model.backbone, "glc"),
                                  lambda: optimizer_like(model.optimizer, epochs),
                                  name="glc_estimator")
        estimator.fit(bundle.train, epochs=epochs, verbose=verbose,
                      shuffle=False)  # tf.data shuffles (Keras would warn)
        probs, labels = [], []
        for element in bundle.meta_once:
            images, true = _images_and_labels(element)
            logits = estimator.backbone(images, training=False)
            probs.append(tf.nn.softmax(tf.cast(logits, tf.float64)).numpy())
            labels.append(np.asarray(true))
        estimate = estimate_corruption(np.concatenate(probs), np.concatenate(labels),
                                       model.num_classes)
        self.corruption.assign(estimate.astype(np.float32))
        self.estimate_report = {"estimation_epochs": int(epochs),
                                "corruption_estimate": estimate.round(6).tolist()}
        return self.estimate_report

    def finish(self, model, bundle, verbose=0):
        return None if self.estimate_report is None else {"glc": self.estimate_report}

    def train_gradients(self, model, batch, meta):
        labels, (meta_x, meta_y) = batch["label"], meta
        n = tf.shape(labels)[0]
        images = tf.concat([batch["image"], tf.cast(meta_x, batch["image"].dtype)], axis=0)
        outputs = {}

        def total_loss(logits):
            dtype = logits.dtype
            noisy = tf.reduce_sum(corrected_cross_entropy(labels, logits[:n], self.corruption))
            trusted = tf.reduce_sum(cross_entropy(meta_y, logits[n:]))
            n_global = global_batch_size(labels, dtype)
            m_global = global_batch_size(meta_y, dtype)
            outputs["meta_loss"] = trusted / m_global
            if self.trusted_fraction is None:
                return (noisy + trusted) / (n_global + m_global)
            a = self.trusted_fraction
            return (1.0 - a) * noisy / n_global + a * trusted / m_global

        grads, logits = loss_gradients(model, images, total_loss)
        logits = logits[:n]
        return StepOutputs(grads, logits, tf.ones_like(logits[:, :1]),
                           tf.stop_gradient(outputs["meta_loss"]))
