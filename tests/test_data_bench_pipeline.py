"""The pipeline benchmark runs end to end (on digits, so no data files are needed)."""
import pytest

from gdw_tf.bench import pipeline


def test_bench_reports_examples_per_second(capsys):
    result = pipeline.main(["pipeline", "--dataset=digits", "--augment=none", "--noise_type=none",
                            "--noise_rate=0", "--passes=1", "--batch_size=50"])
    assert result["examples_per_second"][0] > 0 and result["num_train"] == 1252
    assert "examples/s" in capsys.readouterr().out


def test_a_bad_flag_is_one_line_and_exit_status_2(capsys):
    with pytest.raises(SystemExit) as error:
        pipeline.main(["pipeline", "--passes=0"])
    assert error.value.code == 2
    assert capsys.readouterr().err == (
        "gdw_tf.bench.pipeline: error: flag --passes=0: 0 is not a positive integer\n")
