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


def optimizer_like(optimizer, epochs=None):
    """A fresh optimizer of `optimizer`'s class and configuration (no state).

    A per-epoch cosine learning rate (`EpochCosineDecay`) is spread over
    `epochs` instead when given, so a shorter or longer run still decays to
    zero at its end. A loss-scale wrapper is dropped (its inner one copied).
    """
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    config = inner.get_config()
    schedule = config["learning_rate"]
    if isinstance(schedule, dict):
        schedule = keras.saving.deserialize_keras_object(schedule)
    if epochs and isinstance(schedule, EpochCosineDecay):
        schedule = EpochCosineDecay(schedule.initial_learning_rate, schedule.steps_per_epoch,
                                    int(epochs))
    config["learning_rate"] = schedule
    return type(inner).from_config(config)


def plain_trainer(model, backbone, make_optimizer, name):
    """A model of `model`'s class (a `GDWModel`) with method "base" around `backbone`.

    It has `model`'s classes and weight decay, is compiled with `make_optimizer()`
    and built in `model`'s distribution strategy, so it trains like the main model.
    The wrapper shares the backbone's variables: fitting it trains `backbone`.
    """
    with model.distribute_strategy.scope():
        wrapper = type(model)(backbone, model.num_classes, method="base",
                              weight_decay=model.weight_decay, name=name)
        wrapper.compile(make_optimizer(), metrics=["accuracy"])
    return wrapper
