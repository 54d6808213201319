"""gdw_tf: Generalized Data Weighting (NeurIPS 2021) for Keras 3 / TensorFlow 2.

Public API:
  GDWModel                 Keras model whose train_step runs GDW / MWNet / ...
  losses                   class_weighted_cross_entropy, zero_mean_constraint, ...
  methods                  registry of training methods (--method=NAME)
  data                     datasets, label corruption, with_meta pairing
  models                   backbones: resnet32, resnet18, small_cnn, ... (registry)
  write_label_issues       the mislabelled-example report of a model trained with record_examples
  WeightingNetwork, EpochCosineDecay

Everything loads on first use (`gdw_tf.GDWModel`, `gdw_tf.data`, any submodule), so
`import gdw_tf` does not load TensorFlow: the command-line tools (`python -m gdw_tf.train`,
...) first quiet TensorFlow's start-up log lines (gdw_tf/tf_startup.py), then load it.
"""
import importlib
import importlib.util

__version__ = "0.1.0"

# Public name -> the module defining it.
_DEFINED_IN = {
    "GDWModel": "gdw_tf.model",
    "EpochCosineDecay": "gdw_tf.schedules",
    "WeightingNetwork": "gdw_tf.methods.gdw",
    "write_label_issues": "gdw_tf.label_issues",
}
__all__ = ["GDWModel", "EpochCosineDecay", "WeightingNetwork", "write_label_issues",
           "data", "diagnostics", "losses", "methods", "metrics", "models"]


def __getattr__(name):
    if name in _DEFINED_IN:
        return getattr(importlib.import_module(_DEFINED_IN[name]), name)
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")  # a submodule, as `import gdw_tf.name`
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
