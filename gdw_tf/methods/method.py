"""What every training method provides to `GDWModel.train_step`.

A method turns one training batch (and, for meta methods, one meta batch) into
gradients for the backbone's trainable variables. Gradients are of losses
summed over the local examples and divided by the GLOBAL batch size, so that
the optimizer's cross-replica sum gives the full-batch gradient.

Here: the `Method` base class and its `StepOutputs`, the step helpers methods
share (`loss_gradients`, its special case `weighted_gradients`, `finite_guarded`),
and the registry (`register_method`, `create_method`, `available_methods`). A method's
options are its constructor's keyword parameters (`Method.option_names`).
"""
import inspect
from typing import NamedTuple, Optional

import keras
import tensorflow as tf

from gdw_tf import diagnostics
from gdw_tf.distributed import global_batch_size
from gdw_tf.losses import class_weighted_cross_entropy
from gdw_tf.registry import Registry


class StepOutputs(NamedTuple):
    """Result of `Method.train_gradients`.

    grads: list aligned with `model.backbone.trainable_variables`.
    logits: float [n, C], the training-mode logits of the batch.
    weights: float [n, C] or [n, 1], the weights used for the real update.
    meta_loss: float scalar (local meta loss sum / global meta batch) or None.
    diagnostics: {name: (values, sample_weight)} extra metrics.
    check: (meta [m], train [n]) target weights of the truth-free check of the weights
      (`BilevelMethod.check_weights`), or None.
    """
    grads: list
    logits: tf.Tensor
    weights: tf.Tensor
    meta_loss: Optional[tf.Tensor] = None
    diagnostics: dict = {}
    check: Optional[tuple] = None


def guarded(tensors, condition, message, *data):
    """`tensors`, made to wait until `condition` holds (else the step fails).

    A bare `tf.debugging.Assert` is not ordered before unrelated variable
    updates in a `tf.function`; routing the values an update consumes through
    this guard makes the update impossible without the check passing first.
    """
    assertion = tf.debugging.Assert(condition, [message, *data])
    with tf.control_dependencies([assertion]):
        return tf.nest.map_structure(tf.identity, tensors)


def finite_guarded(tensors, value, what):
    """`tensors`, released only if `value` is finite (no update otherwise)."""
    return guarded(tensors, tf.reduce_all(tf.math.is_finite(value)),
                   f"gdw_tf: non-finite {what}; no weights were updated by this "
                   "step. Lower the learning rate or check the input data.", value)


class Method(keras.layers.Layer):
    """Base class of training methods. State (networks, tables) lives here.

    It is a Keras layer only so that its variables are tracked, saved and
    checkpointed with the model; it is never called on inputs.
    Subclasses set `needs_meta` and implement `train_gradients`.
    """
    needs_meta = False
    #: names of the `StepOutputs.diagnostics` entries this method may report
    metric_names = (diagnostics.TARGET_WEIGHT, diagnostics.TARGET_WEIGHT_CLEAN,
                    diagnostics.TARGET_WEIGHT_NOISY)

    def __init__(self, **kwargs):
        kwargs.setdefault("name", type(self).__name__.lower())
        super().__init__(**kwargs)

    @classmethod
    def option_names(cls):
        """The options the constructor accepts (its keyword parameters and its
        Method base classes'), sorted; Keras' layer arguments are not options."""
        names = set()
        for klass in cls.__mro__:
            if issubclass(klass, Method) and "__init__" in vars(klass):
                parameters = inspect.signature(klass.__init__).parameters.items()
                names.update(name for name, p in parameters
                             if name != "self"
                             and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        return sorted(names)

    @classmethod
    def options_from_data(cls, bundle, epochs=None, noise_rate=0.0):
        """Constructor options derived from the data and the run (none by default).

        Called by the trainer before the model is built. `bundle` is a
        `gdw_tf.data.DataBundle` (num_train, num_classes, train_labels, ...);
        `epochs` the run's epochs; `noise_rate` the synthetic label-noise rate
        (0 for clean data or real noise). Options set explicitly override these.
        """
        return {}

    def options(self):
        """The options this method was built with, {name: value} (JSON-serialisable)."""
        names = set(self.option_names())
        return {k: v for k, v in self.get_config().items() if k in names}

    def setup(self, model):
        """Creates state that depends on the model (called once, in scope)."""

    def prepare(self, model, bundle, verbose=0):
        """Runs before the main `fit` (e.g. GLC's corruption estimate); `verbose` as Keras'."""

    def finish(self, model, bundle, verbose=0):
        """Runs after the main `fit` (e.g. fine-tuning on the meta set).

        Returns None or a dict of extra results for results.json; its
        `final_accuracy` / `best_accuracy` / `last_accuracy` entries (in %), if any, replace the
        ones computed from the fit history (e.g. after fine-tuning).
        """

    def train_gradients(self, model, batch, meta):
        """Returns `StepOutputs` for `batch` (dict with image, label, ...)."""
        raise NotImplementedError

    def call(self, inputs):
        raise TypeError(f"{type(self).__name__} is a training method, not a layer to call")

    def weight_stats(self, weights, batch):
        return diagnostics.target_weight_stats(
            weights, batch["label"], batch.get("true_label"))


def parameter_dtype(backbone):
    """The dtype of the backbone's weights (float32 under mixed precision)."""
    return backbone.trainable_variables[0].dtype


def backbone_forward(model, x):
    """Training-mode logits of the backbone, in the weights' dtype."""
    logits = model.backbone(x, training=True)
    return tf.cast(logits, parameter_dtype(model.backbone))


def loss_gradients(model, images, total_loss):
    """Gradients of `total_loss(logits)` w.r.t. the backbone's trainable variables.

    `images` are forwarded in training mode; `total_loss` maps the logits
    [N, C] to a scalar that is already a local sum divided by the GLOBAL batch
    (module doc). Returns (grads, logits); the gradients are
    released only if the loss is finite.
    """
    theta = model.backbone.trainable_variables
    with tf.GradientTape() as tape:
        logits = backbone_forward(model, images)
        loss = total_loss(logits)
    return finite_guarded(tape.gradient(loss, theta), loss, "training loss"), logits


def weighted_gradients(model, batch, weights):
    """`loss_gradients` of the class-weighted cross-entropy of `batch` with `weights` of
    shape [n, C], [n, 1] or scalar; returns (grads, logits)."""
    def total_loss(logits):
        n_global = global_batch_size(batch["label"], logits.dtype)
        losses = class_weighted_cross_entropy(batch["label"], logits, weights)
        return tf.reduce_sum(losses) / n_global
    return loss_gradients(model, batch["image"], total_loss)


# The registry of methods (`--method=NAME`).
METHODS = Registry("method")


def register_method(name):
    """Class decorator: registers a `Method` subclass as `--method=name`."""
    def decorator(cls):
        cls.method_name = name
        return METHODS.register(name)(cls)
    return decorator


def available_methods():
    return METHODS.names()


def create_method(method, **options):
    """Returns a `Method` from a registered name (or passes an instance through).

    An option the method does not take is a ValueError that lists the ones it does
    (`check_options`).
    """
    if isinstance(method, str):
        check_options(method, options)
        return METHODS.get(method)(**options)
    if options:
        raise ValueError(
            f"method options {sorted(options)} given with a method instance")
    return method


def check_options(method, names, given_as=None):
    """Raises a ValueError unless the registered `method` exists and takes every option in
    `names`: "[how it was given: ]method 'gdw' has no option x; its options: a, b".
    given_as: option name -> how the user gave it (a flag, say), prefixed to the message.
    The one check of option names, for the Python API (`create_method`) and the trainer's
    flags (`gdw_tf.config`)."""
    cls = METHODS.get(method)
    accepted = set(cls.option_names())
    for name in names:
        if name not in accepted:
            where = f"{given_as[name]}: " if given_as and name in given_as else ""
            raise ValueError(f"{where}method '{method}' has no option {name}; {_options_text(cls)}")


def _options_text(cls):
    """'its options: a, b' (or 'it takes no options') for error messages."""
    names = cls.option_names()
    return f"its options: {', '.join(names)}" if names else "it takes no options"


def data_options(method, bundle, epochs=None, noise_rate=0.0):
    """The constructor options the trainer gives method `method` (a name) for the data of
    `bundle` (a DataBundle), under the explicit ones: the paper's per-dataset values the
    method takes (`gdw_tf.defaults`, e.g. outer_lr=1000 for CIFAR-100), then those the
    method derives from the data, the run's `epochs` and the synthetic `noise_rate`
    (`Method.options_from_data`). From Python:
    `GDWModel(backbone, C, method="gdw", **data_options("gdw", bundle))`."""
    from gdw_tf.defaults import for_dataset

    cls = METHODS.get(method)
    accepted = cls.option_names()
    return {**{k: v for k, v in for_dataset(bundle.name).method_options.items() if k in accepted},
            **cls.options_from_data(bundle, epochs=epochs, noise_rate=noise_rate)}
