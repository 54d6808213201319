"""Train a classifier with GDW (or another method) from the command line.

  python -m gdw_tf.train                                   # GDW, digits, 40% uniform noise
  python -m gdw_tf.train --flagfile=flags/cifar10_uniform40.flags --method=mwnet
  python -m gdw_tf.train --dataset=clothing1m --strategy=mirrored --manual_dir=RELEASE

Everything goes to --output_dir (default runs/<dataset>_<noise>_<method>_seed<seed>):
checkpoints (the same command resumes a killed run, at its last epoch or
--checkpoint_steps step, and only with the same flags: flags.json), history.json,
log.csv, TensorBoard summaries, data_summary.json, results.json and PNG figures.
The directory is locked while a run uses it. Bad input and a diverging run end
with one line on stderr and exit status 2 (--traceback shows the traceback).
"""
import ast
import contextlib
import dataclasses
import os
import re
import sys
import time

from absl import app, logging

from gdw_tf import flags as gdw_flags  # noqa: F401  (defines the flags)
from gdw_tf import flag_parser, run_dir
from gdw_tf.flags import FLAGS

@dataclasses.dataclass(frozen=True)
class DatasetDefaults:
    """Values of the flags left unset, per --dataset.

    noise_type: synthetic noise ("none" for a dataset with real noise); its rate
    defaults to SYNTHETIC_NOISE_RATE, or 0 with "none". pretrained: the paper's
    setting starts `model` from pretrained weights (--init_weights).
    method_options: the paper's per-dataset values of method options, for the
    methods that take them, where neither a method flag nor --method_option sets them.
    """

    model: str
    lr: float
    epochs: int
    noise_type: str = "uniform"
    pretrained: bool = False
    method_options: dict = dataclasses.field(default_factory=dict)


SYNTHETIC_NOISE_RATE = 0.4
# digits runs 150 epochs (1,800 iterations): long enough for the weighting network to
# learn and for plain training to memorise the noisy labels, the regime GDW is for
# (README, "The embedded default").
DATASET_DEFAULTS = {"digits": DatasetDefaults("small_cnn", 0.05, 150),
                    "cifar10": DatasetDefaults("resnet32", 0.1, 80),
                    "cifar100": DatasetDefaults("resnet32", 0.1, 80,
                                                method_options={"outer_lr": 1000.0}),
                    "folder": DatasetDefaults("resnet32", 0.1, 30),
                    "clothing1m": DatasetDefaults("resnet18", 1e-3, 5, noise_type="none",
                                                  pretrained=True)}
OTHER_DATASET_DEFAULTS = DatasetDefaults("resnet32", 0.1, 30)
NO_INIT_WEIGHTS = "none"  # --init_weights=none: from scratch, on purpose


def settings_from_flags():
    """The run's configuration: every gdw_tf flag's value, as a plain dict."""
    return {flag.name: flag.value for flag in FLAGS.get_flags_for_module(gdw_flags)}


def flag_defaults():
    """Every gdw_tf flag's default, by name."""
    return {flag.name: flag.default for flag in FLAGS.get_flags_for_module(gdw_flags)}


def with_dataset_defaults(s):
    """`s` with the flags left unset (None) replaced by the dataset's defaults.

    A folder with labels of its own (ROOT/meta or --labels) gets no synthetic noise
    by default: its labels are taken as they are.
    """
    from gdw_tf.data.sources.folder import has_own_labels

    defaults = DATASET_DEFAULTS.get(s["dataset"], OTHER_DATASET_DEFAULTS)
    if s["dataset"] == "folder" and has_own_labels(s.get("data_dir"), s.get("labels")):
        defaults = dataclasses.replace(defaults, noise_type="none")
    noise_type = s["noise_type"] or defaults.noise_type
    noise_rate = s["noise_rate"]
    if noise_rate is None:
        noise_rate = 0.0 if noise_type == "none" else SYNTHETIC_NOISE_RATE
    chosen = {k: s[k] if s[k] is not None else getattr(defaults, k) for k in ("model", "lr", "epochs")}
    return {**s, **chosen, "noise_type": noise_type, "noise_rate": noise_rate}


def check_before_build(s, model_name):
    """Validates what the dataset build does not read: --init_weights, before any data is built.

    Returns the weights file for models.build (None: from scratch). The file must
    exist and, where the dataset fixes classes and image size before reading
    data (clothing1m), load into `model_name`; a setting that expects pretrained
    weights without --init_weights gets a warning.
    """
    import gdw_tf
    from gdw_tf import models

    path = s["init_weights"]
    if path == NO_INIT_WEIGHTS:
        return None
    if path is None:
        defaults = DATASET_DEFAULTS.get(s["dataset"], OTHER_DATASET_DEFAULTS)
        if defaults.pretrained and model_name == defaults.model:
            message = (f"--dataset={s['dataset']} without --init_weights trains {model_name} from "
                       "scratch, not from the paper's ImageNet-pretrained weights; pass "
                       "--init_weights=resnet18.npz (README: Pretrained weights), or "
                       f"--init_weights={NO_INIT_WEIGHTS} to train from scratch without this warning")
            logging.warning(message)
        return None
    models.check_init_weights(model_name, path, gdw_tf.data.known_input(s["dataset"], s["augment"]))
    return path


def default_output_dir(s):
    noise = "clean" if s["noise_type"] == "none" else f"{s['noise_type']}{s['noise_rate']:g}"
    if s["imbalance_factor"] < 1:
        noise += f"_lt{s['imbalance_factor']:g}"
    return os.path.join("runs", f"{s['dataset']}_{noise}_{s['method']}_seed{s['seed']}")


def parse_method_options(items):
    """['gamma=2', 'mode=soft'] -> {'gamma': 2, 'mode': 'soft'}; a key given twice is a ValueError."""
    options = {}
    for item in items:
        key, _, text = item.partition("=")
        key = key.strip()
        if key in options:
            raise ValueError(f"--method_option sets {key} twice")
        try:
            options[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            options[key] = text
    return options


def explicit_method_options(method_cls, s):
    """The method options set in `s`: its method flags that are set (not None), then --method_option.

    Raises a ValueError naming the flag or key if the method does not take it, or if a flag
    and a --method_option both set one option.
    """
    from gdw_tf.methods.method import options_text

    accepted = method_cls.option_names()
    options = {}
    for name in gdw_flags.METHOD_FLAGS:
        if s.get(name) is not None:
            if name not in accepted:
                raise ValueError(f"--{name} is not an option of --method={s['method']} "
                                 f"({options_text(method_cls)})")
            options[name] = s[name]
    for key, value in parse_method_options(s["method_option"]).items():
        if key not in accepted:
            raise ValueError(f"--method_option={key}=...: --method={s['method']} has no option "
                             f"{key} ({options_text(method_cls)})")
        if key in options:
            raise ValueError(f"--{key} and --method_option={key}=... both set {key}; give it once")
        options[key] = value
    return options


def method_options(method_cls, bundle, s):
    """The method's constructor options: derived from the data, then the dataset's
    defaults (DatasetDefaults.method_options) it takes, overridden by the explicit ones."""
    synthetic_noise_rate = 0.0 if s["noise_type"] == "none" else s["noise_rate"]
    accepted = method_cls.option_names()
    dataset = DATASET_DEFAULTS.get(s["dataset"], OTHER_DATASET_DEFAULTS).method_options
    return {**method_cls.options_from_data(bundle, epochs=s["epochs"],
                                           noise_rate=synthetic_noise_rate),
            **{k: v for k, v in dataset.items() if k in accepted},
            **explicit_method_options(method_cls, s)}


def build_data(s):
    """The run's `gdw_tf.data.DataBundle`, from the settings dict `s` (dataset defaults applied)."""
    import gdw_tf

    return gdw_tf.data.build(
        s["dataset"], data_dir=s["data_dir"], manual_dir=s["manual_dir"],
        noise_type=s["noise_type"], noise_rate=s["noise_rate"],
        imbalance_factor=s["imbalance_factor"], num_meta=s["num_meta"], seed=s["seed"],
        batch_size=s["batch_size"], meta_batch_size=s["meta_batch_size"],
        augment=s["augment"], cache_dir=s["cache_dir"], train_per_class=s["train_per_class"],
        skip_bad_images=s["skip_bad_images"], labels=s.get("labels"),
        labels_missing=s.get("labels_missing", "error"), meta_source=s.get("meta_source") or "given")


def build_model(s, bundle, init_weights=None, **model_options):
    """The compiled `GDWModel` of settings `s` for `bundle` (call in the strategy's scope).

    model_options: extra GDWModel keyword arguments (e.g. the label-issue record).
    """
    import keras

    import gdw_tf
    from gdw_tf import models
    from gdw_tf.methods.method import METHODS

    backbone = models.build(s["model"], bundle.num_classes, input_shape=bundle.image_shape,
                            init_weights=init_weights)
    model = gdw_tf.GDWModel(backbone, bundle.num_classes, method=s["method"],
                            weight_decay=s["weight_decay"], **model_options,
                            **method_options(METHODS.get(s["method"]), bundle, s))
    lr = s["lr"]
    if s["schedule"] == "cosine":
        lr = gdw_tf.EpochCosineDecay(lr, bundle.steps_per_epoch, s["epochs"])
    model.compile(keras.optimizers.SGD(lr, momentum=s["momentum"]),
                  metrics=["accuracy"], jit_compile=s["jit_compile"])
    return model


def run(s):
    """Trains as configured by the settings dict `s`; returns the results dict.

    Raises `run_dir.UserError` for bad input (flags, files, data, a diverging run).
    """
    from gdw_tf import distributed

    started = time.time()
    s = with_dataset_defaults(s)
    with run_dir.user_errors():
        strategy = distributed.make_strategy(s["strategy"], tpu=s["tpu"])
    chief = distributed.is_chief(strategy)
    out_dir = s["output_dir"] or default_output_dir(s)
    if not chief:  # every worker must save; only the chief's files are kept
        out_dir = os.path.join(out_dir, f"worker_{strategy.cluster_resolver.task_id}")
    with run_dir.OutputDirLock(out_dir), run_dir.write_errors(out_dir):
        results = _run_locked(s, strategy, chief, out_dir, started)
    results["output_dir"] = out_dir
    return results


def _check_meta_source(s, method_cls):
    """True for --meta_source=auto, after checking it applies to the method (before any data)."""
    from gdw_tf.methods.bilevel import BilevelMethod

    if (s.get("meta_source") or "given") == "given":
        for flag in ("meta_warmup_epochs", "meta_refresh_epochs"):
            if s.get(flag) is not None:
                raise ValueError(f"--{flag} applies to --meta_source=auto only")
        return False
    if not issubclass(method_cls, BilevelMethod):
        raise ValueError(f"--meta_source=auto chooses a meta set during training, for the bi-level "
                         f"methods (mwnet, gdw, l2rw, insw, soft_label, gen_label); --method="
                         f"{s['method']} {'needs one before training' if method_cls.needs_meta else 'uses none'}")
    return True


def check_model_options(s, options):
    """Checks the method options that depend on the backbone (virtual_scope) against
    --model, before any data is read: the count of layers with weights does not depend
    on the data's classes or image size, so a stand-in build answers."""
    from gdw_tf import models
    from gdw_tf.methods.bilevel import check_virtual_scope, moved_variable_positions

    if options.get("virtual_scope") is None:
        return
    scope = check_virtual_scope(options["virtual_scope"], s["method"])
    try:
        moved_variable_positions(models.build(s["model"], 2), scope)
    except ValueError as error:
        raise ValueError(f"--method_option=virtual_scope={scope} with --model={s['model']}: "
                         f"{error}") from None


def _run_locked(s, strategy, chief, out_dir, started):
    import keras
    import tensorflow as tf

    from gdw_tf import auto_meta, label_issues, reporting
    from gdw_tf.diagnostics import binned_auc, weight_trust
    from gdw_tf.methods.method import METHODS

    with run_dir.user_errors():
        resume_from = reporting.latest_intact_checkpoint(out_dir)
        if resume_from:
            differ = run_dir.check_same_flags(out_dir, s, force=s["resume"] == "force",
                                              defaults=flag_defaults())
            if differ:
                logging.warning("--resume=force: resuming %s despite other flags: %s",
                                out_dir, ", ".join(differ))
        method_cls = METHODS.get(s["method"])  # fails early on an unknown --method
        check_model_options(s, explicit_method_options(method_cls, s))  # ... and on bad options
        auto = _check_meta_source(s, method_cls)
        replicas = strategy.num_replicas_in_sync
        for flag in ("batch_size", "meta_batch_size"):
            if s[flag] is not None and s[flag] % replicas:
                raise ValueError(f"--{flag}={s[flag]} is not divisible by the {replicas} replicas "
                                 f"of --strategy={s['strategy']}")
        init_weights = check_before_build(s, s["model"])
        if s["mixed_precision"]:
            keras.mixed_precision.set_global_policy("mixed_bfloat16")
        keras.utils.set_random_seed(s["seed"])

        bundle = build_data(s)
        schedule = None
        if auto:
            schedule = auto_meta.AutoMetaSchedule.resolve(
                s["epochs"], bundle.num_meta, bundle.num_classes, s["meta_warmup_epochs"],
                s["meta_refresh_epochs"])
        elif method_cls.needs_meta and bundle.meta is None:
            raise ValueError(f"--method={s['method']} needs a meta set but --num_meta=0")
        if chief:
            bundle.write_summary(os.path.join(out_dir, "data_summary.json"))

        warmup_steps = schedule.warmup_epochs * bundle.steps_per_epoch if schedule else 0
        with strategy.scope():
            model = build_model(s, bundle, init_weights, warmup_steps=warmup_steps,
                                **label_issues.model_options(s["method"], bundle.num_train,
                                                             resume_from))
            auto_state = auto_meta.AutoMetaState(bundle.num_meta) if schedule else None

        checkpoint = reporting.ResumableCheckpoint(
            out_dir, model, bundle.steps_per_epoch, every_steps=s["checkpoint_steps"], write=chief,
            started=started, extra={"auto_meta": auto_state} if schedule else None)
        start, step = checkpoint.restore(resume_from)
    if start or step:
        where = f"epoch {start} of {s['epochs']}"
        if step:
            where += f", step {step} of {bundle.steps_per_epoch}"
        logging.info("resuming from %s at %s", out_dir, where)
        print(f"Resuming from {out_dir} at {where}", flush=True)
    else:
        model.method.prepare(model, bundle, verbose=s["verbose"])
    if chief:
        run_dir.save_flags(out_dir, s)

    callbacks = [checkpoint,
                 keras.callbacks.TensorBoard(os.path.join(out_dir, "tensorboard"),
                                             update_freq="epoch")]
    if s["verbose"] == 2:
        callbacks.append(reporting.EpochLine(s["epochs"]))
    cuts = schedule.choice_epochs(s["epochs"]) if schedule else []
    with _training_errors(tf):
        for first_epoch, first_step, last_epoch in _segments(start, step, s["epochs"], cuts):
            meta = None
            if schedule and first_epoch >= schedule.warmup_epochs:
                meta = _auto_meta_batches(model, bundle, schedule, auto_state, checkpoint.record,
                                          first_epoch, first_step, s["verbose"])
            data, steps = _training_data(bundle, method_cls.needs_meta and
                                         (not schedule or meta is not None),
                                         first_epoch, first_step, last_epoch, meta)
            model.fit(data, epochs=last_epoch, initial_epoch=first_epoch, steps_per_epoch=steps,
                      validation_data=bundle.test, callbacks=callbacks,
                      verbose=int(s["verbose"] == 1), shuffle=False)  # tf.data shuffles
    extra = model.method.finish(model, bundle, verbose=s["verbose"]) or {}
    extra["method_options"] = model.method.options()
    record = checkpoint.record
    trust = weight_trust(record.history)
    if trust is not None:
        extra["weight_check"] = dataclasses.asdict(trust)
    extra.update(label_issues.after_training(model, bundle, s, out_dir, write=chief))
    extra["target_weight_histograms"] = {
        "edges": model.weight_histograms["clean"].edges(),
        "by_epoch": {str(k): v for k, v in sorted(record.histograms.items())}}
    if record.histograms:  # how well the last epoch's weights single out the noisy labels
        last = record.histograms[max(record.histograms)]
        extra["target_weight_auc"] = binned_auc(last["clean"], last["noisy"])
    extra["optimizer_iterations"] = int(model.optimizer.iterations.numpy())
    meta_optimizer = getattr(model.method, "meta_optimizer", None)
    if meta_optimizer is not None:
        extra["meta_optimizer_iterations"] = int(meta_optimizer.iterations.numpy())
    extra["model"] = s["model"]
    extra["num_replicas"] = strategy.num_replicas_in_sync
    if schedule:
        extra["auto_meta"] = {**dataclasses.asdict(schedule), "choices": record.auto_meta}
    results = reporting.results_summary(record.history, s, record.wall_time_s, extra)
    if chief:
        reporting.write_results(out_dir, results)
        reporting.write_figures(os.path.join(out_dir, "figures"), record.history,
                                record.histograms, model.weight_histograms["clean"].edges())
    return results


def _segments(start, step, epochs, cuts=()):
    """The fit calls of a run resumed at step `step` of epoch `start`: (first epoch,
    its first step, end epoch); the epoch in progress is finished by a call of its own,
    and a call ends at every epoch of `cuts` (where --meta_source=auto chooses)."""
    if step and start < epochs:
        return [(start, step, start + 1)] + _segments(start + 1, 0, epochs, cuts)
    if start >= epochs:
        return []
    end = min([c for c in cuts if c > start] + [epochs])
    return [(start, 0, end)] + _segments(end, 0, epochs, cuts)


def _auto_meta_batches(model, bundle, schedule, state, record, epoch, step, verbose):
    """--meta_source=auto: the meta batches from step `step` of `epoch` on, over the meta set
    chosen at the choice epoch in force (chosen now if it was not yet: gdw_tf.auto_meta)."""
    from gdw_tf import auto_meta

    chosen_at = schedule.current_choice(epoch)
    rows, report = auto_meta.choose(model, bundle, schedule, state, chosen_at)
    if report is not None:
        record.auto_meta.append(report)
        if verbose:
            clean = report["clean_fraction"]
            print(f"meta set chosen at epoch {chosen_at + 1}: {report['num_meta']} smallest-loss "
                  f"training examples" + (f", {clean:.1%} clean" if clean is not None else ""),
                  flush=True)
    first = (epoch - chosen_at) * bundle.steps_per_epoch + step
    return bundle.meta_from_train(rows, first, f"meta_auto_{chosen_at}")


def _training_data(bundle, needs_meta, first_epoch, first_step, last_epoch, meta=None):
    """(dataset, steps_per_epoch for fit): the batches of epochs [first_epoch, last_epoch)
    from step `first_step` on (paired with meta batches for meta methods: `meta`, else the
    bundle's), exactly as an uninterrupted run sees them (the bundle's positioned
    pipelines, in memory or on disk).
    """
    import gdw_tf

    steps = bundle.steps_per_epoch
    first = first_epoch * steps + first_step
    train = bundle.train_from(first, last_epoch * steps)
    if meta is None and bundle.meta_from is not None:
        meta = bundle.meta_from(first)
    fit_steps = steps - first_step  # one dataset spans the epochs
    return (gdw_tf.data.with_meta(train, meta) if needs_meta else train), fit_steps


@contextlib.contextmanager
def _training_errors(tf):
    """The step's own checks (gdw_tf: non-finite gradient, label out of range) as UserErrors."""
    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        found = re.search(r"(gdw_tf: [^\]\n]*)", error.message)
        if found is None:
            raise
        message = found.group(1).removeprefix("gdw_tf: ")
        if "non-finite" in message:
            raise run_dir.NonFiniteError(f"training diverged: {message}") from error
        raise run_dir.UserError(f"training stopped: {message}") from error


def make_deterministic():
    """--deterministic: the same flags give the same bits on the same machine, also
    across a kill and resume. Deterministic ops, one thread per op and between ops
    (the partition of a reduction depends on the thread count), oneDNN off (its
    kernels are not deterministic); oneDNN is read when TensorFlow loads, which
    the flag definitions already did, so the process restarts itself once with it off.
    """
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0":
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "gdw_tf.train", *sys.argv[1:]])
    import tensorflow as tf
    tf.config.experimental.enable_op_determinism()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def main(argv):
    if len(argv) > 1:
        print(f"gdw_tf.train: error: unexpected arguments: {' '.join(argv[1:])} "
              "(flags look like --name=value)", file=sys.stderr)
        sys.exit(run_dir.USER_ERROR_EXIT_CODE)
    s = settings_from_flags()
    logging.set_verbosity(logging.WARNING)  # TensorFlow's savers log INFO lines at every save
    if s["deterministic"]:
        make_deterministic()
    from gdw_tf.distributed import split_cpu
    split_cpu(s["num_cpu_devices"])
    try:
        results = run(s)
    except run_dir.UserError as error:
        if s["traceback"]:
            raise
        print(f"gdw_tf.train: error: {error}", file=sys.stderr)
        sys.exit(run_dir.USER_ERROR_EXIT_CODE)
    print(f"Test accuracy: final (mean of last {min(5, results['epochs_completed'])} epochs) "
          f"{results['final_accuracy']:.2f}%, best {results['best_accuracy']:.2f}%, "
          f"last {results['last_accuracy']:.2f}%  [{s['method']} on {s['dataset']}, "
          f"{results['wall_time_s']:.0f} s; results in {results['output_dir']}]")
    from gdw_tf.label_issues import summary_line
    if summary_line(results):
        print(summary_line(results))
    check = results.get("weight_check")
    if check is not None and not check["trusted"]:
        print(f"gdw_tf.train: warning: the learned weights are not singling out noisy labels "
              f"(truth-free check: they rank the examples the model fits above the others "
              f"with ROC-AUC {check['fit_auc']:.2f} < {check['threshold']}); do not rank by "
              "them (label_issues.csv's score uses p(given label))", file=sys.stderr)


if __name__ == "__main__":
    app.run(main, flags_parser=flag_parser.app_parser("gdw_tf.train"))
