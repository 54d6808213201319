"""small_cnn learns scikit-learn digits quickly (the embedded default dataset)."""
import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from gdw_tf import models


@pytest.mark.parametrize("name", ["small_cnn", "small_cnn_nobn"])
def test_small_cnn_trains_on_digits(name):
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).reshape(-1, 8, 8, 1).astype("float32")
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    keras.utils.set_random_seed(0)
    model = models.build(name, 10)
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_tr, y_tr, batch_size=64, epochs=4, verbose=0)
    logits = model.predict(x_te, batch_size=256, verbose=0)
    accuracy = float(np.mean(np.argmax(logits, axis=1) == y_te))
    assert accuracy > 0.9, f"{name}: test accuracy {accuracy:.3f}"
