"""The classifier head shared by every model: a Dense layer named ``HEAD_LAYER`` giving logits."""
from __future__ import annotations

import keras

# Name of the final Dense layer of every model in the zoo. Weight loaders use it to
# skip a pretrained head whose number of classes differs from the model's.
HEAD_LAYER = "fc"


def classifier_head(x, num_classes: int, kernel_initializer="he_normal",
                    bias_initializer="zeros"):
    """(N, F) features -> (N, num_classes) logits (no softmax)."""
    return keras.layers.Dense(
        num_classes,
        kernel_initializer=kernel_initializer,
        bias_initializer=bias_initializer,
        name=HEAD_LAYER,
    )(x)
