"""Run outputs: checkpoints that resume, history, results.json and figures."""
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

FINAL_EPOCHS = 5  # final accuracy = mean over the last 5 epochs (reference log)


def _atomic_write_json(path, payload):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, default=float)
    os.replace(tmp, path)


class ResumableCheckpoint(keras.callbacks.Callback):
    """Saves everything a run needs to continue, every epoch (and at the end).

    The checkpoint holds the model (backbone, the method's state: weighting
    network, meta optimizer, tables), the classifier's optimizer, the number of
    finished epochs, and the per-epoch history so far (history.json, written
    after the checkpoint). `restore()` before `fit` returns the epoch to
    resume from; a killed run loses at most the epoch in progress.
    """

    def __init__(self, directory, model, write=True, max_to_keep=2):
        super().__init__()
        self.directory = directory
        self.write = write
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="finished_epochs")
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer,
                                              finished_epochs=self.epoch)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(directory, "checkpoints"), max_to_keep=max_to_keep)
        self.history_path = os.path.join(directory, "history.json")
        self.history = {}

    def restore(self):
        """Restores the latest checkpoint, if any; returns the epoch to start at."""
        latest = self.manager.latest_checkpoint
        if latest is None:
            return 0
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        if os.path.exists(self.history_path):
            with open(self.history_path) as f:
                saved = json.load(f)
            done = int(self.epoch.numpy())
            self.history = {k: v[:done] for k, v in saved.items()}
        return int(self.epoch.numpy())

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.epoch.assign(epoch + 1)
        self.manager.save(checkpoint_number=epoch + 1)
        if self.write:
            _atomic_write_json(self.history_path, self.history)


class WeightHistograms(keras.callbacks.Callback):
    """Records the per-epoch target-weight histograms (clean vs noisy).

    Read when validation starts (Keras resets every metric right after
    `on_test_begin`) and again at epoch end for runs without validation.
    """

    def __init__(self):
        super().__init__()
        self.by_epoch = {}
        self._epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_test_begin(self, logs=None):
        if self._epoch is not None:
            self._record(self._epoch)

    def on_epoch_end(self, epoch, logs=None):
        if epoch not in self.by_epoch:
            self._record(epoch)
        self._epoch = None

    def _record(self, epoch):
        hist = self.model.weight_histograms
        clean, noisy = (np.asarray(hist[k].result()) for k in ("clean", "noisy"))
        if clean.sum() + noisy.sum() > 0:
            self.by_epoch[epoch] = {"clean": clean.tolist(), "noisy": noisy.tolist()}

    def edges(self):
        return self.model.weight_histograms["clean"].edges()


def results_summary(history, settings, wall_time, extra=None):
    """The results.json payload (accuracies in %)."""
    acc = [100.0 * a for a in history.get("val_accuracy", [])]
    payload = {
        "final_accuracy": float(np.mean(acc[-FINAL_EPOCHS:])) if acc else None,
        "best_accuracy": float(np.max(acc)) if acc else None,
        "last_accuracy": acc[-1] if acc else None,
        "epochs_completed": len(acc),
        "wall_time_s": wall_time,
        "history": history,
        "flags": settings,
    }
    payload.update(extra or {})
    return payload


def write_results(directory, payload):
    path = os.path.join(directory, "results.json")
    _atomic_write_json(path, payload)
    return path


def write_figures(directory, history, histograms=None, edges=None):
    """Accuracy curves, Figure 3 (target weights clean vs noisy), Figure 5."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    written = []
    epochs = np.arange(1, len(history.get("loss", [])) + 1)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key, label in (("accuracy", "train (given labels)"), ("val_accuracy", "test")):
        if key in history:
            ax.plot(epochs, 100 * np.asarray(history[key]), label=label)
    ax.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    ax.legend()
    written.append(_save(fig, directory, "accuracy.png"))

    if histograms:
        last = histograms[max(histograms)]
        centres = 0.5 * (np.asarray(edges[:-1]) + np.asarray(edges[1:]))
        width = edges[1] - edges[0]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for key, color in (("clean", "tab:blue"), ("noisy", "tab:red")):
            counts = np.asarray(last[key])
            if counts.sum():
                ax.bar(centres, counts / counts.sum(), width=width, alpha=0.6,
                       color=color, label=f"{key} examples")
        ax.set(xlabel="target weight $\\omega_t$", ylabel="fraction",
               title=f"Target weights, epoch {max(histograms) + 1} (Fig. 3)")
        ax.legend()
        written.append(_save(fig, directory, "target_weights.png"))

    keys = [("increased_nontarget_clean", "$\\omega^c_{nt}$"),
            ("increased_truetarget_noisy", "$\\omega^n_{tt}$"),
            ("increased_nontarget_noisy", "$\\omega^n_{nt}$")]
    if all(k in history for k, _ in keys):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for key, label in keys:
            ax.plot(epochs, 100 * np.asarray(history[key]), label=label)
        ax.set(xlabel="epoch", ylabel="increased weights (%)",
               title="Class-level weights increased in stage 2 (Fig. 5)")
        ax.legend()
        written.append(_save(fig, directory, "increased_weights.png"))
    return written


def _save(fig, directory, name):
    path = os.path.join(directory, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path


class Timer:
    def __init__(self):
        self.start = time.time()

    def elapsed(self):
        return time.time() - self.start
