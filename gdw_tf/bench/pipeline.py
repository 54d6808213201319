"""Input-pipeline throughput: examples/second of `bundle.train`.

    python -m gdw_tf.bench.pipeline --data_dir=/work/shared/data/cifar10-jpeg

Builds the dataset (decoding and caching the images on the first run), then
times full passes over bundle.train after a warm-up pass, and prints
examples/second. Each pass is one epoch: shuffle, gather, augment, batch.
"""
from __future__ import annotations

import argparse
import json
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="folder", help="dataset name (gdw_tf.data.available_datasets())")
    p.add_argument("--data_dir", default="/work/shared/data/cifar10-jpeg")
    p.add_argument("--manual_dir", default=None)
    p.add_argument("--cache_dir", default=None)
    p.add_argument("--augment", default="cifar")
    p.add_argument("--batch_size", type=int, default=100)
    p.add_argument("--noise_type", default="uniform")
    p.add_argument("--noise_rate", type=float, default=0.4)
    p.add_argument("--passes", type=int, default=2, help="timed epochs after one warm-up epoch")
    p.add_argument("--max_steps", type=int, default=0, help="cap steps per pass (0: full epoch)")
    return p.parse_args(argv)


def time_pass(dataset, max_steps: int = 0) -> tuple[int, float]:
    """Iterates one pass (at most max_steps batches); returns (examples, seconds)."""
    n, start = 0, time.perf_counter()
    for step, batch in enumerate(dataset):
        n += int(batch["label"].shape[0])
        if max_steps and step + 1 >= max_steps:
            break
    return n, time.perf_counter() - start


def main(argv=None) -> dict:
    args = parse_args(argv)
    from gdw_tf.data import build

    start = time.perf_counter()
    bundle = build(args.dataset, data_dir=args.data_dir, manual_dir=args.manual_dir, cache_dir=args.cache_dir,
                   augment=args.augment, batch_size=args.batch_size, noise_type=args.noise_type,
                   noise_rate=args.noise_rate)
    build_s = time.perf_counter() - start
    warm_n, warm_s = time_pass(bundle.train, args.max_steps)
    rates = []
    for _ in range(args.passes):
        n, s = time_pass(bundle.train, args.max_steps)
        rates.append(n / s)
    result = {
        "dataset": args.dataset, "augment": bundle.augment, "batch_size": args.batch_size,
        "num_train": bundle.num_train, "build_seconds": round(build_s, 2),
        "warmup_examples_per_second": round(warm_n / warm_s, 1),
        "examples_per_second": [round(r, 1) for r in rates],
    }
    print(json.dumps(result))
    print(f"bundle.train: {max(rates):,.0f} examples/s (best of {args.passes} passes, batch {args.batch_size})")
    return result


if __name__ == "__main__":
    main()
