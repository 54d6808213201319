"""One forward and backward of the backbone for a method-defined loss."""
import tensorflow as tf

from gdw_tf.methods.method import backbone_forward, finite_guarded


def loss_gradients(model, images, total_loss):
    """Gradients of `total_loss(logits)` w.r.t. the backbone's trainable variables.

    `images` are forwarded in training mode; `total_loss` maps the logits
    [N, C] to a scalar that is already a local sum divided by the GLOBAL batch
    (see `gdw_tf.methods.method`). Returns (grads, logits); the gradients are
    released only if the loss is finite.
    """
    theta = model.backbone.trainable_variables
    with tf.GradientTape() as tape:
        logits = backbone_forward(model, images)
        loss = total_loss(logits)
    return finite_guarded(tape.gradient(loss, theta), loss, "training loss"), logits
