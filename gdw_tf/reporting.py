"""Run reports: the console's epoch lines, results.json and figures."""
import dataclasses
import os
import time

import keras
import numpy as np

from gdw_tf.files import save_figure, write_json

FINAL_EPOCHS = 5  # final accuracy = mean over the last 5 epochs (reference log)


class EpochLine(keras.callbacks.Callback):
    """Prints one short line per epoch with the key metrics (log.csv and TensorBoard
    have every metric), e.g.
    `epoch 12/150  loss 1.283  train acc 63.2%  test acc 94.2%  meta loss 0.412
    weights clean/noisy 0.73/0.41  0.5 s`."""

    KEYS = (("loss", "loss {:.3f}"), ("accuracy", "train acc {:.1%}"),
            ("val_accuracy", "test acc {:.1%}"), ("meta_loss", "meta loss {:.3f}"))

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs
        self._start = time.time()

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        parts = [f"epoch {epoch + 1}/{self.epochs}"]
        parts += [fmt.format(float(logs[key])) for key, fmt in self.KEYS if key in logs]
        if "target_weight_clean" in logs and "target_weight_noisy" in logs:
            parts.append(f"weights clean/noisy {float(logs['target_weight_clean']):.2f}/"
                         f"{float(logs['target_weight_noisy']):.2f}")
        parts.append(f"{time.time() - self._start:.1f} s")
        print("  ".join(parts), flush=True)



def run_results(config, model, record, finished, issues, num_replicas, schedule=None):
    """The results.json payload of a finished run of `config` (a RunConfig) trained as
    `model` with the `record` (RunRecord) of its checkpoints: the accuracies (those of
    `finished`, the dict or None `Method.finish` returned, win), the method's options, the
    truth-free check of the weights, `issues` (`label_issues.after_training`'s entry), the
    target-weight histograms and their AUC, the optimizers' iterations, the model, the
    `num_replicas` and, with --meta_source=auto, its `schedule` and choices."""
    from gdw_tf.diagnostics import binned_auc, weight_trust

    extra = dict(finished or {})
    extra["method_options"] = model.method.options()
    trust = weight_trust(record.history)
    if trust is not None:
        extra["weight_check"] = dataclasses.asdict(trust)
    extra.update(issues)
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
    extra["model"] = config.method.model
    extra["num_replicas"] = num_replicas
    if schedule:
        extra["auto_meta"] = {**dataclasses.asdict(schedule), "choices": record.auto_meta}
    acc = [100.0 * a for a in record.history.get("val_accuracy", [])]
    return {"final_accuracy": float(np.mean(acc[-FINAL_EPOCHS:])) if acc else None,
            "best_accuracy": float(np.max(acc)) if acc else None,
            "last_accuracy": acc[-1] if acc else None,
            "epochs_completed": len(acc),
            "wall_time_s": record.wall_time_s,
            "history": record.history,
            "flags": config.to_flags(),
            **extra}


def write_run_reports(directory, results, record, model):
    """results.json and the figures (figures/*.png) of a finished run."""
    write_results(directory, results)
    write_figures(os.path.join(directory, "figures"), record.history, record.histograms,
                  model.weight_histograms["clean"].edges())


def write_results(directory, payload):
    path = os.path.join(directory, "results.json")
    write_json(path, payload)
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
    import matplotlib.pyplot as plt

    fig.tight_layout()
    try:
        return save_figure(fig, os.path.join(directory, name), dpi=110)
    finally:
        plt.close(fig)
