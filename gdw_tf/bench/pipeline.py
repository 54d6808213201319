"""Input-pipeline throughput: examples/second of `bundle.train`.

    python -m gdw_tf.bench.pipeline --data_dir=DIR   # DIR: e.g. a CIFAR-10 image folder

Builds the dataset (decoding and caching the images on the first run), then
times full passes over bundle.train after a warm-up pass, and prints
examples/second. Each pass is one epoch: shuffle, gather, augment, batch.
"""
from __future__ import annotations

if __name__ == "__main__":  # before anything loads TensorFlow: no start-up log lines
    from gdw_tf import tf_startup
    tf_startup.quiet()

import dataclasses
import json
import sys
import time

from absl import flags

from gdw_tf import flag_parser

FLAGS = flags.FlagValues()  # the bench's own flags (the trainer's are the global FLAGS)
flags.DEFINE_string("dataset", "folder", "Dataset name (gdw_tf.data.available_datasets()).",
                    flag_values=FLAGS)
flags.DEFINE_string("data_dir", None, "Dataset directory (--dataset=folder: the image folder).",
                    flag_values=FLAGS)
flags.DEFINE_string("manual_dir", None, "Clothing1M release directory.", flag_values=FLAGS)
flags.DEFINE_string("cache_dir", None, "Where decoded images are cached.", flag_values=FLAGS)
flags.DEFINE_string("augment", "cifar", "Augmentation recipe.", flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 100, "Batch size.", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_string("noise_type", "uniform", "Synthetic label noise.", flag_values=FLAGS)
flags.DEFINE_float("noise_rate", 0.4, "Label noise ratio.", lower_bound=0.0, upper_bound=1.0,
                   flag_values=FLAGS)
flags.DEFINE_integer("passes", 2, "Timed epochs after one warm-up epoch.", lower_bound=1,
                     flag_values=FLAGS)
flags.DEFINE_integer("max_steps", 0, "Cap steps per pass (0: full epoch).", lower_bound=0,
                     flag_values=FLAGS)


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """The benchmark's flags (what gdw_tf.data.build takes, and the timing)."""
    dataset: str
    data_dir: str
    manual_dir: str | None
    cache_dir: str | None
    augment: str
    batch_size: int
    noise_type: str
    noise_rate: float
    passes: int
    max_steps: int


def parse_config(argv):
    """PipelineConfig from command-line `argv` (argv[0]: the program); exits on bad flags."""
    return flag_parser.parse(argv, FLAGS, lambda values: PipelineConfig(
        **{field.name: values[field.name].value for field in dataclasses.fields(PipelineConfig)}),
        "gdw_tf.bench.pipeline", __doc__)


def time_pass(dataset, max_steps: int = 0) -> tuple[int, float]:
    """Iterates one pass (at most max_steps batches); returns (examples, seconds)."""
    n, start = 0, time.perf_counter()
    for step, batch in enumerate(dataset):
        n += int(batch["label"].shape[0])
        if max_steps and step + 1 >= max_steps:
            break
    return n, time.perf_counter() - start


def main(argv) -> dict:
    """`python -m gdw_tf.bench.pipeline FLAGS`: prints and returns the throughput."""
    config = parse_config(argv)
    from gdw_tf.data import build

    start = time.perf_counter()
    bundle = build(config.dataset, data_dir=config.data_dir, manual_dir=config.manual_dir,
                   cache_dir=config.cache_dir, augment=config.augment, batch_size=config.batch_size,
                   noise_type=config.noise_type, noise_rate=config.noise_rate)
    build_s = time.perf_counter() - start
    warm_n, warm_s = time_pass(bundle.train, config.max_steps)
    rates = []
    for _ in range(config.passes):
        n, s = time_pass(bundle.train, config.max_steps)
        rates.append(n / s)
    result = {
        "dataset": config.dataset, "augment": bundle.augment, "batch_size": config.batch_size,
        "num_train": bundle.num_train, "build_seconds": round(build_s, 2),
        "warmup_examples_per_second": round(warm_n / warm_s, 1),
        "examples_per_second": [round(r, 1) for r in rates],
    }
    print(json.dumps(result))
    print(f"bundle.train: {max(rates):,.0f} examples/s (best of {config.passes} passes, "
          f"batch {config.batch_size})")
    return result


if __name__ == "__main__":
    main(sys.argv)
