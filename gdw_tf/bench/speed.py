"""Per-iteration cost of each method, and of each pass of one GDW iteration.

  python -m gdw_tf.bench.speed                         # base, mwnet, gdw on ResNet-32, batch 100
  python -m gdw_tf.bench.speed --methods=all --jit     # every registered method, XLA on
  python -m gdw_tf.bench.speed --model=resnet18 --image_size=224 --num_classes=14 \
      --batch_size=16 --memory_batches=8,16            # the Clothing1M setting, memory per example
  python -m gdw_tf.bench.speed --methods=gdw --method_option=meta_interval=3   # opt-in fast GDW
  python -m gdw_tf.bench.speed --methods=gdw,gdw@meta_interval=4,gdw@virtual_scope=head
                                                       # exact and fast GDW side by side
  python -m gdw_tf.bench.speed --methods=base,base@record_examples=50000
                                                       # the label-issue record's cost
  python -m gdw_tf.bench.speed --model=keras:EfficientNetV2B0 --image_size=96 --batch_size=16 \
      --methods=gdw,gdw@virtual_scope=8                # any keras.applications backbone

All methods are built in one process and timed round-robin, one iteration
each per round, so that load from other processes hits them alike; inputs are
CIFAR-shaped synthetic batches, the whole train step is one traced function
(`model.train_function`, as under `model.fit`), timed after warm-up.
A method with meta_interval=k is timed over whole cycles of k steps (one
bi-level step and k - 1 plain-cost ones) and its time per iteration is the
cycle's time / k (amortised); other methods have cycles of one step. Reports
median, 10th/90th percentile over cycles and the ratio to `base` of the same
run, and names a method with meta steps whose ratio is not in (1, 20)
(`unexpected_costs`). `--method_option=key=value` (repeatable) goes to every method but `base`; a
--methods entry NAME@key=value[@key=value] is method NAME with those options on
top (as in the accuracy bench), so variants are timed in one round-robin. Peak memory is measured
per method in a process of its own (process RSS on CPU, TensorFlow's
allocator peak on GPU). --memory_batches measures it at several batch sizes
(training and meta batch alike) and fits peak = fixed + per_example * batch,
which projects the memory of larger batches (docs/clothing1m.md, "Memory plan").
"""
if __name__ == "__main__":  # before anything loads TensorFlow: no start-up log lines
    from gdw_tf import tf_startup
    tf_startup.quiet()

import dataclasses
import json
import os
import resource
import sys
import time

import numpy as np
from absl import flags

from gdw_tf import bench, flag_parser

FLAGS = flags.FlagValues()  # the bench's own flags (the trainer's are the global FLAGS)
flags.DEFINE_list("methods", ["base", "mwnet", "gdw"], "Method names (or NAME@key=value"
                  "[@key=value] variants), or 'all' (base is always "
                  "timed: the ratios are to it).", flag_values=FLAGS)
flags.DEFINE_string("model", "resnet32", "Backbone (gdw_tf.models).", flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 100, "Training batch (the meta batch is as large).",
                     lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("num_classes", 10, "Classes.", lower_bound=2, flag_values=FLAGS)
flags.DEFINE_integer("image_size", None, "Square input size (default: the model's own, e.g. 224 "
                     "for resnet18).", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_list("memory_batches", None, "Batch sizes at which to measure peak memory and fit "
                  "the memory per example (default: --batch_size only).", flag_values=FLAGS)
flags.DEFINE_multi_string("method_option", [], "key=value option for every method but base "
                          "(repeatable), e.g. meta_interval=3.", flag_values=FLAGS)
flags.DEFINE_integer("iters", 20, "Timed cycles (of meta_interval steps; one step for most "
                     "methods).", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("warmup", 3, "Untimed cycles first.", lower_bound=0, flag_values=FLAGS)
flags.DEFINE_bool("jit", False, "XLA-compile the step.", flag_values=FLAGS)
flags.DEFINE_bool("mixed_precision", False, "bfloat16 compute.", flag_values=FLAGS)
flags.DEFINE_bool("breakdown", False, "Also time GDW's passes.", flag_values=FLAGS)
flags.DEFINE_string("output", None, "Write the results as JSON here (and as markdown beside it, "
                    ".md).", flag_values=FLAGS)
flags.DEFINE_string("single", None, "Internal: measure this method's peak memory in this process "
                    "and print it as JSON.", flag_values=FLAGS)


@dataclasses.dataclass(frozen=True)
class SpeedConfig:
    """The benchmark's flags, checked; `methods` has base (added first if missing) and 'all'
    expanded."""
    methods: tuple[str, ...]
    model: str
    batch_size: int
    num_classes: int
    image_size: int | None
    memory_batches: tuple[int, ...]  # at least (batch_size,)
    method_options: tuple[str, ...]  # key=value, for every method but base
    iters: int
    warmup: int
    jit: bool
    mixed_precision: bool
    breakdown: bool
    output: str | None
    single: str | None


def _config_from_flags(values):
    from gdw_tf.methods import available_methods

    methods = available_methods() if values.methods == ["all"] else values.methods
    for entry in methods:
        bench.check_method_entry(entry)
    for option in values.method_option:
        if "=" not in option:
            raise flags.ValidationError(f"--method_option={option} must look like key=value")
    return SpeedConfig(
        methods=tuple(methods if "base" in methods else ["base", *methods]), model=values.model,
        batch_size=values.batch_size, num_classes=values.num_classes,
        image_size=values.image_size,
        memory_batches=bench.int_list(values, "memory_batches") or (values.batch_size,),
        method_options=tuple(values.method_option), iters=values.iters, warmup=values.warmup,
        jit=values.jit, mixed_precision=values.mixed_precision, breakdown=values.breakdown,
        output=values.output, single=values.single)


def parse_config(argv):
    """SpeedConfig from command-line `argv` (argv[0]: the program); exits on bad flags."""
    return flag_parser.parse(argv, FLAGS, _config_from_flags, "gdw_tf.bench.speed", __doc__)


# --methods entry options that are GDWModel's, not the method's: NAME@record_examples=N times
# the step with the per-example label-issue record of N examples.
MODEL_OPTIONS = ("record_examples",)


def _setup(config, method):
    import keras
    import tensorflow as tf

    import gdw_tf
    from gdw_tf.config import parse_method_options
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    keras.utils.set_random_seed(0)
    spec = gdw_tf.models.get_model_spec(config.model)
    shape = spec.default_input_shape
    if config.image_size:
        shape = (config.image_size, config.image_size, shape[-1])
    backbone = gdw_tf.models.build(config.model, config.num_classes, input_shape=shape)
    # What the trainer derives from the data, for a CIFAR-sized noisy training set.
    options = {"insw": {"num_train": 50000}, "soft_label": {"num_train": 50000},
               "gen_label": {"num_train": 50000},
               "coteaching": {"forget_rate": 0.4, "steps_per_epoch": 500},
               "class_balanced": {"class_counts": [5000] * config.num_classes}}
    name, variant = bench.method_variant(method)
    options = dict(options.get(name, {}))
    if name != "base":
        options.update(parse_method_options(config.method_options))
    options.update(parse_method_options(variant))
    record = {key: options.pop(key) for key in MODEL_OPTIONS if key in options}
    model = gdw_tf.GDWModel(backbone, config.num_classes, method=name, **record, **options)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), metrics=["accuracy"],
                  jit_compile=config.jit)
    rng = np.random.default_rng(0)
    n = config.batch_size
    data = {"image": tf.constant(rng.normal(size=(n, *shape)), tf.float32),
            "label": tf.constant(rng.integers(0, config.num_classes, n), tf.int32),
            "true_label": tf.constant(rng.integers(0, config.num_classes, n), tf.int32),
            "index": tf.constant(rng.permutation(n), tf.int32)}
    if model.method.needs_meta:
        data["meta_image"] = tf.constant(rng.normal(size=(n, *shape)), tf.float32)
        data["meta_label"] = tf.constant(rng.integers(0, config.num_classes, n), tf.int32)
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
    def step():
        return float(model.train_function(iter([data]))["loss"])

    return step, getattr(model.method, "meta_interval", 1)


def peak_memory(config, method):
    """Peak memory (MB) of a process that builds `method` and runs two cycles."""
    model, data = _setup(config, method)
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


def time_methods(config, methods):
    """Round-robin timing of every method's train step in this process."""
    steps, needs_meta = {}, {}
    for method in methods:
        model, data = _setup(config, method)
        steps[method] = _train_step(model, data)
        needs_meta[method] = model.method.needs_meta
        if config.breakdown and method == "gdw":
            breakdown_result = breakdown(config, model, data)
    times = time_cycles(steps, config.iters, warmup=config.warmup)
    results = {method: {**_stats(t), "meta_interval": steps[method][1],
                        "needs_meta": needs_meta[method]} for method, t in times.items()}
    if config.breakdown and "gdw" in results:
        results["gdw"]["breakdown"] = breakdown_result
    return results


def breakdown(config, model, data):
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

    fns = {stop: tf.function(lambda stop=stop: passes(stop), jit_compile=config.jit)
           for stop in ("forward", "virtual_backward", "meta_forward", "second_order_backward")}
    fns["full_step"] = tf.function(lambda: model.train_step(data)["loss"], jit_compile=config.jit)
    for fn in fns.values():  # trace and warm up
        float(fn())
    times = {stop: [] for stop in fns}
    for _ in range(config.iters):  # round-robin, as for the methods
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


def weighted_layers(config) -> int:
    """How many layers of the backbone have trainable weights (what virtual_scope counts)."""
    import gdw_tf

    spec = gdw_tf.models.get_model_spec(config.model)
    shape = spec.default_input_shape
    if config.image_size:
        shape = (config.image_size, config.image_size, shape[-1])
    backbone = gdw_tf.models.build(config.model, config.num_classes, input_shape=shape)
    return sum(bool(layer.trainable_weights) for layer in backbone.layers)


# A method with meta steps costs more per iteration than base and less than this many base
# iterations (the cost tables of docs/performance.md); a ratio outside is reported.
META_COST_LIMIT = 20.0


def unexpected_costs(results):
    """One line per method with meta steps whose median time per iteration, relative to
    base's in `results` (method -> timing stats, as `time_methods` gives), is outside
    (1, META_COST_LIMIT): a machine busy with other work while it was timed, or a regression."""
    base = results["base"]["median_s"]
    lines = []
    for method, r in results.items():
        ratio = r["median_s"] / base if "median_s" in r else None
        if r.get("needs_meta") and not 1.0 < ratio < META_COST_LIMIT:
            lines.append(f"unexpected: {method} costs x{ratio:.2f} base per iteration, outside "
                         f"(1, {META_COST_LIMIT:g}) for a method with meta steps: a busy machine "
                         "or a regression")
    return lines


def _device():
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    return f"CPU ({os.cpu_count()} cores)"


def _memory_argv(config, method, batch):
    """Flags of the process that measures `method`'s peak memory at `batch`."""
    return [f"--single={method}", f"--batch_size={batch}", f"--model={config.model}",
            f"--num_classes={config.num_classes}",
            *([f"--image_size={config.image_size}"] if config.image_size else []),
            *(f"--method_option={option}" for option in config.method_options),
            "--jit" if config.jit else "--nojit",
            "--mixed_precision" if config.mixed_precision else "--nomixed_precision"]


def main(argv):
    """`python -m gdw_tf.bench.speed FLAGS`: prints the tables (and writes --output)."""
    config = parse_config(argv)
    if config.single:
        print(json.dumps(peak_memory(config, config.single)))
        return
    methods, batches = config.methods, config.memory_batches
    results = {}
    for method in methods:  # a method that cannot be built is reported, not fatal
        results[method] = {"peak_memory_mb_by_batch": {}}
        for batch in batches:
            proc = bench.run_module("gdw_tf.bench.speed", _memory_argv(config, method, batch))
            if proc.returncode != 0:
                results[method] = {"error": proc.stderr.strip().splitlines()[-1][:300]}
                break
            peak = json.loads(proc.stdout.strip().splitlines()[-1])["peak_memory_mb"]
            results[method]["peak_memory_mb_by_batch"][batch] = peak
        if "error" not in results[method]:
            results[method].update(memory_fit(results[method]["peak_memory_mb_by_batch"]))
            results[method]["peak_memory_mb"] = results[method]["peak_memory_mb_by_batch"].get(
                config.batch_size, max(results[method]["peak_memory_mb_by_batch"].values()))
    timed = time_methods(config, [m for m in methods if "error" not in results[m]])
    for method, stats in timed.items():
        results[method].update(stats)
    base = results["base"].get("median_s")
    layers = weighted_layers(config)
    report = {"device": _device(), "model": config.model, "batch_size": config.batch_size,
              "image_size": config.image_size, "num_classes": config.num_classes,
              "layers_with_trainable_weights": layers,
              "jit_compile": config.jit, "mixed_precision": config.mixed_precision,
              "method_options": list(config.method_options), "methods": results}
    size = f" at {config.image_size}x{config.image_size}" if config.image_size else ""
    lines = [f"{config.model}{size} ({layers} layers with trainable weights), "
             f"{config.num_classes} classes, batch {config.batch_size} "
             f"(and a meta batch as large), {report['device']}, "
             f"jit_compile={config.jit}, mixed_precision={config.mixed_precision}"
             + (f", method options (all but base): {', '.join(config.method_options)}; "
                "s/iter amortised over cycles of meta_interval steps"
                if config.method_options else ""), "",
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
        lines += [f"| {m} | "
                  + ", ".join(f"{b}: {v:.0f}" for b, v in r["peak_memory_mb_by_batch"].items())
                  + f" | {r['memory_fixed_mb']:.0f} | {r['memory_per_example_mb']:.1f} |"
                  for m, r in fitted.items()]
    report["unexpected_costs"] = unexpected_costs(results)
    if report["unexpected_costs"]:
        lines += ["", *report["unexpected_costs"]]
    gdw = results.get("gdw", {})
    if "breakdown" in gdw:
        lines += ["", "| GDW pass | seconds |", "| --- | --- |"]
        lines += [f"| {name} | {sec:.3f} |" for name, sec in gdw["breakdown"]["pass_s"].items()]
    print("\n" + "\n".join(lines))
    if config.output:  # the JSON, and the same tables as markdown beside it
        with open(config.output, "w") as f:
            json.dump(report, f, indent=2)
        with open(os.path.splitext(config.output)[0] + ".md", "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv)
