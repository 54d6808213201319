"""finetune: `base` (Plain), then a few epochs of plain cross-entropy on the meta set."""
import keras

from gdw_tf.methods.auxiliary import plain_trainer
from gdw_tf.methods.method import register_method
from gdw_tf.methods.plain import Plain


@register_method("finetune")
class FineTune(Plain):
    """The paper's "Fine-tuning": train as `base`, then fine-tune on the clean meta set.

    After the main fit, `finish` runs `finetune_epochs` passes over
    `bundle.meta_once` with plain cross-entropy, SGD (momentum
    `finetune_momentum`) at the constant `finetune_learning_rate`, and the
    model's weight decay, updating the backbone in place. Defaults (the GDW
    paper states none and reports similar results for learning rates from
    1e-7 to 1e-1): finetune_learning_rate=1e-3, finetune_epochs=5,
    finetune_momentum=0.9. Returns the test loss/accuracy before and after.
    """

    def __init__(self, finetune_learning_rate=1e-3, finetune_epochs=5,
                 finetune_momentum=0.9, **kwargs):
        super().__init__(**kwargs)
        self.finetune_learning_rate = float(finetune_learning_rate)
        self.finetune_epochs = int(finetune_epochs)
        self.finetune_momentum = float(finetune_momentum)
        if self.finetune_learning_rate <= 0:
            raise ValueError(
                f"finetune: finetune_learning_rate must be > 0, got {finetune_learning_rate!r}")
        if self.finetune_epochs < 1:
            raise ValueError(f"finetune: finetune_epochs must be >= 1, got {finetune_epochs!r}")

    def get_config(self):
        return {**super().get_config(),
                "finetune_learning_rate": self.finetune_learning_rate,
                "finetune_epochs": self.finetune_epochs,
                "finetune_momentum": self.finetune_momentum}

    def prepare(self, model, bundle, verbose=0):
        if bundle.meta_once is None:
            raise ValueError("finetune fine-tunes on the meta set: num_meta must be > 0")

    def finish(self, model, bundle, verbose=0):
        """Fine-tunes `model.backbone` on the meta set; returns {"finetune": results}."""
        self.prepare(model, bundle)
        tuner = plain_trainer(model, model.backbone,
                              lambda: keras.optimizers.SGD(self.finetune_learning_rate,
                                                           momentum=self.finetune_momentum),
                              name="finetune")
        results = {"learning_rate": self.finetune_learning_rate,
                   "epochs": self.finetune_epochs}
        if bundle.test is not None:
            results["test_before"] = _floats(tuner.evaluate(bundle.test, return_dict=True,
                                                            verbose=verbose))
        history = tuner.fit(bundle.meta_once, epochs=self.finetune_epochs, verbose=verbose)
        results["meta_train_loss"] = [float(v) for v in history.history["loss"]]
        if bundle.test is not None:
            results["test_after"] = _floats(tuner.evaluate(bundle.test, return_dict=True,
                                                           verbose=verbose))
        out = {"finetune": results}
        if "test_after" in results:  # the method's result is the fine-tuned model's
            out["final_accuracy"] = 100.0 * results["test_after"]["accuracy"]
            out["last_accuracy"] = out["final_accuracy"]
            out["best_accuracy"] = max(out["final_accuracy"],
                                       100.0 * results["test_before"]["accuracy"])
        return out


def _floats(logs):
    return {k: float(v) for k, v in logs.items()}
