"""Per-iteration cost of each method, and of each pass of one GDW iteration.

  python -m gdw_tf.bench.speed                         # base, mwnet, gdw on ResNet-32, batch 100
  python -m gdw_tf.bench.speed --methods=all --jit     # every registered method, XLA on
  python -m gdw_tf.bench.speed --model=resnet18 --image_size=224 --num_classes=14 \
      --batch_size=16 --memory_batches=8,16            # the Clothing1M setting, memory per example
  python -m gdw_tf.bench.speed --methods=gdw --method_option=meta_interval=3   # opt-in fast GDW

All methods are built in one process and timed round-robin, one iteration
each per round, so that load from other processes hits them alike; inputs are
CIFAR-shaped synthetic batches, the whole train step is one traced function
(`model.train_function`, as under `model.fit`), timed after warm-up.
A method with meta_interval=k is timed over whole cycles of k steps (one
bi-level step and k - 1 plain-cost ones) and its time per iteration is the
cycle's time / k (amortised); other methods have cycles of one step. Reports
median, 10th/90th percentile over cycles and the ratio to `base` of the same
run. `--method_option=key=value` (repeatable) goes to every method but `base`. Peak memory is measured
per method in a process of its own (process RSS on CPU, TensorFlow's
allocator peak on GPU). --memory_batches measures it at several batch sizes
(training and meta batch alike) and fits peak = fixed + per_example * batch,
which projects the memory of larger batches (see the README's memory plan).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="base,mwnet,gdw",
                   help="comma-separated method names, or 'all'")
    p.add_argument("--model", default="resnet32")
    p.add_argument("--batch_size", type=int, default=100)
    p.add_argument("--num_classes", type=int, default=10)
    p.add_argument("--image_size", type=int, default=None,
                   help="square input size (default: the model's own, e.g. 224 for resnet18)")
    p.add_argument("--memory_batches", default=None,
                   help="comma-separated batch sizes at which to measure peak memory and fit "
                        "the memory per example (default: --batch_size only)")
    p.add_argument("--method_option", action="append", default=[],
                   help="key=value option for every method but base (repeatable), "
                        "e.g. meta_interval=3")
    p.add_argument("--iters", type=int, default=20,
                   help="timed cycles (of meta_interval steps; one step for most methods)")
    p.add_argument("--warmup", type=int, default=3, help="untimed cycles first")
    p.add_argument("--jit", action="store_true", help="XLA-compile the step")
    p.add_argument("--mixed_precision", action="store_true", help="bfloat16 compute")
    p.add_argument("--breakdown", action="store_true", help="also time GDW's passes")
    p.add_argument("--output", default=None,
                   help="write the results as JSON here (and as markdown beside it, .md)")
    p.add_argument("--single", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _setup(args, method):
    import keras
    import tensorflow as tf

    import gdw_tf
    from gdw_tf.train import parse_method_options
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    keras.utils.set_random_seed(0)
    spec = gdw_tf.models.get_model_spec(args.model)
    shape = spec.default_input_shape
    if args.image_size:
        shape = (args.image_size, args.image_size, shape[-1])
    backbone = gdw_tf.models.build(args.model, args.num_classes, input_shape=shape)
    # What the trainer derives from the data, for a CIFAR-sized noisy training set.
    options = {"insw": {"num_train": 50000}, "soft_label": {"num_train": 50000},
               "gen_label": {"num_train": 50000},
               "coteaching": {"forget_rate": 0.4, "steps_per_epoch": 500},
               "class_balanced": {"class_counts": [5000] * args.num_classes}}.get(method, {})
    if method != "base":
        options.update(parse_method_options(args.method_option))
    model = gdw_tf.GDWModel(backbone, args.num_classes, method=method, **options)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), metrics=["accuracy"],
                  jit_compile=args.jit)
    rng = np.random.default_rng(0)
    n = args.batch_size
    data = {"image": tf.constant(rng.normal(size=(n, *shape)), tf.float32),
            "label": tf.constant(rng.integers(0, args.num_classes, n), tf.int32),
            "true_label": tf.constant(rng.integers(0, args.num_classes, n), tf.int32),
            "index": tf.constant(rng.permutation(n), tf.int32)}
    if model.method.needs_meta:
        data["meta_image"] = tf.constant(rng.normal(size=(n, *shape)), tf.float32)
        data["meta_label"] = tf.constant(rng.integers(0, args.num_classes, n), tf.int32)
    return model, data


def _peak_memory_mb():
    import tensorflow as tf
    if tf.config.list_physical_devices("GPU"):
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_fit(peak_by_batch: dict[int, float]) -> dict:
    """Least-squares peak = fixed + per_example * batch over the measured batches (MB)."""
    if len(peak_by_batch) < 2:
        return {}
    b = np.array(list(peak_by_batch), float)
    per_example, fixed = np.polyfit(b, np.array(list(peak_by_batch.values()), float), 1)
    return {"memory_per_example_mb": float(per_example), "memory_fixed_mb": float(fixed)}


def _stats(times):
    t = np.asarray(times)
    return {"median_s": float(np.median(t)), "p10_s": float(np.percentile(t, 10)),
            "p90_s": float(np.percentile(t, 90)), "iters": len(t)}


def _train_step(model, data):
    """(step, cycle): `step()` runs one training step as `fit` does (both kinds
    of step under meta_interval); `cycle` = meta_interval, 1 for most methods."""
    model.make_train_function()
    step = lambda: float(model.train_function(iter([data]))["loss"])
    return step, getattr(model.method, "meta_interval", 1)


def peak_memory(args, method):
    """Peak memory (MB) of a process that builds `method` and runs two cycles."""
    model, data = _setup(args, method)
    step, cycle = _train_step(model, data)
    for _ in range(2 * cycle):
        step()
    return {"peak_memory_mb": _peak_memory_mb()}


def time_cycles(steps, iters, warmup=0):
    """Round-robin amortised timing: {name: (step, cycle)} -> {name: [s/iter]}.

    Each round runs one whole cycle (`cycle` calls of `step`) per name; the
    entry is the cycle's time / cycle. `warmup` untimed cycles come first.
    """
    for step, cycle in steps.values():
        for _ in range(warmup * cycle):
            step()
    times = {name: [] for name in steps}
    for _ in range(iters):
        for name, (step, cycle) in steps.items():
            start = time.perf_counter()
            for _ in range(cycle):
                step()
            times[name].append((time.perf_counter() - start) / cycle)
    return times


def time_methods(args, methods):
    """Round-robin timing of every method's train step in this process."""
    steps = {}
    for method in methods:
        model, data = _setup(args, method)
        steps[method] = _train_step(model, data)
        if args.breakdown and method == "gdw":
            breakdown_result = breakdown(args, model, data)
    times = time_cycles(steps, args.iters, warmup=args.warmup)
    results = {method: {**_stats(t), "meta_interval": steps[method][1]}
               for method, t in times.items()}
    if args.breakdown and "gdw" in results:
        results["gdw"]["breakdown"] = breakdown_result
    return results


def breakdown(args, model, data):
    """Cumulative timings of one GDW iteration cut after each pass."""
    import tensorflow as tf

    from gdw_tf.losses import class_weighted_cross_entropy, cross_entropy
    method, backbone = model.method, model.backbone
    theta = backbone.trainable_variables
    phi = method.weighting_net.trainable_variables
    x, y = data["image"], data["label"]

    def passes(stop):
        with tf.GradientTape(watch_accessed_variables=False) as outer:
            outer.watch([v.value for v in phi])
            with tf.GradientTape(persistent=True) as inner:
                logits = tf.cast(backbone(x, training=True), tf.float32)
                state = method.first_stage(logits, data)
                loss = tf.reduce_mean(class_weighted_cross_entropy(y, logits, state.weights))
            if stop == "forward":
                return loss
            grads = inner.gradient(loss, theta)
            theta_hat = [v - 0.1 * g for v, g in zip(theta, grads)]
            if stop == "virtual_backward":
                return tf.add_n([tf.reduce_sum(t) for t in theta_hat])
            meta_logits, _ = backbone.stateless_call(
                theta_hat, backbone.non_trainable_variables, data["meta_image"], training=True)
            meta_loss = tf.reduce_mean(cross_entropy(data["meta_label"], meta_logits))
        if stop == "meta_forward":
            return meta_loss
        g_phi, g_omega = outer.gradient(meta_loss, [phi, state.weights])
        return tf.add_n([tf.reduce_sum(g) for g in g_phi]) + tf.reduce_sum(g_omega)

    fns = {stop: tf.function(lambda stop=stop: passes(stop), jit_compile=args.jit)
           for stop in ("forward", "virtual_backward", "meta_forward", "second_order_backward")}
    fns["full_step"] = tf.function(lambda: model.train_step(data)["loss"], jit_compile=args.jit)
    for fn in fns.values():  # trace and warm up
        float(fn())
    times = {stop: [] for stop in fns}
    for _ in range(args.iters):  # round-robin, as for the methods
        for stop, fn in fns.items():
            start = time.perf_counter()
            float(fn())
            times[stop].append(time.perf_counter() - start)
    cumulative = {stop: float(np.median(t)) for stop, t in times.items()}
    names = list(cumulative)
    parts = {names[0]: cumulative[names[0]]}
    for prev, name in zip(names, names[1:]):
        parts["final_backward_and_updates" if name == "full_step" else name] = (
            cumulative[name] - cumulative[prev])
    return {"cumulative_s": cumulative, "pass_s": parts}


def _device():
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    return f"CPU ({os.cpu_count()} cores)"


def main(argv=None):
    args = _parse(argv)
    if args.single:
        print(json.dumps(peak_memory(args, args.single)))
        return
    from gdw_tf.methods import available_methods
    methods = available_methods() if args.methods == "all" else args.methods.split(",")
    if "base" not in methods:
        methods = ["base", *methods]
    passthrough = [a for a in (argv or sys.argv[1:]) if not a.startswith(("--methods", "--output",
                                                                           "--batch_size"))]
    batches = ([int(b) for b in args.memory_batches.split(",")] if args.memory_batches
               else [args.batch_size])
    results = {}
    for method in methods:  # a method that cannot be built is reported, not fatal
        results[method] = {"peak_memory_mb_by_batch": {}}
        for batch in batches:
            proc = subprocess.run([sys.executable, "-m", "gdw_tf.bench.speed", f"--single={method}",
                                   f"--batch_size={batch}", *passthrough], capture_output=True,
                                  text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
            if proc.returncode != 0:
                results[method] = {"error": proc.stderr.strip().splitlines()[-1][:300]}
                break
            peak = json.loads(proc.stdout.strip().splitlines()[-1])["peak_memory_mb"]
            results[method]["peak_memory_mb_by_batch"][batch] = peak
        if "error" not in results[method]:
            results[method].update(memory_fit(results[method]["peak_memory_mb_by_batch"]))
            results[method]["peak_memory_mb"] = results[method]["peak_memory_mb_by_batch"].get(
                args.batch_size, max(results[method]["peak_memory_mb_by_batch"].values()))
    timed = time_methods(args, [m for m in methods if "error" not in results[m]])
    for method, stats in timed.items():
        results[method].update(stats)
    base = results["base"].get("median_s")
    report = {"device": _device(), "model": args.model, "batch_size": args.batch_size,
              "image_size": args.image_size, "num_classes": args.num_classes,
              "jit_compile": args.jit, "mixed_precision": args.mixed_precision,
              "method_options": args.method_option, "methods": results}
    size = f" at {args.image_size}x{args.image_size}" if args.image_size else ""
    lines = [f"{args.model}{size}, {args.num_classes} classes, batch {args.batch_size} "
             f"(and a meta batch as large), {report['device']}, "
             f"jit_compile={args.jit}, mixed_precision={args.mixed_precision}"
             + (f", method options (all but base): {', '.join(args.method_option)}; "
                "s/iter amortised over cycles of meta_interval steps"
                if args.method_option else ""), "",
             "| method | median s/iter | p10-p90 | x base | peak memory (MB) |",
             "| --- | --- | --- | --- | --- |"]
    for method, r in results.items():
        if "error" in r:
            lines.append(f"| {method} | failed: {r['error']} | | | |")
            continue
        lines.append(f"| {method} | {r['median_s']:.3f} | {r['p10_s']:.3f}-{r['p90_s']:.3f} | "
                     f"{r['median_s'] / base:.2f} | {r['peak_memory_mb']:.0f} |")
    fitted = {m: r for m, r in results.items() if "memory_per_example_mb" in r}
    if fitted:
        lines += ["", "| method | peak memory (MB) by batch | fixed (MB) | per example (MB) |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {m} | " + ", ".join(f"{b}: {v:.0f}" for b, v in r["peak_memory_mb_by_batch"].items())
                  + f" | {r['memory_fixed_mb']:.0f} | {r['memory_per_example_mb']:.1f} |"
                  for m, r in fitted.items()]
    gdw = results.get("gdw", {})
    if "breakdown" in gdw:
        lines += ["", "| GDW pass | seconds |", "| --- | --- |"]
        lines += [f"| {name} | {sec:.3f} |" for name, sec in gdw["breakdown"]["pass_s"].items()]
    print("\n" + "\n".join(lines))
    if args.output:  # the JSON, and the same tables as markdown beside it
        with open(args.output, "w") as f:
            json.dump(report, f, indent=2)
        with open(os.path.splitext(args.output)[0] + ".md", "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
