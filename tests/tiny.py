"""Tiny models and data shared by the core tests."""
import keras
import numpy as np
import tensorflow as tf

import gdw_tf

NUM_FEATURES, NUM_CLASSES = 4, 3


def mlp(dtype="float64", hidden=5, batch_norm=False, seed=0):
    """Input [n, 4] -> (BatchNorm) -> Dense(hidden, tanh) -> Dense(3) logits."""
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((NUM_FEATURES,), dtype=dtype)]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization(dtype=dtype))
    layers += [keras.layers.Dense(hidden, activation="tanh", dtype=dtype),
               keras.layers.Dense(NUM_CLASSES, dtype=dtype)]
    return keras.Sequential(layers)


def batches(num_steps, n=6, m=5, seed=0, dtype="float64"):
    """`num_steps` (train, meta) batches as numpy arrays (train has true labels)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(num_steps):
        x = rng.normal(size=(n, NUM_FEATURES)).astype(dtype)
        true = rng.integers(0, NUM_CLASSES, n).astype("int32")
        noisy = np.where(rng.random(n) < 0.5, rng.integers(0, NUM_CLASSES, n), true)
        xm = rng.normal(size=(m, NUM_FEATURES)).astype(dtype)
        ym = rng.integers(0, NUM_CLASSES, m).astype("int32")
        out.append(({"image": x, "label": noisy.astype("int32"), "true_label": true},
                    (xm, ym)))
    return out


def paired_dataset(steps):
    """A with_meta dataset that yields exactly `steps`, in order."""
    train = tf.data.Dataset.from_generator(
        lambda: (s[0] for s in steps),
        output_signature={k: tf.TensorSpec((None,) + v.shape[1:], tf.as_dtype(v.dtype))
                          for k, v in steps[0][0].items()})
    meta = tf.data.Dataset.from_generator(
        lambda: (s[1] for s in steps),
        output_signature=tuple(tf.TensorSpec((None,) + v.shape[1:], tf.as_dtype(v.dtype))
                               for v in steps[0][1]))
    return gdw_tf.data.with_meta(train, meta)


def gdw_model(method="gdw", lr=0.1, dtype="float64", backbone=None, **options):
    backbone = backbone if backbone is not None else mlp(dtype)
    model = gdw_tf.GDWModel(backbone, NUM_CLASSES, method=method, **options)
    model.compile(keras.optimizers.SGD(lr, momentum=0.9), metrics=["accuracy"])
    return model
