"""Checkpoints that resume a run exactly: finding the newest intact one (damaged ones are
moved aside), and the callback that writes them with the run's record."""
import dataclasses
import json
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from gdw_tf.files import atomic_open
from gdw_tf.run_dir import NonFiniteError, UserError

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_PREFIX = "ckpt"  # tf.train.CheckpointManager's default: ckpt-<N>.index, ckpt-<N>.data-*
DAMAGED_DIR = "damaged"     # damaged checkpoints are moved to checkpoints/damaged/, never deleted


@dataclasses.dataclass
class RunRecord:
    """What the reports need of every finished epoch, over all segments of a run.

    history:    metric name -> one value per finished epoch (Keras logs, val_* included).
    histograms: epoch (0-based) -> {"clean": counts, "noisy": counts} of the target weights.
    wall_time_s: time from each segment's (process's) start to its last checkpoint, summed
                 over the segments up to the last checkpoint.
    auto_meta:  --meta_source=auto: one report per choice of the meta set (gdw_tf.auto_meta).
    """
    history: dict = dataclasses.field(default_factory=dict)
    histograms: dict = dataclasses.field(default_factory=dict)
    wall_time_s: float = 0.0
    auto_meta: list = dataclasses.field(default_factory=list)

    def to_json(self):
        return json.dumps({"history": self.history, "wall_time_s": self.wall_time_s,
                           "histograms": {str(k): v for k, v in self.histograms.items()},
                           "auto_meta": self.auto_meta})

    @classmethod
    def from_json(cls, text):
        if not text:
            return cls()
        raw = json.loads(text)
        return cls(raw["history"], {int(k): v for k, v in raw["histograms"].items()},
                   raw["wall_time_s"], raw.get("auto_meta", []))  # 0.1 before --meta_source=auto



def saved_checkpoints(out_dir):
    """The checkpoint prefixes of a run directory, newest (highest number) first.

    Found from the files themselves (every ckpt-N.index, and every ckpt-N.data-*
    whose .index is gone) as well as from the state file `checkpoints/checkpoint`,
    so a run directory whose state file was lost, emptied or garbled still shows
    every checkpoint it holds.
    """
    folder = os.path.join(out_dir, CHECKPOINT_DIR)
    if not os.path.isdir(folder):
        return []
    numbers = set()
    for name in os.listdir(folder):
        stem = name.split(".")[0]
        number = stem.removeprefix(f"{CHECKPOINT_PREFIX}-")
        if stem != number and number.isdigit() and (name.endswith(".index") or ".data-" in name):
            numbers.add(int(number))
    state = _checkpoint_state(folder)
    for path in (state.all_model_checkpoint_paths if state else []):
        number = os.path.basename(path).removeprefix(f"{CHECKPOINT_PREFIX}-")
        if number.isdigit():
            numbers.add(int(number))
    return [os.path.join(folder, f"{CHECKPOINT_PREFIX}-{n}") for n in sorted(numbers, reverse=True)]


def _checkpoint_state(folder):
    """The state file's contents, or None when it is missing, empty or unreadable."""
    try:
        return tf.train.get_checkpoint_state(folder)
    except ValueError:  # an empty or incomplete state
        return None


def checkpoint_damage(prefix):
    """None when every tensor of the checkpoint at `prefix` reads back whole (checksums
    verified), else a short description of what is wrong."""
    if not os.path.exists(f"{prefix}.index"):
        return "its .index file is missing"
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_dtype_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, IndexError, ValueError, RuntimeError, OSError) as error:
        text = getattr(error, "message", None) or str(error) or type(error).__name__
        return f"{type(error).__name__}: {text.splitlines()[0]}"
    return None


def latest_intact_checkpoint(out_dir):
    """The newest checkpoint of `out_dir` that reads back completely, or None if it has none.

    Newer checkpoints that are damaged (a file missing, truncated, emptied or with
    flipped bytes) are moved to checkpoints/damaged/ (never deleted), each with one
    warning line naming its files, and the state file is rewritten to list the
    checkpoints kept, so that the resumed run numbers its next save past them.
    Raises UserError, moving nothing, when the directory holds checkpoints but
    none of them is intact: such a run is never silently restarted.
    """
    from absl import logging

    candidates = saved_checkpoints(out_dir)
    damage = {}
    for prefix in candidates:
        damage[prefix] = checkpoint_damage(prefix)
        if damage[prefix] is None:
            break
    intact = [p for p in damage if damage[p] is None]
    if not intact:
        if not candidates:
            return None
        folder = os.path.join(out_dir, CHECKPOINT_DIR)
        raise UserError(
            f"--output_dir={out_dir}: none of the {len(candidates)} checkpoint(s) in {folder} "
            f"restores ({os.path.basename(candidates[0])}: {damage[candidates[0]]}); nothing was "
            "moved or overwritten: restore the directory from a copy, or pass another --output_dir")
    latest = intact[0]
    for prefix in candidates[:candidates.index(latest)]:
        moved = _move_aside(prefix)
        logging.warning("checkpoint %s is damaged (%s): moved %s to %s; resuming from %s",
                        prefix, damage[prefix], ", ".join(os.path.basename(m) for m in moved) or
                        "no files", os.path.join(os.path.dirname(prefix), DAMAGED_DIR),
                        os.path.basename(latest))
    kept = [p for p in candidates[candidates.index(latest):] if os.path.exists(f"{p}.index")]
    state = _checkpoint_state(os.path.dirname(latest))
    if (state is None or state.model_checkpoint_path != latest
            or list(state.all_model_checkpoint_paths) != kept[::-1]):
        if state is None:
            logging.warning("%s: no readable state file; found %s from its files",
                            os.path.dirname(latest), os.path.basename(latest))
        _write_checkpoint_state(kept[::-1])
    return latest


def _write_checkpoint_state(prefixes):
    """Rewrites checkpoints/checkpoint (tf.train.CheckpointManager's text-proto state file)
    to list `prefixes`, oldest first, the last as the latest; the index files' times are
    the checkpoints' times, so the manager keeps deleting past max_to_keep as before."""
    folder = os.path.dirname(prefixes[-1])
    times = [os.path.getmtime(f"{p}.index") for p in prefixes]
    lines = [f'model_checkpoint_path: "{os.path.basename(prefixes[-1])}"']
    lines += [f'all_model_checkpoint_paths: "{os.path.basename(p)}"' for p in prefixes]
    lines += [f"all_model_checkpoint_timestamps: {t!r}" for t in times]
    lines.append(f"last_preserved_timestamp: {min(times) - 1.0!r}")  # none is preserved
    with atomic_open(os.path.join(folder, "checkpoint")) as f:
        f.write("\n".join(lines) + "\n")


def _move_aside(prefix):
    """Moves the files of checkpoint `prefix` into checkpoints/damaged/ (a name already
    there gets a numbered suffix); returns the moved files' new paths."""
    folder = os.path.dirname(prefix)
    target = os.path.join(folder, DAMAGED_DIR)
    os.makedirs(target, exist_ok=True)
    base = os.path.basename(prefix)
    moved = []
    for name in sorted(os.listdir(folder)):
        if name == f"{base}.index" or name.startswith(f"{base}.data-"):
            destination, k = os.path.join(target, name), 1
            while os.path.exists(destination):
                destination, k = os.path.join(target, f"{name}.{k}"), k + 1
            os.replace(os.path.join(folder, name), destination)
            moved.append(destination)
    return moved


def non_finite(values):
    """Names of the entries of `values` (name -> array-like) holding a NaN or Inf."""
    return [name for name, value in values.items()
            if np.issubdtype(np.asarray(value).dtype, np.floating)
            and not np.all(np.isfinite(value))]


class ResumableCheckpoint(keras.callbacks.Callback):
    """Checkpoints everything a run needs to continue exactly, and the run's record.

    One checkpoint holds, consistently: the model (backbone, the method's state:
    weighting network, meta optimizer, tables), the classifier's optimizer, the
    metric accumulators (a mid-epoch checkpoint resumes the epoch's running
    means), the position (finished epochs, steps into the next one) and the
    `RunRecord` as JSON, and the trackables in `extra` (name -> tf.Module, e.g. the
    auto meta set's choice). It is written at every epoch end and, with
    `every_steps` = N > 0, after every N-th step of an epoch (`record` is the
    run's record so far, read by `gdw_tf.history_files.HistoryFiles` and the reports).

    Before writing, every checkpointed float tensor and the epoch's logs are
    checked on the host: anything non-finite raises `NonFiniteError` and
    nothing is written, so the last good checkpoint stays (this also covers
    XLA, which compiles the step's own checks away).

    Also records the per-epoch target-weight histograms (clean vs noisy), read
    when validation starts (Keras resets every metric right after it) or at
    epoch end for runs without validation.
    """

    def __init__(self, directory, model, steps_per_epoch, every_steps=0, max_to_keep=2,
                 started=None, extra=None):
        super().__init__()
        self.directory = directory
        self.steps_per_epoch = steps_per_epoch
        self.every_steps = every_steps
        self.record = RunRecord()
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="finished_epochs")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="steps_into_epoch")
        self.saved_record = tf.Variable("", dtype=tf.string, trainable=False, name="run_record")
        self._metric_variables = list(model.metrics_variables)
        state = dict(model=model, optimizer=model.optimizer, finished_epochs=self.epoch,
                     steps_into_epoch=self.step, run_record=self.saved_record, **(extra or {}))
        # The metric accumulators are saved by name and restored on their own, leniently:
        # a checkpoint of a release that logged fewer metrics still resumes (the new ones
        # start from zero) instead of failing on the model's state.
        self._metrics = {v.path.replace("/", "."): v for v in self._metric_variables}
        self._state = tf.train.Checkpoint(**state)
        self._metrics_checkpoint = tf.train.Checkpoint(metrics_by_name=self._metrics)
        self.checkpoint = tf.train.Checkpoint(**state, metrics_by_name=self._metrics)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(directory, CHECKPOINT_DIR), max_to_keep=max_to_keep)
        self._segment_start = time.time() if started is None else started  # this process's
        self._base_wall_time = 0.0
        self._resume = (0, 0)
        self._restored_metrics = None
        self._epoch_in_progress = None
        self._steps_done = 0

    def restore(self, latest):
        """Restores checkpoint `latest` (from `latest_intact_checkpoint`; None: a new run);
        returns (epoch, step) to resume from."""
        if latest is None:
            return 0, 0
        try:
            # The file also holds metrics_by_name, restored below: expect_partial keeps TF
            # from listing those values as unrestored when the status is collected.
            self._state.restore(latest).assert_existing_objects_matched().expect_partial()
            self._metrics_checkpoint.restore(latest).expect_partial()
            # The saving checkpoint numbers its files by its own counter: continue it.
            self.checkpoint.save_counter.assign(self._state.save_counter)
        except (AssertionError, ValueError, tf.errors.OpError) as error:
            tf.get_logger().setLevel("ERROR")  # else the unrestored values are listed at exit
            raise UserError(
                f"the checkpoint {latest} does not match the model these flags build "
                f"({str(error).splitlines()[0]}); resume it with its own flags "
                "(flags.json beside it) or pass another --output_dir (a run directory "
                "written by a gdw_tf older than 0.1 does not resume)") from error
        self.record = RunRecord.from_json(self.saved_record.numpy().decode())
        self._base_wall_time = self.record.wall_time_s
        epoch, step = int(self.epoch.numpy()), int(self.step.numpy())
        if step:  # fit resets the metrics when the epoch starts: put them back then
            self._restored_metrics = [v.numpy() for v in self._metric_variables]
        self._resume = (epoch, step)
        return epoch, step

    # ------------------------------------------------------------ callbacks
    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_in_progress = epoch
        self._steps_done = 0
        if self._restored_metrics is not None and epoch == self._resume[0]:
            for variable, value in zip(self._metric_variables, self._restored_metrics):
                variable.assign(value)
            self._steps_done = self._resume[1]
        self._restored_metrics = None

    def on_train_batch_end(self, batch, logs=None):
        self._steps_done += 1
        if (self.every_steps and self._steps_done % self.every_steps == 0
                and self._steps_done < self.steps_per_epoch):
            self._save(self._epoch_in_progress, self._steps_done, logs)

    def on_test_begin(self, logs=None):
        if self._epoch_in_progress is not None:
            self._record_histograms(self._epoch_in_progress)

    def on_epoch_end(self, epoch, logs=None):
        if epoch not in self.record.histograms:
            self._record_histograms(epoch)
        self._epoch_in_progress = None
        for key, value in (logs or {}).items():
            self.record.history.setdefault(key, []).append(float(value))
        self._save(epoch + 1, 0, logs)

    # ------------------------------------------------------------ internals
    def _record_histograms(self, epoch):
        hist = self.model.weight_histograms
        clean, noisy = (np.asarray(hist[k].result()) for k in ("clean", "noisy"))
        if clean.sum() + noisy.sum() > 0:
            self.record.histograms[epoch] = {"clean": clean.tolist(), "noisy": noisy.tolist()}

    def _save(self, epoch, step, logs):
        where = f"epoch {epoch + 1}, step {step}" if step else f"the end of epoch {epoch}"
        bad = non_finite({f"{k} (logged)": v for k, v in (logs or {}).items()})
        bad += non_finite({getattr(t, "path", t.name): t.numpy()
                           for t in tf.train.TrackableView(self.checkpoint).descendants()
                           if isinstance(t, (tf.Variable, keras.Variable))})
        if bad:
            kept = self.manager.latest_checkpoint or "none yet"
            raise NonFiniteError(
                f"training diverged: non-finite {', '.join(bad[:3])}"
                f"{f' and {len(bad) - 3} more' if len(bad) > 3 else ''} at {where}; no "
                f"checkpoint was written from it (the last good one is kept: {kept}). "
                "Lower --lr or check the data")
        self.epoch.assign(epoch)
        self.step.assign(step)
        self.record.wall_time_s = self._base_wall_time + time.time() - self._segment_start
        self.saved_record.assign(self.record.to_json())
        kept = self.manager.latest_checkpoint
        try:
            self.manager.save()
        except tf.errors.OpError as error:  # disk full, directory gone or read-only, ...
            for name in os.listdir(self.manager.directory):  # the failed save's temporary files
                if name.startswith(f"{CHECKPOINT_PREFIX}-") and "_temp" in name:
                    shutil.rmtree(os.path.join(self.manager.directory, name), ignore_errors=True)
            raise UserError(
                f"cannot write a checkpoint in {self.manager.directory} at {where} "
                f"({error.message.splitlines()[0]}); the last checkpoint "
                f"({kept or 'none yet'}) is intact: free the space and re-run the same command "
                "to resume from it") from error
