"""The speed benchmark can build and step every registered method."""
import numpy as np
import pytest
import tensorflow as tf

from gdw_tf.bench import speed
from gdw_tf.methods import available_methods


@pytest.mark.slow  # in process, but among the slowest (docs/development.md)
def test_every_method_builds_and_steps_with_the_benchmarks_options():
    args = speed.parse_config(["speed", "--model=small_cnn", "--batch_size=8"])
    for method in available_methods():
        model, data = speed._setup(args, method)
        loss = float(tf.function(model.train_step)(data)["loss"])
        assert np.isfinite(loss), method


def test_memory_fit_recovers_a_line():
    fit = speed.memory_fit({8: 1000.0 + 8 * 50.0, 16: 1000.0 + 16 * 50.0, 32: 1000.0 + 32 * 50.0})
    assert np.isclose(fit["memory_per_example_mb"], 50.0)
    assert np.isclose(fit["memory_fixed_mb"], 1000.0)
    assert speed.memory_fit({8: 1.0}) == {}


def test_image_size_sets_the_input_shape():
    args = speed.parse_config(["speed", "--model=small_cnn", "--batch_size=2", "--image_size=12"])
    model, data = speed._setup(args, "base")
    assert data["image"].shape == (2, 12, 12, 1) and model.backbone.input_shape == (None, 12, 12, 1)


def test_time_cycles_runs_whole_cycles_and_amortises():
    calls = {"a": 0, "b": 0}

    def step(name):
        def run():
            calls[name] += 1
        return run

    times = speed.time_cycles({"a": (step("a"), 1), "b": (step("b"), 3)}, iters=4, warmup=2)
    assert calls == {"a": 2 + 4, "b": 3 * (2 + 4)}
    assert [len(t) for t in times.values()] == [4, 4]


def test_method_option_reaches_every_method_but_base():
    args = speed.parse_config(["speed", "--model=small_cnn", "--batch_size=2",
                               "--method_option=meta_interval=2"])
    base, _ = speed._setup(args, "base")
    assert not hasattr(base.method, "meta_interval")
    model, data = speed._setup(args, "gdw")
    step, cycle = speed._train_step(model, data)
    assert cycle == 2
    for _ in range(cycle):
        step()
    assert model.optimizer.iterations.numpy() == 2
    assert model.method.meta_optimizer.iterations.numpy() == 1


def test_flags_become_a_config_with_base_first_and_the_memory_process_gets_the_same_setup():
    config = speed.parse_config(["speed", "--methods=gdw", "--model=small_cnn", "--batch_size=4",
                                 "--memory_batches=2,4", "--method_option=meta_interval=2",
                                 "--jit"])
    assert config.methods == ("base", "gdw") and config.memory_batches == (2, 4)
    assert config.method_options == ("meta_interval=2",) and config.jit
    child = speed.parse_config(["speed", *speed._memory_argv(config, "gdw", 2)])
    assert child.single == "gdw" and child.batch_size == 2
    for field in ("model", "num_classes", "image_size", "method_options", "jit", "mixed_precision"):
        assert getattr(child, field) == getattr(config, field), field
    assert speed.parse_config(["speed", "--methods=all"]).methods == tuple(available_methods())


def test_method_variants_are_built_with_their_own_options(capsys):
    config = speed.parse_config(["speed", "--model=small_cnn", "--batch_size=2",
                                 "--methods=gdw@virtual_scope=head@meta_interval=2,gdw"])
    assert config.methods == ("base", "gdw@virtual_scope=head@meta_interval=2", "gdw")
    variant, _ = speed._setup(config, config.methods[1])
    assert variant.method.options()["virtual_scope"] == "head"
    assert variant.method.options()["meta_interval"] == 2
    exact, _ = speed._setup(config, "gdw")
    assert exact.method.options()["virtual_scope"] == "all"
    child = speed.parse_config(["speed", *speed._memory_argv(config, config.methods[1], 2)])
    assert child.single == config.methods[1]
    with pytest.raises(SystemExit):
        speed.parse_config(["speed", "--methods=gdw@virtual_scope"])
    assert "options look like NAME@key=value" in capsys.readouterr().err


def test_a_meta_method_outside_the_expected_cost_range_is_reported():
    timed = {"base": {"median_s": 0.1, "needs_meta": False},
             "focal": {"median_s": 0.09, "needs_meta": False},
             "gdw": {"median_s": 0.3, "needs_meta": True},
             "l2rw": {"median_s": 0.08, "needs_meta": True},
             "insw": {"median_s": 2.5, "needs_meta": True},
             "glc": {"error": "failed"}}
    lines = speed.unexpected_costs(timed)
    assert len(lines) == 2, lines
    assert "l2rw costs x0.80 base" in lines[0] and "insw costs x25.00 base" in lines[1]
