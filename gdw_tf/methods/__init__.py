"""Training methods, one registered class each (`--method=NAME`).

method.py: the `Method` base class, the registry and the step helpers every method
uses; bilevel.py: the bi-level loop of the meta-learning methods; gdw.py: the
weighting network, MW-Net and GDW; the other modules: one family of methods each.
"""
from gdw_tf.methods.bilevel import BilevelMethod
from gdw_tf.methods.coteaching import CoTeaching
from gdw_tf.methods.example_weighting import INSW, L2RW
from gdw_tf.methods.finetune import FineTune
from gdw_tf.methods.gdw import GDW, MWNet, WeightingNetwork
from gdw_tf.methods.glc import GLC
from gdw_tf.methods.label_learning import GenLabel, SoftLabel
from gdw_tf.methods.method import (
    Method,
    StepOutputs,
    available_methods,
    create_method,
    data_options,
    register_method,
)
from gdw_tf.methods.plain import Plain
from gdw_tf.methods.reweighted_losses import ClassBalanced, Focal

__all__ = [
    "GDW", "GLC", "INSW", "L2RW", "BilevelMethod", "ClassBalanced", "CoTeaching", "FineTune",
    "Focal", "GenLabel", "MWNet", "Method", "Plain", "SoftLabel", "StepOutputs",
    "WeightingNetwork", "available_methods", "create_method", "data_options", "register_method",
]
