"""Training methods, one registered class each (`--method=NAME`)."""
from gdw_tf.methods import gdw, plain  # noqa: F401  (registration)
from gdw_tf.methods import (coteaching, example_weighting, finetune, glc,  # noqa: F401
                            label_learning, reweighted_losses)
from gdw_tf.methods.method import Method, StepOutputs
from gdw_tf.methods.bilevel import BilevelMethod
from gdw_tf.methods.registry import available_methods, create_method, register_method
from gdw_tf.methods.gdw import GDW, MWNet
from gdw_tf.methods.plain import BaseModel
from gdw_tf.methods.coteaching import CoTeaching
from gdw_tf.methods.example_weighting import INSW, L2RW
from gdw_tf.methods.finetune import FineTune
from gdw_tf.methods.glc import GLC
from gdw_tf.methods.label_learning import GenLabel, SoftLabel
from gdw_tf.methods.reweighted_losses import ClassBalanced, Focal
