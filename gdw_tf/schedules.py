"""Learning-rate schedules used by the paper's protocol."""
import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="gdw_tf")
class EpochCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Cosine decay stepped once per epoch (the paper's default).

    lr(step) = initial * (1 + cos(pi * e / epochs)) / 2 with
    e = floor(step / steps_per_epoch): constant within an epoch, like
    adjusting a PyTorch optimizer's lr at each epoch start.
    """

    def __init__(self, initial_learning_rate, steps_per_epoch, epochs):
        if steps_per_epoch < 1 or epochs < 1:
            raise ValueError(
                f"EpochCosineDecay needs steps_per_epoch >= 1 and epochs >= 1, "
                f"got {steps_per_epoch} and {epochs}")
        self.initial_learning_rate = float(initial_learning_rate)
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs = int(epochs)

    def __call__(self, step):
        epoch = ops.floor(ops.cast(step, "float32") / self.steps_per_epoch)
        return self.initial_learning_rate * 0.5 * (
            1.0 + ops.cos(math.pi * epoch / self.epochs))

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "steps_per_epoch": self.steps_per_epoch, "epochs": self.epochs}
