"""The private Keras members gdw_tf relies on, all of them (Keras 3.15, TensorFlow backend).

Everything else uses Keras' public hooks (`compute_metrics`, `get_metrics_result`,
`make_train_function`, `metrics`, ...). Each member here has no public hook that does
the same; tests/test_keras_internals.py fails if a Keras release renames, removes or
changes one of them.
"""
import contextlib

import keras


def loss_tracker(model):
    """The `Mean` named "loss" that `compile` creates, logged by `fit` and `evaluate`.

    Keras' own train and test steps update it (`Trainer._loss_tracker`); the public
    `compute_loss` only computes a loss. A step of one's own must update it, or "loss"
    logs 0; a tracker of one's own would log a second "loss" beside it.
    """
    return model._loss_tracker


def compiled_metrics_built(model):
    """Whether the metrics given to `compile` (`Trainer._compile_metrics`) have their
    variables; True when none were given."""
    metrics = model._compile_metrics
    return metrics is None or metrics.built


def build_compiled_metrics(model, y_true, y_pred):
    """Creates the variables of the metrics given to `compile`, for labels and predictions
    like the KerasTensors `y_true` and `y_pred` (nothing to do once built or without metrics).

    Keras builds them in the symbolic build of `fit` (see PrebuiltModel) or, without a
    strategy, while tracing the first step: under a strategy that is inside the replica
    function, where no variable can be created. No public method builds them.
    """
    if not compiled_metrics_built(model):
        model._compile_metrics.build(y_true, y_pred)


def step_function(model, step):
    """Keras' train function around `step` (a method taking one batch and returning logs),
    as `make_train_function` builds it around `train_step`: traced, run on every replica,
    its logs reduced, called with an iterator. The public `make_train_function` only wraps
    `train_step` (`TensorFlowTrainer._make_function` does the work)."""
    return model._make_function(step)


class PrebuiltModel(keras.Model):
    """A Model whose `fit` and `evaluate` skip Keras' symbolic build once every piece of
    state (layers, optimizer, compiled metrics) exists.

    Under a distribution strategy, Keras' `_maybe_symbolic_build` (called by `fit`,
    `evaluate`, `train_on_batch`, `test_on_batch`) pulls a batch and `strategy.reduce`s
    it even when nothing is left to build, which fails for dict batches under
    MultiWorkerMirroredStrategy. No public hook turns that off: this overrides it.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self.built and self.optimizer.built and compiled_metrics_built(self):
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)


@contextlib.contextmanager
def application_weights_resolved_by(resolve):
    """Within the block, `keras.applications` constructors get their pretrained weights
    file from `resolve(fname, origin, cache_subdir="models", **kwargs) -> path` instead of
    `keras.utils.get_file` (which downloads). Every application module calls
    `keras.src.utils.file_utils.get_file` through the module attribute, so swapping that
    attribute intercepts them all; no public hook turns the download off or names the file
    a constructor will ask for (the name depends on its arguments, e.g. MobileNet's input size)."""
    from keras.src.utils import file_utils

    original = file_utils.get_file
    file_utils.get_file = resolve
    try:
        yield
    finally:
        file_utils.get_file = original


def call_layers_on(model, tensor):
    """The output of functional `model`'s graph, every layer called again on symbolic
    `tensor` (instead of `model.input`): the layers (and their weights) join the caller's
    graph one by one, where `model(tensor)` would nest the whole model as a single layer.
    `Function._run_through_graph` walks the graph; `keras.models.clone_model` with
    `input_tensors` accepts only `keras.Input` tensors, and no public hook reuses the layers."""
    return model._run_through_graph(tensor, operation_fn=lambda layer: layer)
