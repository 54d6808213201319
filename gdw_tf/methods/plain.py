"""`base`: plain cross-entropy on the (noisy, imbalanced) training set."""
import tensorflow as tf

from gdw_tf.methods.method import Method, StepOutputs, register_method, weighted_gradients


@register_method("base")
class Plain(Method):
    """`--method=base`, the paper's BaseModel: every example and class weighted by one.

    Runs through the same class-weighted loss as the meta methods (with
    omega = 1), so its cost and numerics are directly comparable.
    """

    def train_gradients(self, model, batch, meta):
        grads, logits = weighted_gradients(model, batch, 1.0)
        weights = tf.ones_like(logits[:, :1])
        return StepOutputs(grads, logits, weights,
                           diagnostics=self.weight_stats(weights, batch))
