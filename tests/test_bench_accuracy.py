"""The accuracy benchmark reuses finished runs only when they were made with its flags."""
import json
import os

import pytest

from gdw_tf.bench import accuracy


def _args(tmp_path):
    return accuracy.parse_args([f"--output_dir={tmp_path}", "--seeds=0", "--methods=gdw",
                                "--settings=uniform40", "--report_only"])


def _finished_run(tmp_path, args, **changed):
    flags = {}
    for flag in accuracy.protocol_flags(args, "uniform40") + ["--method=gdw", "--seed=0"]:
        name, _, value = flag[2:].partition("=")
        flags[name] = value
    # As gdw_tf.train stores them: typed values, the data directory as given elsewhere.
    flags.update(epochs=int(flags["epochs"]), train_per_class=int(flags["train_per_class"]),
                 noise_rate=float(flags["noise_rate"]), lr=float(flags["lr"]), seed=0,
                 data_dir=os.path.abspath(flags["data_dir"]))
    flags.update(changed)
    out = tmp_path / "uniform40_gdw_seed0"
    out.mkdir()
    (out / "results.json").write_text(json.dumps(
        {"flags": flags, "last_accuracy": 41.5, "final_accuracy": 40.0, "wall_time_s": 60.0}))


def test_a_finished_run_with_the_same_flags_is_reused_and_tabulated(tmp_path):
    args = _args(tmp_path)
    _finished_run(tmp_path, args)
    result = accuracy.run_one(args, "uniform40", "gdw", 0)
    assert result["last_accuracy"] == 41.5
    table = accuracy.table(args, {("uniform40", "gdw"): [result]})
    assert "41.50 ± 0.00" in table and "(paper 88.14)" in table and "last_accuracy" in table


def test_a_finished_run_with_other_flags_is_refused(tmp_path):
    args = _args(tmp_path)
    _finished_run(tmp_path, args, epochs=10)
    with pytest.raises(SystemExit, match=r"--epochs=10.*--epochs=5.*--output_dir"):
        accuracy.run_one(args, "uniform40", "gdw", 0)


def test_weight_figure_shows_only_methods_whose_weights_vary(tmp_path):
    args = accuracy.parse_args([f"--output_dir={tmp_path}", "--seeds=0", "--methods=base,gdw",
                                "--settings=uniform40", "--report_only"])
    edges = [0.0, 0.5, 1.0, 1.5, 2.0]  # 4 bins

    def run(clean, noisy):
        return {"target_weight_histograms": {"edges": edges, "by_epoch": {
            "0": {"clean": [0, 0, 1, 0], "noisy": [0, 0, 1, 0]},
            "1": {"clean": clean, "noisy": noisy}}}}

    constant = {("uniform40", "base"): [run([0, 0, 5, 0], [0, 0, 3, 0])]}
    assert accuracy.weight_figure(args, constant) is None
    varying = {**constant, ("uniform40", "gdw"): [run([0, 1, 4, 0], [2, 1, 0, 0])]}
    path = accuracy.weight_figure(args, varying)
    assert path == os.path.join(str(tmp_path), "target_weights.png") and os.path.getsize(path) > 0


def test_a_mixed_table_is_refused_before_any_run_starts(tmp_path, monkeypatch):
    _finished_run(tmp_path, _args(tmp_path), epochs=10)  # seed 0, other flags
    started = []
    monkeypatch.setattr(accuracy.subprocess, "run", lambda *a, **k: started.append(a))
    with pytest.raises(SystemExit, match="--epochs=10"):
        accuracy.main([f"--output_dir={tmp_path}", "--seeds=1,0", "--methods=gdw",
                       "--settings=uniform40", "--jobs=1"])
    assert started == []
