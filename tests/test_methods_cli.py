"""Every registered method trains one epoch through `python -m gdw_tf.train`."""
import json
import os

import pytest

from gdw_tf.flags import METHOD_FLAGS
from gdw_tf.methods import available_methods, create_method
from gdw_tf.methods.method import METHODS
from tests.tiny import train, user_error_line


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--method=mwnet", "--outer_lr=1000"], "--outer_lr: method 'mwnet' has no option outer_lr; "
     "its options: hidden_units, meta_interval, meta_learning_rate, meta_optimizer, "
     "meta_weight_decay, virtual_scope, weight_inputs"),
    (["--method=base", "--clip=0.9"],
     "--clip: method 'base' has no option clip; it takes no options"),
    (["--method=base", "--flagfile={flagfile}"], "--hidden_units: method 'base' has no option"),
    (["--method_option=outer_lr=5", "--outer_lr=7"],
     "--outer_lr and --method_option=outer_lr=... both set outer_lr; give it once"),
    (["--method=mwnet", "--method_option=outer_lr=5"],
     "--method_option=outer_lr=...: method 'mwnet' has no option outer_lr; its options: "),
    (["--method_option=clip=0.1", "--method_option=clip=0.3"], "--method_option sets clip twice"),
])
def test_method_options_the_method_does_not_take_are_one_line_errors(tmp_path, args, message):
    flagfile = tmp_path / "width.flags"
    flagfile.write_text("--hidden_units=100\n")  # a default value, but set: still an error
    args = [a.format(flagfile=flagfile) for a in args]
    # A --data_dir that does not exist: the error comes before any data is read.
    proc = train("--dataset=folder", f"--data_dir={tmp_path / 'absent'}", *args,
                 f"--output_dir={tmp_path / 'run'}", check=False, timeout=120)
    assert message in user_error_line(proc)
    assert not os.path.exists(tmp_path / "run" / "data_summary.json")


@pytest.mark.slow
@pytest.mark.parametrize("method", available_methods())
def test_method_trains_one_epoch_from_the_command_line(tmp_path, method):
    out = str(tmp_path / method)
    small = ["--hidden_units=8"] if method in ("mwnet", "gdw") else []
    train("--dataset=digits", f"--method={method}", "--epochs=1", "--train_per_class=40",
          "--batch_size=50", *small, "--verbose=0", f"--output_dir={out}")
    with open(os.path.join(out, "results.json")) as f:
        res = json.load(f)
    assert res["flags"]["method"] == method
    # The options the method was built with, and no method flag it did not take.
    assert sorted(res["method_options"]) == METHODS.get(method).option_names()
    assert create_method(method, **res["method_options"]).options() == res["method_options"]
    if small:
        assert res["method_options"]["hidden_units"] == 8
    assert all(res["flags"][name] is None for name in METHOD_FLAGS if name != "hidden_units")
    assert res["epochs_completed"] == 1 and 0 <= res["final_accuracy"] <= 100
    assert all(v == v for v in res["history"]["loss"])  # finite, not NaN
    if method == "finetune":  # every reported accuracy is the fine-tuned model's
        after = 100 * res["finetune"]["test_after"]["accuracy"]
        assert res["final_accuracy"] == res["last_accuracy"] == pytest.approx(after)
