"""history.json and log.csv: every logged metric of every finished epoch of a run."""
import os

import keras

from gdw_tf.files import atomic_open, write_json


class HistoryFiles(keras.callbacks.Callback):
    """Rewrites history.json (metric name -> one value per finished epoch) and log.csv in
    `directory` at each epoch end from `checkpoint.record` (a
    `gdw_tf.checkpoints.ResumableCheckpoint`), so the files cover every segment of a
    resumed run. Goes after `checkpoint` in the callback list: the files are written only
    once the epoch's checkpoint is."""

    def __init__(self, directory, checkpoint):
        super().__init__()
        self.directory = directory
        self.checkpoint = checkpoint

    def on_epoch_end(self, epoch, logs=None):
        history = self.checkpoint.record.history
        write_json(os.path.join(self.directory, "history.json"), history)
        write_log_csv(os.path.join(self.directory, "log.csv"), history)


def write_log_csv(path, history):
    """log.csv: one row per epoch, columns epoch and the sorted metric names. A metric
    logged only from a later epoch on (a run resumed by a release that logs more) has
    empty cells before it."""
    keys = sorted(history)
    epochs = max((len(history[k]) for k in keys), default=0)
    rows = ["epoch," + ",".join(keys)]
    for i in range(epochs):
        cells = (history[k][i - epochs + len(history[k])] if i >= epochs - len(history[k])
                 else None for k in keys)
        rows.append(f"{i}," + ",".join("" if c is None else repr(c) for c in cells))
    with atomic_open(path) as f:
        f.write("\n".join(rows) + "\n")
