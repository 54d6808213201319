"""The accuracy benchmark reuses finished runs only when they were made with its flags."""
import dataclasses
import json
import os

import pytest

from gdw_tf import bench
from gdw_tf.bench import accuracy
from gdw_tf.diagnostics import binned_auc


def parse(*argv):
    return accuracy.parse_config(["accuracy", *argv])


def _args(tmp_path, methods="gdw"):
    return parse(f"--output_dir={tmp_path}", "--seeds=0", f"--methods={methods}",
                 "--settings=uniform40", "--report_only")


def _finished_run(tmp_path, args, method="gdw", **changed):
    flags = {"method_option": []}
    for flag in accuracy.run_flags(args, "uniform40", method, 0):
        name, _, value = flag[2:].partition("=")
        if name == "method_option":
            flags[name].append(value)
        else:
            flags[name] = value
    # As gdw_tf.train stores them: typed values, the data directory as given elsewhere.
    flags.update(epochs=int(flags["epochs"]), train_per_class=int(flags["train_per_class"]),
                 num_meta=int(flags["num_meta"]), batch_size=int(flags["batch_size"]),
                 noise_rate=float(flags["noise_rate"]), lr=float(flags["lr"]), seed=0,
                 data_dir=os.path.abspath(flags["data_dir"]))
    flags.update(changed)
    out = tmp_path / f"uniform40_{accuracy.method_dir_name(method)}_seed0"
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
    assert ("| gdw | 40.00 ± 0.00 | 43.00 ± 0.00 | 45.0 ± 0.0 | 0.750 ± 0.000 | - | - "
            "| 60 ± 0 |") in report
    assert "1 runs, 1.0 min" in report
    several = dataclasses.replace(args, settings=("uniform40", "flip40"))  # one table per column
    assert accuracy.report(several, results).count("| method |") == len(accuracy.COLUMNS)
    base_only = dataclasses.replace(args, methods=("base",))  # learns no weights: no AUC
    base = {**result, "flags": {**result["flags"], "method": "base"}}
    assert "| base | - |" in accuracy.table(base_only, {("uniform40", "base"): [base]}, "auc")


def test_a_finished_run_with_other_flags_is_refused(tmp_path):
    args = _args(tmp_path)
    _finished_run(tmp_path, args, epochs=10)
    with pytest.raises(SystemExit, match=r"--epochs=10.*--epochs=40.*--output_dir"):
        accuracy.run_one(args, "uniform40", "gdw", 0)


def test_a_finished_run_is_compared_with_the_values_the_trainer_parses(tmp_path):
    args = _args(tmp_path)
    _finished_run(tmp_path, args, lr=0.10000, verbose=2)  # harmless flags may differ
    assert accuracy.run_one(args, "uniform40", "gdw", 0)["final_accuracy"] == 40.0
    # A run made with a method option is not the bare method's run.
    os.rename(tmp_path / "uniform40_gdw_seed0", tmp_path / "kept")
    _finished_run(tmp_path, args, method_option=["meta_interval=2"])
    with pytest.raises(SystemExit,
                       match=r"--method_option=meta_interval=2.*--method_option=\(none\)"):
        accuracy.run_one(args, "uniform40", "gdw", 0)


def test_weight_figure_shows_only_learned_weights_that_vary(tmp_path):
    args = _args(tmp_path, methods="base,class_balanced,gdw")
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
    monkeypatch.setattr(bench.subprocess, "run", lambda *a, **k: started.append(a))
    with pytest.raises(SystemExit, match="--epochs=10"):
        accuracy.main(["accuracy", f"--output_dir={tmp_path}", "--seeds=1,0", "--methods=gdw",
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
    args = parse()
    assert args.settings == tuple(accuracy.SYNTHETIC_SETTINGS)
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


def test_paper_protocol_refuses_a_setting_it_has_no_flagfile_for(capsys):
    with pytest.raises(SystemExit) as error:
        parse("--protocol=paper", "--settings=mixed")
    assert error.value.code == 2
    assert "unknown setting 'mixed' for --protocol=paper" in capsys.readouterr().err
    assert parse("--protocol=paper").settings == tuple(accuracy.PAPER_FLAGFILES)


def test_digits_protocol_is_the_default_job_with_a_setting():
    args = parse("--protocol=digits")
    assert args.settings == ("uniform40",)
    assert accuracy.run_flags(args, "uniform40", "gdw", 2) == [
        "--dataset=digits", "--verbose=0", "--noise_type=uniform", "--noise_rate=0.4",
        "--method=gdw", "--seed=2"]
    with pytest.raises(SystemExit):
        parse("--protocol=digits", "--settings=longtail001")


def test_digits_tables_carry_no_paper_numbers(tmp_path):
    args = parse("--protocol=digits", f"--output_dir={tmp_path}", "--methods=gdw")
    run = {"final_accuracy": 90.0, "flags": {"method": "gdw"}}
    assert "paper" not in accuracy.table(args, {("uniform40", "gdw"): [run]}, "final")


def test_a_method_entry_with_options_is_its_own_run_and_row(tmp_path):
    args = _args(tmp_path, methods="gdw,gdw@meta_interval=2")
    variant = "gdw@meta_interval=2"
    assert accuracy.run_dir(args, "uniform40", variant, 0) == os.path.join(
        str(tmp_path), "uniform40_gdw-meta_interval-2_seed0")
    assert accuracy.run_flags(args, "uniform40", variant, 0)[-3:] == [
        "--method=gdw", "--method_option=meta_interval=2", "--seed=0"]
    _finished_run(tmp_path, args, method=variant, final_accuracy=1.0)
    _finished_run(tmp_path, args)
    results = {("uniform40", m): [accuracy.run_one(args, "uniform40", m, 0)] for m in args.methods}
    assert results[("uniform40", variant)][0]["flags"]["method_option"] == ["meta_interval=2"]
    final = accuracy.table(args, results, "final")
    assert "| gdw | 40.00 ± 0.00 (paper 88.14) |" in final
    assert "| gdw@meta_interval=2 | 40.00 ± 0.00 |" in final  # no paper number for a variant
    assert "| gdw@meta_interval=2 | 0.750 ± 0.000 |" in accuracy.table(args, results, "auc")
    assert accuracy.weight_figure(args, results) is not None  # gdw learns weights: drawn
    # The same directory made without the option (or with another one) is refused.
    other = _args(tmp_path / "other", methods=variant)
    (tmp_path / "other").mkdir()
    _finished_run(tmp_path / "other", _args(tmp_path / "other", methods="gdw@meta_interval=3"),
                  method="gdw@meta_interval=3")
    os.rename(tmp_path / "other" / "uniform40_gdw-meta_interval-3_seed0",
              tmp_path / "other" / "uniform40_gdw-meta_interval-2_seed0")
    with pytest.raises(SystemExit, match=r"--method_option=meta_interval=3.*meta_interval=2"):
        accuracy.run_one(other, "uniform40", variant, 0)


@pytest.mark.parametrize("methods, message", [
    ("gdw@meta_interval", "options look like NAME@key=value"),
    ("nope@meta_interval=2", "unknown method 'nope'"),
    ("gdw,gdw", "would share the run directory 'gdw'"),
    ("gdw@a=1/2,gdw@a=1-2", "would share the run directory 'gdw-a-1-2'"),
])
def test_bad_method_entries_are_one_line_errors(methods, message, capsys):
    with pytest.raises(SystemExit) as error:
        parse(f"--methods={methods}")
    err = capsys.readouterr().err
    assert error.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_the_benches_flags_do_not_touch_the_trainers():
    from absl import flags

    import gdw_tf.flags  # noqa: F401  the trainer's flags, on the global FLAGS
    from gdw_tf.bench import pipeline, speed
    assert all(bench.FLAGS is not flags.FLAGS for bench in (accuracy, speed, pipeline))
    assert "protocol" not in flags.FLAGS and flags.FLAGS["data_dir"].default is None
    assert accuracy.FLAGS["data_dir"].default == "../shared/data/cifar10-jpeg"


def test_the_memorising_protocol_is_the_cpu_one_without_augmentation_on_500_per_class():
    args = parse("--protocol=cpu_memorise")
    assert args.settings == ("uniform40", "flip40", "instance40") and args.train_per_class == 500
    flags = dict(f[2:].partition("=")[::2] for f in accuracy.protocol_flags(args, "flip40"))
    assert flags["augment"] == "none" and flags["train_per_class"] == "500"
    assert int(flags["epochs"]) * 5000 // 100 == accuracy.ITERATIONS  # 80 epochs of 50 steps


def test_the_gradual_protocol_flips_only_for_10000_iterations():
    args = parse("--protocol=cpu_gradual")
    assert args.settings == ("uniform40",) and args.iterations == 10000
    flags = dict(f[2:].partition("=")[::2] for f in accuracy.protocol_flags(args, "uniform40"))
    assert flags["augment"] == "flip" and flags["train_per_class"] == "1000"
    assert int(flags["epochs"]) * 10000 // 100 == 10000  # 100 epochs of 100 steps
    assert parse("--protocol=cpu_gradual", "--iterations=500").iterations == 500
    assert parse().iterations == accuracy.ITERATIONS


def test_the_schedule_report_reads_check_and_truth_at_fractions_of_the_epochs():
    def run(checks, separating_from):  # 10 epochs; weights separate from that epoch (0-based)
        by_epoch = {str(e): ({"clean": [0, 5], "noisy": [5, 0]} if e >= separating_from
                             else {"clean": [5, 0], "noisy": [0, 5]}) for e in range(10)}
        return {"flags": {"method": "gdw"}, "history": {"weight_check_fit_auc": checks},
                "target_weight_histograms": {"edges": [0, 1, 2], "by_epoch": by_epoch}}
    config = parse("--settings=uniform40", "--methods=base,gdw")
    late = run([0.1] * 5 + [0.9] * 5, separating_from=5)       # right at every point
    wrong = run([0.9] * 10, separating_from=8)                 # trusted too early
    md = accuracy.schedule_report(config, {("uniform40", "gdw"): [late, wrong],
                                           ("uniform40", "base"): [{"flags": {"method": "base"}}]})
    rows = {int(r.split("|")[3]): r.split("|")[4:7] for r in md.splitlines()
            if r.startswith("| uniform40 | gdw |")}
    assert sorted(rows) == [1, 2, 4, 6, 8, 10]  # 10%, 20%, 40%, ... of 10 epochs
    assert rows[4][0].strip() == "0.000 ± 0.000" and rows[4][2].strip() == "1 of 2"
    assert rows[8][0].strip() == "0.500 ± 0.500" and rows[8][2].strip() == "1 of 2"
    assert rows[10][1].strip() == "0.900 ± 0.000" and rows[10][2].strip() == "2 of 2"
    assert "| base |" not in md
    assert accuracy.schedule_report(config, {("uniform40", "base"): [None]}) == ""


def test_the_check_report_counts_agreement_with_the_truth(tmp_path):
    def run(check, clean, noisy, issues):
        return {"flags": {"method": "gdw"}, "weight_check": {"fit_auc": check},
                "label_issues": {"auc": issues, "auc_by_signal": {"probability": issues}},
                "target_weight_histograms": {"edges": [0, 1, 2],
                                             "by_epoch": {"0": {"clean": clean, "noisy": noisy}}}}
    results = {("flip40", "gdw"): [run(0.9, [0, 5], [5, 0], 0.8),    # trusted, separating
                                   run(0.2, [5, 0], [0, 5], 0.7),    # not trusted, inverted
                                   run(0.7, [5, 0], [0, 5], 0.6)],   # trusted, inverted
               ("flip40", "base"): [{"flags": {"method": "base"}}]}
    table = accuracy.check_report(results)
    assert "| 3 | 1 | 1 | 0 | 1 |" in table and table.endswith("| 0.600 |")
    assert accuracy.check_report({("flip40", "base"): [{"flags": {"method": "base"}}]}) == ""
    config = parse(f"--output_dir={tmp_path}", "--settings=flip40", "--report_only")
    assert os.path.exists(accuracy.check_figure(config, results))


def test_runs_made_before_auc_by_signal_get_the_reports_signal_from_their_csv(tmp_path):
    """Their results.json `auc` ranked by the weights; the table's column must not mix it in."""
    with open(tmp_path / "label_issues.csv", "w") as f:
        f.write("index,path,given_label,suggested_label,score,rank,true_label,given_probability\n"
                "0,,1,0,1.0,1,0,0.9\n1,,1,1,0.5,2,1,0.2\n2,,0,0,0.0,3,1,0.5\n3,,2,2,0.3,4,2,0.8\n")
    run = {"output_dir": str(tmp_path), "label_issues": {"auc": 0.99, "csv": "label_issues.csv"}}
    # noisy: rows 0 and 2 (p 0.9, 0.5); clean: rows 1 and 3 (p 0.2, 0.8): 1 of 4 pairs ranked right
    assert accuracy._run_values(run, "issues") == pytest.approx(0.25)
    # no CSV: unknown
    assert accuracy._run_values({"label_issues": {"auc": 0.99}}, "issues") is None


def test_the_benches_launch_children_with_silenced_logs_and_shared_cores(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(bench.subprocess, "run", lambda cmd, env, **kwargs: seen.append((cmd, env)))
    monkeypatch.setattr(bench.os, "cpu_count", lambda: 8)
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    bench.run_module("gdw_tf.train", ["--seed=1"])
    bench.run_module("gdw_tf.train", ["--seed=2"], jobs=3)
    (cmd, alone), (_, shared) = seen
    assert cmd[1:] == ["-m", "gdw_tf.train", "--seed=1"] and alone["TF_CPP_MIN_LOG_LEVEL"] == "2"
    assert "TF_NUM_INTRAOP_THREADS" not in alone
    assert shared["TF_NUM_INTRAOP_THREADS"] == shared["TF_NUM_INTEROP_THREADS"] == "2"
    assert capsys.readouterr().out == ""  # without an output directory, nothing is printed


def test_a_launched_child_that_fails_is_reported_with_its_stderr(capsys):
    proc = bench.run_module("gdw_tf.no_such_module", [], out="somewhere")
    assert proc.returncode != 0
    printed = capsys.readouterr()
    assert printed.out.startswith("running: -m gdw_tf.no_such_module")
    assert "FAILED (somewhere):" in printed.err and "No module named" in printed.err


def test_cifar10n_settings_train_on_the_human_labels_with_a_clean_meta_set_by_truth():
    args = parse("--settings=cifar10n_worst,cifar10n_random1_meta2pct,cifar10n_aggre_auto",
                 "--cifar10n_dir=labels")
    flags = {s: dict(f[2:].partition("=")[::2] for f in accuracy.protocol_flags(args, s))
             for s in args.settings}
    worst, random1, aggre = (flags[s] for s in args.settings)
    assert worst["labels"] == os.path.join("labels", "labels_worst.csv")
    assert random1["labels"] == os.path.join("labels", "labels_random1.csv")
    assert aggre["labels"] == os.path.join("labels", "labels_aggre.csv")
    assert worst["meta_source"] == random1["meta_source"] == "truth"
    assert aggre["meta_source"] == "auto"
    assert worst["num_meta"] == aggre["num_meta"] == "1000" and random1["num_meta"] == "200"
    for f in flags.values():
        assert "noise_type" not in f and f["train_per_class"] == "1000" and f["epochs"] == "40"
        assert f["model"] == "strided_cnn" and f["dataset"] == "folder"
    assert "labels" not in dict(f[2:].partition("=")[::2]
                                for f in accuracy.protocol_flags(args, "uniform40"))
    assert not set(parse().settings) & set(flags)          # on request only
    memorise = parse("--protocol=cpu_memorise", "--settings=cifar10n_worst")
    assert "--augment=none" in accuracy.protocol_flags(memorise, "cifar10n_worst")
