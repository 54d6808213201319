"""Helpers shared by the tests: tiny models and data, and `python -m gdw_tf.train` as a process.

(Files in real formats: tests/fixtures.py. Test modules import these two, never each other;
hence the kill-and-resume comparison lives here.)
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import gdw_tf

NUM_FEATURES, NUM_CLASSES = 4, 3
NUM_TRAIN, BATCH, META_BATCH = 24, 6, 5  # indexed_data's defaults
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root


def mlp(dtype="float64", hidden=5, batch_norm=False, seed=0):
    """Input [n, 4] -> (BatchNorm) -> Dense(hidden, tanh) -> Dense(3) logits."""
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((NUM_FEATURES,), dtype=dtype)]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization(dtype=dtype))
    layers += [keras.layers.Dense(hidden, activation="tanh", dtype=dtype),
               keras.layers.Dense(NUM_CLASSES, dtype=dtype)]
    return keras.Sequential(layers)


def softmax(z):
    """numpy softmax over the last axis of z [n, C] (float64 references)."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def mlp_forward(theta, x):
    """`mlp`'s logits in numpy (no batch norm): tanh(x W1 + b1) W2 + b2,
    theta = [W1, b1, W2, b2]."""
    w1, b1, w2, b2 = theta
    return np.tanh(x @ w1 + b1) @ w2 + b2


def meta_loss_after_virtual_step(theta, x, labels, meta, omega, lr):
    """float64 reference of the bi-level objective for `mlp` (no batch norm): the mean
    cross-entropy on the meta batch `meta` = (images, labels) after one SGD step of
    learning rate `lr` from `theta` on the training batch (x, labels) whose logit
    gradients are weighted by `omega` [n, C] (d loss / d logits = omega * (p - y) / n)."""
    import tensorflow as tf

    y = np.eye(theta[-1].shape[0])[labels]
    p = softmax(mlp_forward(theta, x))
    variables = [tf.Variable(t) for t in theta]
    with tf.GradientTape() as tape:
        logits = tf.tanh(x @ variables[0] + variables[1]) @ variables[2] + variables[3]
    grad = tape.gradient(logits, variables, output_gradients=omega * (p - y) / len(x))
    theta_hat = [t - lr * g.numpy() for t, g in zip(theta, grad)]
    pm = softmax(mlp_forward(theta_hat, meta[0]))
    return -np.mean(np.log(pm[np.arange(len(meta[1])), meta[1]]))


def central_differences(f, params, h=1e-6):
    """d f / d params by central differences: f(list of float64 arrays) -> scalar; one
    array per element of `params`, of its shape."""
    grads = []
    for k, value in enumerate(params):
        fd = np.zeros_like(value)
        for idx in np.ndindex(*value.shape):
            plus = [v.copy() for v in params]
            minus = [v.copy() for v in params]
            plus[k][idx] += h
            minus[k][idx] -= h
            fd[idx] = (f(plus) - f(minus)) / (2 * h)
        grads.append(fd)
    return grads


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


def indexed_data(n=NUM_TRAIN, batch=BATCH, dtype="float32", seed=0):
    """(train, meta) tf.data: train dicts with index and true_label, 30% label noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, NUM_FEATURES)).astype(dtype)
    true = rng.integers(0, NUM_CLASSES, n).astype("int32")
    noisy = np.where(rng.random(n) < 0.3, (true + 1) % NUM_CLASSES, true).astype("int32")
    xm = rng.normal(size=(10, NUM_FEATURES)).astype(dtype)
    ym = rng.integers(0, NUM_CLASSES, 10).astype("int32")
    train = tf.data.Dataset.from_tensor_slices(
        {"image": x, "label": noisy, "true_label": true, "index": np.arange(n, dtype="int32")}
    ).batch(batch)
    meta = tf.data.Dataset.from_tensor_slices((xm, ym)).batch(META_BATCH)
    return train, meta, noisy


def options_for(method, labels=None):
    """The options the trainer would derive from the data (see options_from_data)."""
    counts = np.bincount(labels if labels is not None else np.arange(3), minlength=3)
    return {"insw": dict(num_train=NUM_TRAIN), "soft_label": dict(num_train=NUM_TRAIN),
            "gen_label": dict(num_train=NUM_TRAIN),
            "coteaching": dict(forget_rate=0.3, steps_per_epoch=NUM_TRAIN // BATCH),
            "class_balanced": dict(class_counts=counts.tolist()),
            "glc": dict(estimation_epochs=1)}.get(method, {})


def subprocess_env(**extra):
    """os.environ for a gdw_tf process run from ROOT: quiet TensorFlow, the checkout importable."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT, **extra}


def train(*args, check=True, timeout=400, **env):
    """Runs `python -m gdw_tf.train ARGS` from ROOT (env: extra variables); with `check`, a
    non-zero exit status fails the test with the end of stderr."""
    proc = subprocess.run([sys.executable, "-m", "gdw_tf.train", *args], cwd=ROOT,
                          env=subprocess_env(**env), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"train failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def user_error_line(proc):
    """The one-line error of a run stopped by a user error (exit status 2, no traceback)."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("gdw_tf.train: error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def results(out):
    """The results.json of run directory `out`."""
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)


def checkpoint_tensors(out):
    """Every tensor of the latest checkpoint of run directory `out`, by name."""
    reader = tf.train.load_checkpoint(os.path.join(out, "checkpoints"))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def uninterrupted_and_killed_at_second_checkpoint(tmp_path, args, resumed_at):
    """Trains `args` once whole and once killed with SIGKILL as soon as its second
    checkpoint exists, then resumed (the resume line must match `resumed_at`); asserts
    equal histories and checkpoint tensors; returns both results.json."""
    whole, cut = str(tmp_path / "whole"), str(tmp_path / "cut")
    train(*args, f"--output_dir={whole}")
    proc = subprocess.Popen([sys.executable, "-m", "gdw_tf.train", *args, f"--output_dir={cut}"],
                            cwd=ROOT, env=subprocess_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    second = os.path.join(cut, "checkpoints", "ckpt-2.index")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not os.path.exists(second):
        time.sleep(0.01)
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    again = train(*args, f"--output_dir={cut}")
    assert re.search(resumed_at, again.stdout), again.stdout  # mid-epoch
    assert "unrestored values" not in again.stderr and "could not be found" not in again.stderr
    a, b = results(whole), results(cut)
    assert a["history"] == b["history"]
    tensors_a, tensors_b = checkpoint_tensors(whole), checkpoint_tensors(cut)
    assert tensors_a.keys() == tensors_b.keys()
    for name in tensors_a:
        if not name.startswith("run_record"):  # holds the wall time
            np.testing.assert_array_equal(tensors_a[name], tensors_b[name], err_msg=name)
    return a, b
