"""A training run assembled from its `RunConfig`: data, model, checkpoint, fit segments.

`run(config)` is what `python -m gdw_tf.train` does after parsing its flags;
`build_data` and `build_model` are the same builds for the audit and the benches.
A run writes into config.run.directory (locked while it runs): data_summary.json,
flags.json (`RunConfig.to_flags`), checkpoints that resume a killed run at its last
epoch or --checkpoint_steps step, history.json, log.csv, TensorBoard summaries, the
label-issue report, results.json and figures.
"""
import contextlib
import os
import re
import time

from absl import logging

from gdw_tf import run_dir
from gdw_tf.config import FLAG_DEFAULTS, NO_INIT_WEIGHTS


def build_data(data):
    """The run's `gdw_tf.data.DataBundle` of its `DataConfig` (`gdw_tf.data.build` takes its
    fields by name)."""
    import gdw_tf

    return gdw_tf.data.build(data.dataset, **data.build_args())


def build_model(method, optim, bundle, init_weights=None, noise_rate=0.0, jit_compile=False,
                **model_options):
    """The `GDWModel` of `method` (a MethodConfig) for `bundle`, compiled with `optim`'s SGD
    (an OptimConfig); call in the strategy's scope. init_weights: the backbone's weights file
    (None: from scratch); noise_rate: the synthetic noise rate (DataConfig), for the options
    a method derives from the data; jit_compile: XLA; model_options: extra GDWModel keyword
    arguments (e.g. the label-issue record)."""
    import keras

    import gdw_tf
    from gdw_tf import models
    from gdw_tf.methods.method import data_options

    backbone = models.build(method.model, bundle.num_classes, input_shape=bundle.image_shape,
                            init_weights=init_weights, augment=bundle.augment)
    if method.freeze_backbone:
        models.freeze_backbone(backbone)
    from_data = data_options(method.method, bundle, epochs=optim.epochs, noise_rate=noise_rate)
    model = gdw_tf.GDWModel(backbone, bundle.num_classes, method=method.method,
                            weight_decay=optim.weight_decay, **model_options,
                            **{**from_data, **method.options})
    if model.example_record is not None and bundle.train_origin is not None:
        model.example_record.assign_labels(bundle.train_labels, bundle.train_true_labels)
    lr = optim.lr
    if optim.schedule == "cosine":
        lr = gdw_tf.EpochCosineDecay(lr, bundle.steps_per_epoch, optim.epochs)
    model.compile(keras.optimizers.SGD(lr, momentum=optim.momentum),
                  metrics=["accuracy"], jit_compile=jit_compile)
    return model


def init_weights_file(method, data):
    """The backbone's weights file of `method` (a MethodConfig) for models.build (None: from
    scratch), checked before any data is built: it must exist (`imagenet`: Keras' cached
    file of a keras:NAME model) and, where `data`'s dataset
    fixes classes and image size before reading data (clothing1m), load into --model; a
    setting that expects pretrained weights without --init_weights gets a warning."""
    import gdw_tf
    from gdw_tf import models

    if method.init_weights == NO_INIT_WEIGHTS:
        return None
    if method.init_weights is None:
        if method.expects_pretrained:
            logging.warning(
                f"--dataset={data.dataset} without --init_weights trains {method.model} "
                "from scratch, not from the paper's ImageNet-pretrained weights; pass "
                "--init_weights=resnet18.npz (docs/clothing1m.md: Pretrained weights), or "
                f"--init_weights={NO_INIT_WEIGHTS} to train from scratch without this warning")
        return None
    models.check_init_weights(method.model, method.init_weights,
                              gdw_tf.data.known_input(data.dataset, data.augment, data.image_size))
    return method.init_weights


def run(config):
    """Trains as `config` (a RunConfig) says; returns the results dict
    (results.json and output_dir). Raises `run_dir.UserError` for bad input (flags, files,
    data, a diverging run)."""
    from gdw_tf import distributed

    started = time.time()
    with run_dir.user_errors():
        strategy = distributed.make_strategy(config.run.strategy, tpu=config.run.tpu)
    chief = distributed.is_chief(strategy)
    out_dir = config.run.directory
    if not chief:  # every worker must save; only the chief's files are kept
        out_dir = os.path.join(out_dir, f"worker_{strategy.cluster_resolver.task_id}")
    with run_dir.OutputDirLock(out_dir), run_dir.write_errors(out_dir):
        results = _run_locked(config, strategy, chief, out_dir, started)
    results["output_dir"] = out_dir
    return results


def _run_locked(config, strategy, chief, out_dir, started):
    import keras
    import tensorflow as tf

    from gdw_tf import auto_meta, checkpoints, label_issues, reporting
    from gdw_tf.data import fingerprint
    from gdw_tf.history_files import HistoryFiles
    from gdw_tf.methods.method import METHODS

    data, optim, verbose = config.data, config.optim, config.run.verbose
    flags = config.to_flags()
    with run_dir.user_errors():
        resume_from = checkpoints.latest_intact_checkpoint(out_dir)
        if resume_from:
            differ = run_dir.check_same_flags(out_dir, flags, force=config.run.resume == "force",
                                              defaults=FLAG_DEFAULTS)
            if differ:
                logging.warning("--resume=force: resuming %s despite other flags: %s",
                                out_dir, ", ".join(differ))
        method_cls = METHODS.get(config.method.method)
        replicas = strategy.num_replicas_in_sync
        for flag in ("batch_size", "meta_batch_size"):
            value = getattr(data, flag)
            if value is not None and value % replicas:
                raise ValueError(f"--{flag}={value} is not divisible by the {replicas} replicas "
                                 f"of --strategy={config.run.strategy}")
        init_weights = init_weights_file(config.method, data)
        if config.run.mixed_precision:
            keras.mixed_precision.set_global_policy("mixed_bfloat16")
        keras.utils.set_random_seed(data.seed)

        bundle = build_data(data)
        _check_same_data(out_dir, bundle.fingerprint, resume_from)
        schedule = None
        if data.meta_source == "auto":
            schedule = auto_meta.AutoMetaSchedule.resolve(
                optim.epochs, bundle.num_meta, bundle.num_classes, data.meta_warmup_epochs,
                data.meta_refresh_epochs)
            schedule.check_counts(bundle.train_labels, bundle.class_names)
        elif method_cls.needs_meta and bundle.meta is None:
            raise ValueError(f"--method={config.method.method} needs a meta set but --num_meta=0")
        if chief:
            bundle.write_summary(os.path.join(out_dir, "data_summary.json"))
            if not os.path.exists(os.path.join(out_dir, fingerprint.FILE)):  # else checked
                bundle.fingerprint.save(os.path.join(out_dir, fingerprint.FILE))

        warmup_steps = schedule.warmup_epochs * bundle.steps_per_epoch if schedule else 0
        with strategy.scope():
            model = build_model(config.method, optim, bundle, init_weights,
                                data.synthetic_noise_rate, config.run.jit_compile,
                                warmup_steps=warmup_steps,
                                record_examples=bundle.num_train)
            auto_state = auto_meta.AutoMetaState(bundle.num_meta) if schedule else None

        checkpoint = checkpoints.ResumableCheckpoint(
            out_dir, model, bundle.steps_per_epoch, every_steps=config.run.checkpoint_steps,
            started=started, extra={"auto_meta": auto_state} if schedule else None)
        start, step = checkpoint.restore(resume_from)
    if start or step:
        where = f"epoch {start} of {optim.epochs}"
        if step:
            where += f", step {step} of {bundle.steps_per_epoch}"
        logging.info("resuming from %s at %s", out_dir, where)
        print(f"Resuming from {out_dir} at {where}", flush=True)
    else:
        model.method.prepare(model, bundle, verbose=verbose)
    if chief:
        run_dir.save_flags(out_dir, flags)

    callbacks = [checkpoint] + ([HistoryFiles(out_dir, checkpoint)] if chief else [])
    callbacks.append(keras.callbacks.TensorBoard(os.path.join(out_dir, "tensorboard"),
                                                 update_freq="epoch"))
    if verbose == 2:
        callbacks.append(reporting.EpochLine(optim.epochs))
    cuts = schedule.choice_epochs(optim.epochs) if schedule else []
    with _training_errors(tf):
        for first_epoch, first_step, last_epoch in _segments(start, step, optim.epochs, cuts):
            meta = None
            if schedule and first_epoch >= schedule.warmup_epochs:
                meta = _auto_meta_batches(model, bundle, schedule, auto_state, checkpoint.record,
                                          first_epoch, first_step, verbose)
            train, steps = _training_data(bundle, method_cls.needs_meta and
                                          (not schedule or meta is not None),
                                          first_epoch, first_step, last_epoch, meta)
            model.fit(train, epochs=last_epoch, initial_epoch=first_epoch, steps_per_epoch=steps,
                      validation_data=bundle.test, callbacks=callbacks,
                      verbose=int(verbose == 1), shuffle=False)  # tf.data shuffles
    finished = model.method.finish(model, bundle, verbose=verbose)
    issues = label_issues.after_training(model, bundle, out_dir, write=chief)
    results = reporting.run_results(config, model, checkpoint.record, finished, issues,
                                    strategy.num_replicas_in_sync, schedule)
    if chief:
        reporting.write_run_reports(out_dir, results, checkpoint.record, model)
    return results


def _check_same_data(out_dir, fingerprint, resume_from):
    """A run resumed (or re-run) only on the data it was trained on: else a DataChanged
    naming the difference, before anything is written (gdw_tf.data.fingerprint)."""
    from gdw_tf.data import fingerprint as data_fingerprint

    if resume_from and not data_fingerprint.check(out_dir, fingerprint, "resumed or rewritten"):
        logging.warning("%s was made before runs kept a fingerprint of their data: resuming "
                        "it on the data as they are now, which cannot be checked against "
                        "those it was trained on", out_dir)


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
            clean, known = report["clean_fraction"], report["truth_known"]
            if clean is None:
                truth = ""
            elif known == report["num_meta"]:
                truth = f", {clean:.1%} clean"
            else:
                truth = f", {clean:.1%} clean of the {known} whose true label is known"
            print(f"meta set chosen at epoch {chosen_at + 1}: {report['num_meta']} smallest-loss "
                  f"training examples{truth}", flush=True)
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
