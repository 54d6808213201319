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
if __name__ == "__main__":  # before anything loads TensorFlow: no start-up log lines
    from gdw_tf import tf_startup
    tf_startup.quiet()

import os
import sys

from absl import app, logging

from gdw_tf import flag_parser, run_dir
from gdw_tf.config import RunConfig
from gdw_tf.flags import FLAGS


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
        flag_parser.fail("gdw_tf.train", f"unexpected arguments: {' '.join(argv[1:])} "
                         "(flags look like --name=value)")
    logging.set_verbosity(logging.WARNING)  # TensorFlow's savers log INFO lines at every save
    if FLAGS.deterministic:
        make_deterministic()
    from gdw_tf import run
    from gdw_tf.distributed import split_cpu
    split_cpu(FLAGS.num_cpu_devices)
    try:
        with run_dir.user_errors():
            config = RunConfig.from_flags(FLAGS)
        results = run.run(config)
    except run_dir.UserError as error:
        if FLAGS.traceback:
            raise
        flag_parser.fail("gdw_tf.train", error)
    print(f"Test accuracy: final (mean of last {min(5, results['epochs_completed'])} epochs) "
          f"{results['final_accuracy']:.2f}%, best {results['best_accuracy']:.2f}%, "
          f"last {results['last_accuracy']:.2f}%  "
          f"[{config.method.method} on {config.data.dataset}, "
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
