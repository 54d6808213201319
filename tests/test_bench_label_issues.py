"""The label-issue bench: its folds, its cross-validated probabilities and its table."""
import json
import os

import numpy as np
import pytest

from gdw_tf.bench import label_issues as bench
from tests.fixtures import write_image_folder


def _config(tmp_path, **changed):
    values = dict(settings=("uniform40",), seeds=(0,), folds=2, data_dir=str(tmp_path / "data"),
                  cifar10n_dir=str(tmp_path / "cifar10n"),
                  iterations=6, train_per_class=30, output_dir=str(tmp_path / "out"), jobs=1,
                  report_only=False)
    return bench.Config(**{**values, **changed})


def test_stratified_folds_split_every_given_class_evenly_and_repeat_by_seed():
    labels = np.repeat(np.arange(4), [10, 7, 5, 1])
    fold = bench.stratified_folds(labels, 3, seed=0)
    assert set(fold) <= {0, 1, 2}
    for c in range(4):
        per_fold = np.bincount(fold[labels == c], minlength=3)
        assert per_fold.max() - per_fold.min() <= 1
    assert (fold == bench.stratified_folds(labels, 3, seed=0)).all()
    assert (fold != bench.stratified_folds(labels, 3, seed=1)).any()


def test_cross_validation_predicts_every_training_example_once_and_is_reused(tmp_path):
    names = [f"c{i}" for i in range(10)]
    write_image_folder(str(tmp_path / "data"), names, {"train": [130] * 10, "test": [3] * 10},
                       size=(32, 32))
    config = _config(tmp_path)
    out = os.path.join(config.output_dir, "uniform40_cleanlab2fold_seed0")
    bench.cross_validate(config, "uniform40", 0, out)
    cv = bench.run_cross_validation(config, "uniform40", 0)  # reused, no process started
    assert cv["probs"].shape == (300, 10)
    np.testing.assert_allclose(cv["probs"].sum(axis=1), 1.0, rtol=1e-5)
    assert len(cv["labels"]) == len(cv["true_labels"]) == 300
    noisy = (cv["labels"] != cv["true_labels"]).mean()
    assert 0.2 < noisy < 0.6  # 40% uniform noise over 10 classes: 36% expected
    assert cv["wall_s"] > 0
    with pytest.raises(SystemExit, match="made with --epochs=2, the benchmark asks for --epochs=4"):
        bench.run_cross_validation(_config(tmp_path, iterations=12), "uniform40", 0)
    # A file of an older bench holds the argument list instead of every flag: still compared.
    from gdw_tf.bench import accuracy
    path = os.path.join(out, bench.CV_FILE)
    np.savez(path, **{**cv,
                      "flags": json.dumps(accuracy.run_flags(config, "uniform40", "base", 0))})
    assert bench.run_cross_validation(config, "uniform40", 0)["probs"].shape == (300, 10)
    with pytest.raises(SystemExit, match="made with --epochs=2, the benchmark asks for --epochs=4"):
        bench.run_cross_validation(_config(tmp_path, iterations=12), "uniform40", 0)


def test_cleanlab_ranks_planted_label_errors_first():
    pytest.importorskip("cleanlab",
                        reason="bench-only extra: pip install -r requirements-bench.txt")
    rng = np.random.default_rng(0)
    true = rng.integers(0, 4, 400)
    labels = true.copy()
    flipped = rng.random(400) < 0.25
    labels[flipped] = (true[flipped] + 1) % 4
    probs = np.full((400, 4), 0.05)
    probs[np.arange(400), true] = 0.85  # a model that learned the truth
    cv = {"labels": labels, "true_labels": true, "probs": probs, "wall_s": 10.0}
    row = bench.cleanlab_rows(cv)["cleanlab"]
    assert row.auc == pytest.approx(1.0) and row.precision_at_noise == pytest.approx(1.0)
    assert row.flagged_recall > 0.9 and row.flagged_precision > 0.9 and row.wall_s >= 10.0


def test_report_rows_score_the_report_the_weight_and_cleanlab_on_the_record(tmp_path):
    from gdw_tf import label_issues

    lines = ["index,path,given_label,suggested_label,score,rank,true_label,given_probability,"
             "weight_score,visits",
             "3,,1,0,0.2,1,0,0.8,0.9,1",   # noisy, confident in the given label
             "0,,0,0,0.9,2,0,0.1,0.0,1",
             "1,,2,1,0.95,3,1,0.05,1.0,1",  # noisy
             "2,,1,1,0.1,4,1,0.9,0.3,1"]
    (tmp_path / "label_issues.csv").write_text("\n".join(lines) + "\n")
    given = np.array([0, 2, 1, 1])
    np.save(tmp_path / label_issues.LABELS_FILE, given)
    probs = np.array([[0.9, 0.1, 0.0], [0.0, 0.95, 0.05], [0.1, 0.8, 0.1], [0.8, 0.2, 0.0]])
    np.save(tmp_path / label_issues.PRED_PROBS_FILE, probs)
    rows = bench.report_rows("gdw", {"wall_time_s": 7.0}, str(tmp_path))
    # the report's score: noisy {0.2, 0.95} vs clean {0.9, 0.1}: 3 of 4 pairs ordered
    assert rows["gdw"].auc == pytest.approx(0.75) and rows["gdw"].precision_at_noise == 0.5
    # weight alone: noisy {0.9, 1.0} vs clean {0.0, 0.3}: all 4
    assert rows["gdw, weight"].auc == pytest.approx(1.0)
    assert rows["gdw"].wall_s == 7.0
    # cleanlab on the arrays (by index): the noisy ones (p(given) 0.05, 0.2) below the clean
    cleanlab = rows["cleanlab on gdw's record"]
    assert cleanlab.auc == pytest.approx(1.0) and cleanlab.wall_s >= 7.0
    base = bench.report_rows("base", {"wall_time_s": 3.0}, str(tmp_path))
    assert set(base) == {"base", "cleanlab on base's record"}


def test_table_has_a_row_per_setting_and_detector(tmp_path):
    config = _config(tmp_path, seeds=(0, 1))
    row = bench.Row(0.9, 0.8, 120, 0.7, 0.6, 100.0)
    results = {("uniform40", 0): {"cleanlab": row,
                                  "gdw": bench.Row(0.8, 0.7, None, None, None, 50)},
               ("uniform40", 1): {"cleanlab": bench.Row(0.7, 0.6, 80, 0.5, 0.4, 300.0)}}
    md = bench.table(config, results)
    assert ("| uniform40 | cleanlab, K-fold cross-validation | 0.800 ± 0.100 | 0.700 ± 0.100 "
            "| 100 ± 20 / 0.600 ± 0.100 / 0.500 ± 0.100 | 200 ± 100 |") in md
    assert "| uniform40 | gdw (1/2 seeds) | 0.800 ± 0.000 | 0.700 ± 0.000 | - | 50 ± 0 |" in md
    assert "gdw, weight" not in md  # no run: no row
