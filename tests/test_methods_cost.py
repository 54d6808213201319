"""Cost of the comparison methods: step time relative to `base`, state memory.

`python -m tests.test_methods_cost` prints the full table (every method, the
default small_cnn on 8x8x1 digits-sized inputs, batch 100); the tests below
run a cheap subset and check the memory growth of the per-example tables. Whether the
times are in range is reported by `python -m gdw_tf.bench.speed`, not tested.
"""
import time

import keras
import numpy as np
import tensorflow as tf

import gdw_tf
from gdw_tf.models.small_nets import small_cnn

NUM_CLASSES = 10
TABLE_METHODS = {"insw": 4, "soft_label": 4, "gen_label": 4 * NUM_CLASSES}  # bytes per example


def method_options(method, num_train):
    return {"insw": dict(num_train=num_train), "soft_label": dict(num_train=num_train),
            "gen_label": dict(num_train=num_train),
            "coteaching": dict(forget_rate=0.4, steps_per_epoch=10),
            "class_balanced": dict(class_counts=[100] * NUM_CLASSES)}.get(method, {})


def method_state_bytes(method, num_train, backbone=None):
    """Bytes of the method's own variables (tables, networks, optimizer slots)."""
    backbone = backbone or keras.Sequential([keras.Input((8,)), keras.layers.Dense(NUM_CLASSES)])
    model = gdw_tf.GDWModel(backbone, NUM_CLASSES, method=method,
                            **method_options(method, num_train))
    variables = list(model.method.weights)
    for name in ("meta_optimizer", "peer_optimizer"):
        if hasattr(model.method, name):
            variables += list(getattr(model.method, name).variables)
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)


def compiled_step(method, batch=100, seed=0):
    """A traced `train_step` of `method` on small_cnn and its (fixed) input batch."""
    keras.utils.set_random_seed(seed)
    model = gdw_tf.GDWModel(small_cnn(NUM_CLASSES), NUM_CLASSES, method=method,
                            **method_options(method, 10 * batch))
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9))
    rng = np.random.default_rng(seed)
    data = {"image": tf.constant(rng.normal(size=(batch, 8, 8, 1)), tf.float32),
            "label": tf.constant(rng.integers(0, NUM_CLASSES, batch), tf.int32),
            "index": tf.range(batch, dtype=tf.int32),
            "meta_image": tf.constant(rng.normal(size=(batch, 8, 8, 1)), tf.float32),
            "meta_label": tf.constant(rng.integers(0, NUM_CLASSES, batch), tf.int32)}
    step = tf.function(model.train_step)
    float(step(data)["loss"])                          # trace and warm up
    return step, data


def cost_ratios(methods, batch=100, steps=20, rounds=5):
    """Seconds per step of `base` and each method's time relative to it.

    All steps are traced first, then timed in interleaved rounds (base, m1,
    m2, ..., repeated) and each method's fastest round is kept, so that load
    from other processes affects all methods alike.
    """
    names = ["base"] + list(methods)
    compiled = {name: compiled_step(name, batch) for name in names}
    best = {name: np.inf for name in names}
    for _ in range(rounds):
        for name, (step, data) in compiled.items():
            start = time.perf_counter()
            for _ in range(steps):
                logs = step(data)
            float(logs["loss"])
            best[name] = min(best[name], (time.perf_counter() - start) / steps)
    return best["base"], {m: best[m] / best["base"] for m in methods}


def test_table_memory_grows_linearly_with_num_train():
    for method, per_example in TABLE_METHODS.items():
        sizes = [method_state_bytes(method, n) for n in (1000, 10000, 100000)]
        assert sizes == [per_example * n for n in (1000, 10000, 100000)], (method, sizes)
    # The weighting-network methods' state does not depend on the data size.
    assert method_state_bytes("mwnet", 1000) == method_state_bytes("mwnet", 100000) > 0
    assert method_state_bytes("l2rw", 100000) == 0


def test_the_cost_table_times_every_method_against_base():
    """How the table is made; the ratios' range is the speed bench's to report
    (gdw_tf.bench.speed.unexpected_costs), not asserted here: a busy machine moves them."""
    base, ratios = cost_ratios(["l2rw", "insw"], batch=32, steps=5, rounds=2)
    assert base > 0 and set(ratios) == {"l2rw", "insw"}
    assert all(np.isfinite(ratio) and ratio > 0 for ratio in ratios.values()), ratios


def main():
    print("method state bytes for num_train = 1e3, 1e4, 1e5, 1e6 (C = 10):")
    for method in ["l2rw", "mwnet", "gdw", "insw", "soft_label", "gen_label"]:
        sizes = [method_state_bytes(method, n) for n in (10**3, 10**4, 10**5, 10**6)]
        print(f"  {method:12s}", sizes)
    methods = ["focal", "class_balanced", "glc", "coteaching", "l2rw", "insw", "soft_label",
               "gen_label", "mwnet", "gdw"]
    base, ratios = cost_ratios(methods, rounds=8)
    print(f"small_cnn, batch 100, {tf.config.list_logical_devices()[0].device_type}: "
          f"base {base * 1e3:.2f} ms/step")
    for method, ratio in ratios.items():
        print(f"  {method:14s} x{ratio:.2f}")


if __name__ == "__main__":
    main()
