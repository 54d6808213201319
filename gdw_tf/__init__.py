"""gdw_tf: Generalized Data Weighting (NeurIPS 2021) for Keras 3 / TensorFlow 2.

Public API:
  GDWModel                 Keras model whose train_step runs GDW / MWNet / ...
  losses                   class_weighted_cross_entropy, zero_mean_constraint, ...
  methods                  registry of training methods (--method=NAME)
  data                     datasets, label corruption, with_meta pairing
  models                   backbones: resnet32, resnet18, small_cnn, ... (registry)
  WeightingNetwork, EpochCosineDecay
"""
from gdw_tf import data, diagnostics, losses, methods, metrics, models
from gdw_tf.model import GDWModel
from gdw_tf.schedules import EpochCosineDecay
from gdw_tf.methods.gdw import WeightingNetwork

__version__ = "0.1.0"
