"""The pipeline benchmark runs end to end (on digits, so no data files are needed)."""
from gdw_tf.bench import pipeline


def test_bench_reports_examples_per_second(capsys):
    result = pipeline.main(["--dataset=digits", "--augment=none", "--noise_type=none", "--noise_rate=0",
                            "--passes=1", "--batch_size=50"])
    assert result["examples_per_second"][0] > 0 and result["num_train"] == 1252
    assert "examples/s" in capsys.readouterr().out
