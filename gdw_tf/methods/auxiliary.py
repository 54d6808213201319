"""Helpers for methods that train or keep extra networks (coteaching, glc, finetune)."""
import keras

from gdw_tf.schedules import EpochCosineDecay


def fresh_copy(backbone, method):
    """A network of the backbone's architecture with newly initialised weights.

    Uses `keras.models.clone_model` (Functional or Sequential backbones);
    weights are NOT copied. The copy is built like the original.
    """
    try:
        copy = keras.models.clone_model(backbone)
    except Exception as error:  # subclassed models without a usable config
        raise ValueError(
            f"method '{method}' needs a second copy of the backbone, but "
            f"keras.models.clone_model cannot copy '{backbone.name}' "
            f"({type(error).__name__}: {error}); use a Functional or Sequential "
            "backbone") from error
    if not copy.built:
        raise ValueError(
            f"method '{method}': the backbone copy is not built; give the "
            "backbone a keras.Input so that its variables exist before training")
    return copy


def main_schedule(settings, steps_per_epoch, epochs, learning_rate=None):
    """The run's learning rate, cosine-decayed per epoch when the epochs are known.

    Reads settings["lr"] (default 0.1) unless `learning_rate` is given.
    """
    lr = float(settings.get("lr", 0.1) if learning_rate is None else learning_rate)
    if steps_per_epoch and epochs:
        return EpochCosineDecay(lr, int(steps_per_epoch), int(epochs))
    return lr


def plain_trainer(backbone, num_classes, learning_rate, momentum, weight_decay, strategy,
                  name):
    """`GDWModel(method="base")` around `backbone`, compiled with SGD + momentum.

    The wrapper shares the backbone's variables: fitting it trains `backbone`.
    Built in `strategy`'s scope so it runs like the main model.
    """
    from gdw_tf.model import GDWModel  # the model module imports the methods

    with strategy.scope():
        wrapper = GDWModel(backbone, num_classes, method="base",
                           weight_decay=weight_decay, name=name)
        wrapper.compile(keras.optimizers.SGD(learning_rate, momentum=momentum),
                        metrics=["accuracy"])
    return wrapper
