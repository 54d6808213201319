"""The accuracy benchmark reuses finished runs only when they were made with its flags."""
import json
import os

import pytest

from gdw_tf.bench import accuracy
from gdw_tf.diagnostics import binned_auc


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
        {"flags": flags, "last_accuracy": 41.5, "final_accuracy": 40.0, "best_accuracy": 43.0,
         "wall_time_s": 60.0, "history": {"accuracy": [0.3, 0.45]},
         "target_weight_histograms": {"edges": [0.0, 0.5, 1.0], "by_epoch": {
             "0": {"clean": [2, 2], "noisy": [2, 2]}, "1": {"clean": [1, 3], "noisy": [3, 1]}}}}))


def test_a_finished_run_with_the_same_flags_is_reused_and_tabulated(tmp_path):
    args = _args(tmp_path)
    _finished_run(tmp_path, args)
    result = accuracy.run_one(args, "uniform40", "gdw", 0)
    assert result["final_accuracy"] == 40.0
    results = {("uniform40", "gdw"): [result]}
    assert "| gdw | 40.00 ± 0.00 (paper 88.14) |" in accuracy.table(args, results, "final")
    assert "| gdw | 43.00 ± 0.00 |" in accuracy.table(args, results, "best")
    assert "| gdw | 45.0 ± 0.0 |" in accuracy.table(args, results, "train")
    # last epoch: P(clean > noisy) = 3/4 * 3/4, ties (1/4 * 3/4 + 3/4 * 1/4) / 2
    assert "| gdw | 0.750 ± 0.000 |" in accuracy.table(args, results, "auc")
    assert "| gdw | 60 ± 0 |" in accuracy.table(args, results, "wall")
    report = accuracy.report(args, results)  # one setting: one table of every column
    assert "| gdw | 40.00 ± 0.00 | 43.00 ± 0.00 | 45.0 ± 0.0 | 0.750 ± 0.000 | 60 ± 0 |" in report
    assert "1 runs, 1.0 min" in report
    args.settings = "uniform40,flip40"  # several: one table per column
    assert accuracy.report(args, results).count("| method |") == len(accuracy.COLUMNS)
    args.settings = "uniform40"
    args.methods = "base"  # learns no weights: no AUC
    base = {**result, "flags": {**result["flags"], "method": "base"}}
    assert "| base | - |" in accuracy.table(args, {("uniform40", "base"): [base]}, "auc")


def test_a_finished_run_with_other_flags_is_refused(tmp_path):
    args = _args(tmp_path)
    _finished_run(tmp_path, args, epochs=10)
    with pytest.raises(SystemExit, match=r"--epochs=10.*--epochs=40.*--output_dir"):
        accuracy.run_one(args, "uniform40", "gdw", 0)


def test_weight_figure_shows_only_learned_weights_that_vary(tmp_path):
    args = accuracy.parse_args([f"--output_dir={tmp_path}", "--seeds=0",
                                "--methods=base,class_balanced,gdw",
                                "--settings=uniform40", "--report_only"])
    edges = [0.0, 0.5, 1.0, 1.5, 2.0]  # 4 bins

    def run(clean, noisy):
        return {"target_weight_histograms": {"edges": edges, "by_epoch": {
            "0": {"clean": [0, 0, 1, 0], "noisy": [0, 0, 1, 0]},
            "1": {"clean": clean, "noisy": noisy}}}}

    constant = {("uniform40", "base"): [run([0, 0, 5, 0], [0, 0, 3, 0])],
                # fixed per-class weights vary, but are not learned: not drawn either
                ("uniform40", "class_balanced"): [run([0, 1, 4, 0], [2, 1, 0, 0])]}
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


def test_binned_auc_is_the_probability_that_a_clean_weight_ranks_above_a_noisy_one():
    # Bins ascending. Clean: 1 in bin 1, 3 in bin 3; noisy: 2 in bin 0, 1 in bin 1, 1 in bin 3.
    clean, noisy = [0, 1, 0, 3], [2, 1, 0, 1]
    pairs = [(c, n) for c, kc in enumerate(clean) for _ in range(kc)
             for n, kn in enumerate(noisy) for _ in range(kn)]
    by_hand = sum(1.0 if c > n else 0.5 if c == n else 0.0 for c, n in pairs) / len(pairs)
    assert binned_auc(clean, noisy) == pytest.approx(by_hand)
    assert binned_auc([0, 0, 5], [5, 0, 0]) == 1.0
    assert binned_auc([5, 0, 0], [0, 0, 5]) == 0.0
    assert binned_auc([0, 4, 0], [0, 2, 0]) == 0.5
    assert binned_auc([0, 4, 0], [0, 0, 0]) is None  # no noisy examples


def test_cpu_protocol_gives_every_setting_its_iterations():
    args = accuracy.parse_args([])
    assert args.settings.split(",") == list(accuracy.SETTINGS)
    from gdw_tf.data.protocol import long_tail_counts

    for setting in accuracy.SETTINGS:
        flags = dict(f[2:].partition("=")[::2] for f in accuracy.protocol_flags(args, setting))
        mu = float(flags.get("imbalance_factor", 1.0))
        if mu == 1.0:  # balanced: 1,000 images per class
            assert flags["train_per_class"] == "1000"
            images = 10 * 1000
        else:  # long tail over the full 4,900 images per class left after the meta split
            assert "train_per_class" not in flags
            images = sum(long_tail_counts(4900, 10, mu))
        epochs, steps = int(flags["epochs"]), images // 100
        assert epochs * steps >= accuracy.ITERATIONS > (epochs - 1) * steps
        assert flags["model"] == "strided_cnn" and flags["augment"] == "cifar"


def test_paper_protocol_refuses_a_setting_it_has_no_flagfile_for():
    with pytest.raises(SystemExit):
        accuracy.parse_args(["--protocol=paper", "--settings=mixed"])
    assert accuracy.parse_args(["--protocol=paper"]).settings.split(",") == list(
        accuracy.PAPER_FLAGFILES)


def test_digits_protocol_is_the_default_job_with_a_setting():
    args = accuracy.parse_args(["--protocol=digits"])
    assert args.settings == "uniform40"
    assert accuracy.run_flags(args, "uniform40", "gdw", 2) == [
        "--dataset=digits", "--verbose=0", "--noise_type=uniform", "--noise_rate=0.4",
        "--method=gdw", "--seed=2"]
    with pytest.raises(SystemExit):
        accuracy.parse_args(["--protocol=digits", "--settings=longtail001"])


def test_digits_tables_carry_no_paper_numbers(tmp_path):
    args = accuracy.parse_args(["--protocol=digits", f"--output_dir={tmp_path}", "--methods=gdw"])
    run = {"final_accuracy": 90.0, "flags": {"method": "gdw"}}
    assert "paper" not in accuracy.table(args, {("uniform40", "gdw"): [run]}, "final")
