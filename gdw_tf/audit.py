"""Rewrite a finished run's label-issue report from its checkpoint.

  python -m gdw_tf.audit --output_dir=RUN                 # RUN/label_issues.csv and .png
  python -m gdw_tf.audit --output_dir=RUN --top=100       # the 100 top suspects in the .png
  python -m gdw_tf.audit --output_dir=RUN --export=DIR    # folder datasets: DIR/relabel.csv

RUN is a `python -m gdw_tf.train` output directory (of any method). The data are rebuilt
from RUN/flags.json (same sources, seed and noise), the model from the latest
checkpoint. --export writes the top suspects (path, given and suggested class
names, score, rank; paths relative to ROOT/train, as in a labels file) as a CSV for
relabelling; the dataset itself is never touched. The data must be those the run was
trained on (its data_fingerprint.json): a change is one line naming it, and nothing is
rewritten. Bad input ends with one line on stderr and exit status 2.
"""
if __name__ == "__main__":  # before anything loads TensorFlow: no start-up log lines
    from gdw_tf import tf_startup
    tf_startup.quiet()

import csv
import os
import sys

from absl import flags, logging

from gdw_tf import flag_parser, label_issues, run_dir
from gdw_tf.config import RunConfig
from gdw_tf.data import fingerprint
from gdw_tf.files import atomic_open, spreadsheet_safe

FLAGS = flags.FlagValues()  # the audit's own flags (the trainer's --output_dir is another)
flags.DEFINE_string("output_dir", None, "the run's output directory", flag_values=FLAGS)
flags.DEFINE_integer("top", label_issues.DEFAULT_TOP,
                     "suspects in label_issues.png and the relabel CSV", flag_values=FLAGS)
flags.DEFINE_string("export", None, "folder datasets: write DIR/relabel.csv", flag_values=FLAGS)

RELABEL_FILE = "relabel.csv"


def _fail(message):
    raise run_dir.UserError(message)


def _check_inputs(out_dir, top, export):
    """The run's `RunConfig` (from its flags.json) after checking every argument; raises
    UserError."""
    if not out_dir:
        _fail("--output_dir=RUN is required (a python -m gdw_tf.train output directory)")
    if not os.path.isdir(out_dir):
        _fail(f"--output_dir={out_dir}: no such directory")
    flags_path = os.path.join(out_dir, run_dir.FLAGS_FILE)
    if not os.path.exists(flags_path):
        _fail(f"--output_dir={out_dir}: no {run_dir.FLAGS_FILE}, so not a python -m gdw_tf.train "
              "output directory")
    saved = run_dir.read_json(flags_path)
    try:
        config = RunConfig.from_flag_values(saved)
    except (ValueError, OSError) as error:
        _fail(f"{flags_path}: {error}")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        _fail(f"--top must be a positive integer, got {top!r}")
    if export is not None:
        if config.data.dataset != "folder":
            _fail(f"--export={export}: relabel files are for --dataset=folder runs (files to "
                  f"relabel), this run used --dataset={config.data.dataset}")
        data_root = os.path.realpath(config.data.data_dir)
        target = os.path.realpath(export)
        if os.path.commonpath([data_root, target]) == data_root:
            _fail(f"--export={export} lies inside the dataset {data_root}; pick a directory "
                  "outside it (the original data is never written)")
        if os.path.exists(export) and not os.path.isdir(export):
            _fail(f"--export={export} is a file; --export names a directory (its "
                  f"{RELABEL_FILE} is written there)")
        try:
            os.makedirs(export, exist_ok=True)
        except OSError as error:
            _fail(f"--export={export}: cannot create the directory ({error.strerror})")
        if not os.access(export, os.W_OK):
            _fail(f"--export={export}: the directory is not writable")
    return config


def _restored_model(config, bundle, latest):
    """A GDWModel as the run of `config` built it, with the checkpoint's weights and record."""
    import tensorflow as tf

    from gdw_tf.run import build_model

    model = build_model(config.method, config.optim, bundle,
                        noise_rate=config.data.synthetic_noise_rate,
                        jit_compile=config.run.jit_compile,
                        record_examples=bundle.num_train)
    status = tf.train.Checkpoint(model=model).restore(latest).expect_partial()
    try:
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError) as error:
        _fail(f"the checkpoint {latest} holds no per-example record matching these flags "
              f"(made by other flags, or by a gdw_tf older than 0.1): "
              f"{str(error).splitlines()[0].split(' Showing')[0]}")
    return model


def write_relabel_csv(path, issues, paths, class_names, top):
    """The `top` suspects: path (as `paths` gives it), given and suggested class names,
    score, rank."""
    with atomic_open(path, newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("path", "given_label", "suggested_label", "score", "rank"))
        for i in range(min(top, issues.num_ranked)):
            writer.writerow([spreadsheet_safe(paths[int(issues.index[i])]),
                             spreadsheet_safe(class_names[int(issues.given_label[i])]),
                             spreadsheet_safe(class_names[int(issues.suggested_label[i])]),
                             f"{issues.score[i]:.6f}", int(issues.rank[i])])
    return path


def audit(out_dir, top=label_issues.DEFAULT_TOP, export=None):
    """Rewrites OUT_DIR/label_issues.csv/.png (and EXPORT/relabel.csv); returns
    (LabelIssues, Detection or None). Raises run_dir.UserError for bad input."""
    config = _check_inputs(out_dir, top, export)
    from gdw_tf.checkpoints import latest_intact_checkpoint
    from gdw_tf.run import build_data

    with run_dir.OutputDirLock(out_dir), run_dir.write_errors(out_dir), run_dir.user_errors():
        latest = latest_intact_checkpoint(out_dir)
        if latest is None:
            _fail(f"--output_dir={out_dir}: no checkpoint under {out_dir}/checkpoints "
                  "(the run saved none yet)")
        bundle = build_data(config.data)
        if not fingerprint.check(out_dir, bundle.fingerprint, "rewritten"):
            logging.warning("%s was made before runs kept a fingerprint of their data: the "
                            "report is rewritten from the data as they are now, which cannot "
                            "be checked against those it was trained on", out_dir)
        model = _restored_model(config, bundle, latest)
        issues, found = label_issues.write_report(out_dir, model, bundle, top)
        if export is not None:  # paths as a labels file gives them: relative to ROOT/train
            train_dir = os.path.join(os.path.abspath(config.data.data_dir), "train")
            paths = [os.path.relpath(p, train_dir).replace(os.sep, "/")
                     for p in bundle.train_files()]
            write_relabel_csv(os.path.join(export, RELABEL_FILE), issues, paths,
                              bundle.class_names, top)
    return issues, found


def main(argv):
    """`python -m gdw_tf.audit FLAGS` (module doc)."""
    values = flag_parser.parse(argv, FLAGS, lambda v: v, "gdw_tf.audit", __doc__)
    try:
        issues, found = audit(values.output_dir, values.top, values.export)
    except run_dir.UserError as error:
        print(f"gdw_tf.audit: error: {error}", file=sys.stderr)
        sys.exit(run_dir.USER_ERROR_EXIT_CODE)
    line = f"Wrote {label_issues.CSV_FILE} ({issues.index.size} examples) in {values.output_dir}"
    if found is not None:
        line += (f"; detection ROC-AUC {found.auc:.3f}, F1 {found.f1:.3f}"
                 f" at the noisy count {found.noisy}")
    print(line)


if __name__ == "__main__":
    main(sys.argv)
