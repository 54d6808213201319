"""Training methods, one registered class each (`--method=NAME`)."""
from gdw_tf.methods import plain, weighting_net  # noqa: F401  (registration)
from gdw_tf.methods.base import Method, StepOutputs
from gdw_tf.methods.bilevel import BilevelMethod
from gdw_tf.methods.registry import available_methods, create_method, register_method
from gdw_tf.methods.weighting_net import GDW, MWNet
from gdw_tf.methods.plain import BaseModel
