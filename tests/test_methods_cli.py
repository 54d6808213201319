"""Every registered method trains one epoch through `python -m gdw_tf.train`."""
import json
import os

import pytest

from gdw_tf.methods import available_methods
from tests.tiny import train


@pytest.mark.parametrize("method", available_methods())
def test_method_trains_one_epoch_from_the_command_line(tmp_path, method):
    out = str(tmp_path / method)
    train("--dataset=digits", f"--method={method}", "--epochs=1", "--train_per_class=40",
          "--batch_size=50", "--hidden_units=8", "--verbose=0", f"--output_dir={out}")
    with open(os.path.join(out, "results.json")) as f:
        res = json.load(f)
    assert res["flags"]["method"] == method
    assert res["epochs_completed"] == 1 and 0 <= res["final_accuracy"] <= 100
    assert all(v == v for v in res["history"]["loss"])  # finite, not NaN
    if method == "finetune":  # every reported accuracy is the fine-tuned model's
        after = 100 * res["finetune"]["test_after"]["accuracy"]
        assert res["final_accuracy"] == res["last_accuracy"] == pytest.approx(after)
