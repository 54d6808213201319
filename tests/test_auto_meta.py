"""--meta_source=auto: a meta set chosen from the noisy training data (gdw_tf.auto_meta)."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from gdw_tf.auto_meta import AutoMetaSchedule, smallest_loss
from tests import tiny
from tests.tiny import train, user_error_line

FAST = ["--dataset=digits", "--verbose=0", "--hidden_units=16", "--train_per_class=60"]
AUTO = ["--meta_source=auto", "--meta_warmup_epochs=1", "--meta_refresh_epochs=2"]


def _results(out):
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)


def test_the_smallest_losses_of_each_given_class_are_chosen():
    losses = np.array([0.5, 0.1, 0.9, 0.2, 0.2, 0.0, 3.0, 0.3])
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 1])
    np.testing.assert_array_equal(smallest_loss(losses, labels, 3, 2), [0, 1, 3, 4, 5, 6])
    # tie: lower index
    np.testing.assert_array_equal(smallest_loss(losses, labels, 3, 1), [1, 3, 5])


def test_a_choice_reports_its_clean_fraction_over_the_examples_whose_truth_is_known():
    """Partly known truth (Clothing1M: -1 where unknown): the fraction is over the known ones."""
    import types

    from gdw_tf.auto_meta import AutoMetaState, choose
    logits = np.log(np.array([[.9, .1], [.6, .4], [.2, .8], [.3, .7], [.5, .5], [.95, .05]]))
    labels = np.array([0, 0, 1, 1, 1, 0])                      # losses: .11 .51 .22 .36 .69 .05
    truth = np.array([1, -1, 1, -1, 0, 0])

    class Model:
        def predict(self, ds, verbose=0):
            return np.concatenate(list(ds.as_numpy_iterator()))
    bundle = types.SimpleNamespace(
        train_labels=labels, train_true_labels=truth, num_classes=2,
        train_in_order=tf.data.Dataset.from_tensor_slices((logits, labels)).batch(4))
    schedule = AutoMetaSchedule(warmup_epochs=1, refresh_epochs=1, per_class=2)
    state = AutoMetaState(4)
    rows, report = choose(Model(), bundle, schedule, state, 1)
    np.testing.assert_array_equal(rows, [0, 2, 3, 5])          # 0 and 5 in class 0; 2 and 3 in 1
    assert report["truth_known"] == 3                           # rows 0, 2, 5 (3 is unknown)
    assert report["clean_fraction"] == pytest.approx(2 / 3)     # 0 is noisy, 2 and 5 clean
    assert report["clean_fraction_per_class"] == [0.5, 1.0]
    assert choose(Model(), bundle, schedule, state, 1) == (pytest.approx(rows), None)  # saved one
    with pytest.raises(ValueError, match="class 'b' has 1; lower --num_meta"):
        AutoMetaSchedule(1, 1, 2).check_counts(np.array([0, 0, 1]), ["a", "b"])


def test_the_schedule_warms_up_then_chooses_every_refresh():
    schedule = AutoMetaSchedule.resolve(epochs=10, num_meta=20, num_classes=10,
                                        warmup_epochs=2, refresh_epochs=3)
    assert schedule.per_class == 2 and schedule.choice_epochs(10) == [2, 5, 8]
    assert [schedule.current_choice(e) for e in range(10)] == [None, None, 2, 2, 2, 5, 5, 5, 8, 8]
    default = AutoMetaSchedule.resolve(epochs=150, num_meta=100, num_classes=10)
    assert (default.warmup_epochs, default.refresh_epochs) == (15, 15)
    with pytest.raises(ValueError, match="leaves none of the 3 epochs"):
        AutoMetaSchedule.resolve(epochs=3, num_meta=10, num_classes=10, warmup_epochs=3)
    with pytest.raises(ValueError, match="refresh_epochs must be a positive integer, got 0"):
        AutoMetaSchedule.resolve(epochs=3, num_meta=10, num_classes=10, refresh_epochs=0)


@pytest.mark.parametrize("method", ["gdw", "soft_label"])
def test_warm_up_steps_train_exactly_as_plain_cross_entropy_then_meta_steps_follow(method):
    """A bi-level model moves its backbone as `base` does during its warm-up (no meta batch
    needed: instance weights 1, or one-hot targets), and runs meta steps from step
    warmup_steps on."""
    steps = tiny.batches(3, seed=5)
    for k, (batch, _) in enumerate(steps):
        batch["index"] = np.arange(k * 6, (k + 1) * 6, dtype="int32")
    options = {"num_train": 18} if method == "soft_label" else {}
    plain, warm = tiny.gdw_model("base"), tiny.gdw_model(method, warmup_steps=2, **options)
    for var, value in zip(warm.backbone.weights, plain.backbone.weights):
        var.assign(value)
    train_only = tf.data.Dataset.from_tensor_slices(
        {k: np.stack([s[0][k] for s in steps[:2]]) for k in steps[0][0]})
    plain.fit(train_only, epochs=1, verbose=0)
    warm.fit(train_only, epochs=1, verbose=0)
    for a, b in zip(plain.backbone.weights, warm.backbone.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-14)
    if method == "soft_label":  # its table of smoothing parameters is untouched by warm-up
        np.testing.assert_array_equal(warm.method.table.numpy(), 0.0)
        return
    assert int(warm.method.meta_optimizer.iterations.numpy()) == 0
    warm.fit(tiny.paired_dataset(steps[2:]), epochs=1, verbose=0)
    exact = tiny.gdw_model("gdw")
    exact.fit(tiny.paired_dataset(steps[2:]), epochs=1, verbose=0)
    meta_steps = int(exact.method.meta_optimizer.iterations.numpy())
    assert meta_steps > 0 and int(warm.method.meta_optimizer.iterations.numpy()) == meta_steps


@pytest.mark.slow
def test_an_auto_meta_run_chooses_training_examples_and_reports_their_clean_fraction(tmp_path):
    out = str(tmp_path / "run")
    proc = train(*FAST, *AUTO, "--epochs=4", "--num_meta=50", f"--output_dir={out}", "--verbose=2")
    assert "meta set chosen at epoch 2: 50 smallest-loss training examples" in proc.stdout
    res = _results(out)
    choices = res["auto_meta"]["choices"]
    assert [c["epoch"] for c in choices] == [1, 3] and res["auto_meta"]["warmup_epochs"] == 1
    for choice in choices:
        assert choice["num_meta"] == 50 and choice["counts"] == [5] * 10
        assert 0.0 <= choice["clean_fraction"] <= 1.0
    summary = json.load(open(os.path.join(out, "data_summary.json")))
    assert summary["protocol"]["meta_source"].startswith("auto")
    assert summary["num_train"] == 600  # nothing held out: every example stays training data
    assert res["history"]["meta_loss"][0] == 0.0 and res["history"]["meta_loss"][1] > 0
    assert res["meta_optimizer_iterations"] == 3 * summary["steps_per_epoch"]  # epochs 2-4 only


@pytest.mark.parametrize("settings, fragment", [
    ({"meta_source": "auto", "method": "base"}, "--method=base uses none"),
    ({"meta_source": "auto", "method": "glc"}, "--method=glc needs one before training"),
    ({"meta_source": "given", "meta_warmup_epochs": 2},
     "--meta_warmup_epochs applies to --meta_source=auto only"),
])
def test_auto_meta_applies_to_the_bilevel_methods_only(settings, fragment):
    from gdw_tf.config import RunConfig

    with pytest.raises(ValueError, match=fragment):
        RunConfig.from_flag_values({"method": "gdw", **settings})
    RunConfig.from_flag_values({"method": "mwnet", "meta_source": "auto"})


@pytest.mark.slow
def test_auto_meta_errors_are_one_line_before_anything_is_written(tmp_path):
    out = tmp_path / "r"
    line = user_error_line(train("--dataset=digits", "--epochs=2", "--meta_source=auto",
                                 "--meta_warmup_epochs=5", f"--output_dir={out}", check=False))
    assert "--meta_warmup_epochs=5 leaves none of the 2 epochs" in line
    assert os.listdir(out) == [".lock"]
    with pytest.raises(ValueError, match="--num_meta=0 leaves none"):
        AutoMetaSchedule.resolve(epochs=3, num_meta=0, num_classes=10)


@pytest.mark.slow
def test_two_replicas_choose_the_same_meta_set_and_train_alike(tmp_path):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    # mlp: no BatchNorm, whose statistics are per replica (only a model without it trains
    # alike on 1 and 2 replicas); instance noise: its labels are the same on both too.
    args = [*FAST, *AUTO, "--epochs=4", "--num_meta=50", "--model=mlp", "--noise_type=instance"]
    train(*args, f"--output_dir={one}")
    train(*args, "--strategy=mirrored", "--num_cpu_devices=2", f"--output_dir={two}")
    a, b = _results(one), _results(two)
    assert b["num_replicas"] == 2
    assert [c["epoch"] for c in b["auto_meta"]["choices"]] == [1, 3]
    assert a["auto_meta"]["choices"] == b["auto_meta"]["choices"]
    rows = [tf.train.load_checkpoint(os.path.join(o, "checkpoints")).get_tensor(
        "auto_meta/rows/.ATTRIBUTES/VARIABLE_VALUE") for o in (one, two)]
    np.testing.assert_array_equal(*rows)
    np.testing.assert_allclose(a["history"]["loss"], b["history"]["loss"], rtol=1e-4)
