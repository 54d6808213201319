"""`GDWModel`: a Keras model whose `train_step` runs a (meta-)weighting method."""
import warnings

import keras
import tensorflow as tf

from gdw_tf import diagnostics, keras_internals
from gdw_tf.data.pipeline import split_batch
from gdw_tf.distributed import add_weight_decay, num_replicas
from gdw_tf.example_record import DEFAULT_DECAY, ExampleRecord
from gdw_tf.losses import cross_entropy
from gdw_tf.methods import create_method
from gdw_tf.methods.method import finite_guarded, guarded
from gdw_tf.metrics import Histogram, WeightSeparation


def _checked_labels(labels, num_classes, what):
    """int32 labels that no op can consume unless all are in [0, num_classes) (float
    labels must hold whole numbers: class indices, never truncated)."""
    if labels.dtype.is_floating:
        labels = guarded(labels, tf.reduce_all(tf.equal(labels, tf.round(labels))),
                         f"gdw_tf: {what} is not a whole number (labels are class indices); "
                         "one of them:", labels[tf.argmax(tf.cast(
                             tf.not_equal(labels, tf.round(labels)), tf.int32))])
    labels = tf.cast(labels, tf.int32)
    return guarded(labels, tf.reduce_all((labels >= 0) & (labels < num_classes)),
                   f"gdw_tf: {what} outside [0, num_classes={num_classes}); min and max:",
                   tf.reduce_min(labels), tf.reduce_max(labels))


@keras.saving.register_keras_serializable(package="gdw_tf")
class GDWModel(keras_internals.PrebuiltModel):
    """Wraps a logits classifier and trains it with GDW, MWNet or another method.

    `call` returns the backbone's logits, so `predict`, `evaluate`, `save` and
    callbacks behave as for any Keras model. `fit` takes the output of
    `gdw_tf.data.with_meta(train_ds, meta_ds)` for meta methods (plain batches
    of (image, label) are enough for `method="base"`).

    Args:
      backbone: a Keras model mapping images to logits [n, num_classes].
      num_classes: C.
      method: a registered method name (`gdw_tf.methods.available_methods()`)
        or a `gdw_tf.methods.Method` instance. Default "gdw".
      weight_decay: L2 coefficient added to the backbone gradient before the
        optimizer (coupled, as classic SGD weight decay). Reference: 5e-4.
      **method_options: the method's constructor options (one it does not take is
        a ValueError listing them; `model.method.options()` gives the values
        in use). For gdw/mwnet (reference values):
        hidden_units=100 (weighting network 1-100-1), meta_learning_rate=1e-3
        and meta_weight_decay=1e-4 (its Adam), and for gdw outer_lr=100
        and clip=0.2; `gdw_tf.methods.data_options(method, bundle)` gives the
        paper's per-dataset values (outer_lr=1000 on CIFAR-100) and the options
        derived from the data, as the trainer passes them. Every bi-level method also takes
        meta_interval=k (default 1, exact): the bi-level step runs every k-th
        step only, the others cost a plain step (`gdw_tf.methods.bilevel`).
      record_examples: N > 0 keeps `example_record`, a per-example record of
        the N training examples (averaged target weight and class
        probabilities, `gdw_tf.label_issues`), updated by every training step;
        batches then need `index`. None (default): no record.
      record_decay: the record's averaging decay per visit (default 0.98).
      warmup_steps: for a bi-level method, steps with optimizer.iterations below it
        train with every weight 1 and need no meta batch (the warm-up of
        --meta_source=auto, which chooses the meta set after it). Default 0.

    Compile with the classifier's optimizer, e.g.
    `keras.optimizers.SGD(0.1, momentum=0.9)`; its current learning rate is
    also the virtual step's. No `loss` is compiled: the method defines it.
    """

    def __init__(self, backbone, num_classes, method="gdw", weight_decay=5e-4,
                 name=None, record_examples=None, record_decay=DEFAULT_DECAY, warmup_steps=0,
                 **method_options):
        super().__init__(name=name)
        self.warmup_steps = int(warmup_steps)
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        elif not backbone.built:
            raise ValueError(
                f"backbone '{backbone.name}' is not built, so it has no weights yet: give it an "
                "input (keras.Input(shape=...) as its first layer) or call "
                "backbone.build((None, *input_shape)) before GDWModel")
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.weight_decay = float(weight_decay)
        self._check_output_width(getattr(backbone, "outputs", None))
        self.method = create_method(method, **method_options)
        self.method.setup(self)
        if self.warmup_steps and not hasattr(self.method, "train_gradients_without_meta"):
            raise ValueError(f"warmup_steps={warmup_steps}: method "
                             f"'{self.method.method_name}' has no warm-up step "
                             "(bi-level methods do)")
        self.example_record = None
        if record_examples is not None:
            self.example_record = ExampleRecord(record_examples, self.num_classes, record_decay)
        if backbone.built:
            self.built = True
        self.meta_loss_tracker = keras.metrics.Mean(name="meta_loss")
        self.diagnostic_trackers = {
            name: keras.metrics.Mean(name=name) for name in self.method.metric_names}
        # The truth-free checks of the weights (methods that define them), per epoch of
        # meta steps: the ROC-AUC with which the first-stage weights rank the clean meta
        # examples above the training examples (WEIGHT_CHECK_META), and with which the
        # real step's target weights rank the training examples whose given label the
        # model predicts above those whose label it does not (WEIGHT_CHECK_FIT).
        self.weight_checks = (
            {name: WeightSeparation(name=name)
             for name in (diagnostics.WEIGHT_CHECK_META, diagnostics.WEIGHT_CHECK_FIT)}
            if getattr(self.method, "checks_weights", False) else {})
        # Per-epoch distribution of target weights, clean vs noisy (Figure 3);
        # read by callbacks, not logged (Keras resets it every epoch).
        self.weight_histograms = {
            "clean": Histogram(name="target_weight_histogram_clean"),
            "noisy": Histogram(name="target_weight_histogram_noisy")}

    # ----------------------------------------------------------------- keras API
    def build(self, input_shape):
        if isinstance(input_shape, dict):
            input_shape = input_shape["image"]
        if not self.backbone.built:
            self.backbone.build(input_shape)
        self.built = True

    def call(self, inputs, training=False):
        if isinstance(inputs, dict):
            inputs = inputs["image"]
        logits = self.backbone(inputs, training=training)
        self._check_output_width([logits])
        return logits

    def compile(self, optimizer="sgd", metrics=None, **kwargs):
        if kwargs.get("loss") is not None:
            raise ValueError(
                "GDWModel.compile: do not pass `loss`; the training method "
                "defines it (softmax cross-entropy with learned weights)")
        if kwargs.get("jit_compile") is True:
            warnings.warn(
                "GDWModel: XLA (jit_compile=True) compiles away the step's runtime checks "
                "(labels in range, finite losses and gradients): bad input will then "
                "corrupt the weights instead of raising. Validate the data first.",
                stacklevel=2)
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)
        # Create all state now, outside replica contexts: the optimizer only
        # for the backbone (not the method's meta-parameters) and the metrics
        # (then `fit` skips Keras' symbolic build: PrebuiltModel).
        with self.distribute_strategy.scope():
            if self.backbone.built:
                self.optimizer.build(self.backbone.trainable_variables)
            keras_internals.build_compiled_metrics(
                self, keras.KerasTensor((None,), "int32"),
                keras.KerasTensor((None, self.num_classes), "float32"))

    def compile_from_config(self, config):
        # Keras skips models that override `compile`; this one only adds checks.
        self.compile(**keras.saving.deserialize_keras_object(config))

    def make_train_function(self, force=False):
        """Keras' train function; with meta_interval=k > 1 or warmup_steps it picks one of three.

        Step s (s = optimizer.iterations) runs `train_step_warmup` while
        s < warmup_steps, then `train_step` (the bi-level step) when s % k == 0
        and `train_step_without_meta` otherwise. Each is traced once (when first
        used). The choice is made in Python per step (one scalar read of the
        counter), not with an in-graph `tf.cond`: under MirroredStrategy the
        all-reduces and optimizer updates of a step are `merge_call`s, which
        TensorFlow refuses inside control flow in the replica function.
        """
        interval = getattr(self.method, "meta_interval", 1)
        if (interval == 1 and not self.warmup_steps) or (
                self.train_function is not None and not force):
            return super().make_train_function(force)
        if self.steps_per_execution != 1:
            raise ValueError(
                f"GDWModel: meta_interval={interval} or warmup_steps picks the kind of step "
                f"per step and needs steps_per_execution=1 in compile, got "
                f"{self.steps_per_execution}")
        super().make_train_function(force=True)
        meta_steps = self.train_function
        other_steps = keras_internals.step_function(self, self.train_step_without_meta)
        warmup_steps = keras_internals.step_function(self, self.train_step_warmup)

        def train_function(iterator):
            step = int(self.optimizer.iterations.numpy())
            if step < self.warmup_steps:
                return warmup_steps(iterator)
            if step % interval == 0:
                return meta_steps(iterator)
            return other_steps(iterator)

        self.train_function = train_function
        return train_function

    def train_step(self, data):
        return self._train_step(data, "meta")

    def train_step_without_meta(self, data):
        """A step between meta steps under meta_interval > 1 (same log keys)."""
        return self._train_step(data, "without_meta")

    def train_step_warmup(self, data):
        """A warm-up step (warmup_steps): every weight 1, no meta batch needed (same log keys)."""
        return self._train_step(data, "warmup")

    def _train_step(self, data, kind):
        """One step of `kind`: "meta" (the method's full step), "without_meta" (its step
        between meta steps) or "warmup" (every weight 1); returns the step's logs."""
        batch, meta = self._split_checked(data, self.method.needs_meta and kind != "warmup")
        if kind == "meta":  # forward and gradients: the method's
            out = self.method.train_gradients(self, batch, meta)
        else:
            out = self.method.train_gradients_without_meta(self, batch, plain=kind == "warmup")
        self._apply_backbone_gradients(out.grads)  # update: the backbone's optimizer
        return self._update_train_metrics(batch, out, meta_step=kind == "meta")

    def test_step(self, data):
        batch, _ = split_batch(data, needs_meta=False)
        logits = tf.cast(self(batch["image"], training=False), "float32")
        keras_internals.loss_tracker(self).update_state(cross_entropy(batch["label"], logits))
        return self._logs(batch["image"], batch["label"], logits)

    def get_config(self):
        return {"backbone": keras.saving.serialize_keras_object(self.backbone),
                "num_classes": self.num_classes,
                "method": self.method.method_name,
                "weight_decay": self.weight_decay,
                "name": self.name, "warmup_steps": self.warmup_steps,
                **self.method.options(), **self._record_config()}

    # --------------------------------------------------------------- internals
    def _record_config(self):
        if self.example_record is None:
            return {}
        return {"record_examples": self.example_record.num_train,
                "record_decay": self.example_record.decay}

    def _check_output_width(self, outputs):
        if not outputs:
            return
        width = outputs[0].shape[-1]
        if width is not None and width != self.num_classes:
            raise ValueError(
                f"backbone '{self.backbone.name}' outputs {width} logits per "
                f"example but num_classes={self.num_classes}")

    def _split_checked(self, data, needs_meta):
        """`split_batch(data, needs_meta)` with every label checked to be in range."""
        batch, meta = split_batch(data, needs_meta)
        batch["label"] = _checked_labels(batch["label"], self.num_classes, "training label")
        if meta is not None:
            meta = (meta[0], _checked_labels(meta[1], self.num_classes, "meta label"))
        return batch, meta

    def _update_train_metrics(self, batch, out, meta_step):
        """Updates every metric of a training step from `batch` and the method's
        `StepOutputs` `out` (loss, meta loss, diagnostics, the weight check, the example
        record, the clean/noisy weight histograms); returns the step's logs."""
        labels = batch["label"]
        keras_internals.loss_tracker(self).update_state(cross_entropy(labels, out.logits))
        if out.meta_loss is not None:
            self.meta_loss_tracker.update_state(out.meta_loss * num_replicas())
        for name, (values, weights) in out.diagnostics.items():
            self.diagnostic_trackers[name].update_state(values, sample_weight=weights)
        omega_t = diagnostics.target_weights(out.weights, labels)
        if out.check is not None:
            meta_weights, train_weights = out.check
            checks = self.weight_checks
            checks[diagnostics.WEIGHT_CHECK_META].update_state(meta_weights, train_weights)
            fitted = tf.equal(tf.argmax(out.logits, axis=1, output_type=tf.int32), labels)
            checks[diagnostics.WEIGHT_CHECK_FIT].update_state(
                tf.boolean_mask(omega_t, fitted), tf.boolean_mask(omega_t, ~fitted))
        if self.example_record is not None:
            self.example_record.update(batch, omega_t, tf.nn.softmax(out.logits))
        if "true_label" in batch:
            clean, noisy = diagnostics.clean_and_noisy(labels, batch["true_label"])
            self.weight_histograms["clean"].update_state(omega_t, clean)
            self.weight_histograms["noisy"].update_state(omega_t, noisy)
        with_meta_loss = out.meta_loss is not None or not meta_step
        logged = [*(["meta_loss"] if with_meta_loss else []), *out.diagnostics, *self.weight_checks]
        return self._logs(batch["image"], labels, out.logits, logged)

    def _apply_backbone_gradients(self, grads):
        theta = self.backbone.trainable_variables
        grads = add_weight_decay(grads, theta, self.weight_decay)
        grads = finite_guarded(grads, tf.linalg.global_norm(grads), "gradient")
        self.optimizer.apply_gradients(zip(grads, theta))

    def _logs(self, x, labels, logits, logged=()):
        """Updates the compiled metrics (accuracy, ...) and returns the step's logs: the
        results of Keras' metrics (loss, compiled ones) and of this model's own metrics
        named in `logged` (those the step updates; none that stay empty)."""
        results = self.compute_metrics(x, labels, logits)
        own = [self.meta_loss_tracker, *self.diagnostic_trackers.values(),
               *self.weight_checks.values(), *self.weight_histograms.values()]
        unlogged = {metric.name for metric in own} - set(logged)
        return self._for_keras_reduction(
            {name: value for name, value in results.items() if name not in unlogged})

    def _for_keras_reduction(self, logs):
        """Under MultiWorkerMirroredStrategy Keras reduces logs with
        `strategy.reduce("MEAN", v, axis=0)`, which needs a leading axis; the
        values (metric results) are already global, so the mean is exact."""
        if isinstance(self.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return {k: tf.reshape(v, [1]) for k, v in logs.items()}
        return logs
