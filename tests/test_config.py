"""RunConfig: made once from the trainer's flags, serialised as flags.json, read back."""
import dataclasses

import pytest

from gdw_tf.config import FLAG_DEFAULTS, RunConfig


def test_flags_json_holds_every_flag_and_reads_back_to_the_same_config():
    config = RunConfig.from_flag_values({"method": "gdw", "method_option": ["clip=0.5"]})
    saved = config.to_flags()
    assert set(saved) == set(FLAG_DEFAULTS)
    assert saved["method_option"] == ["clip=0.5"] and saved["epochs"] == 150
    assert RunConfig.from_flag_values(saved) == config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.optim.lr = 1.0


def test_a_flags_json_of_an_older_run_takes_the_defaults_of_flags_it_lacks():
    old = {"method": "mwnet", "dataset": "digits", "gone_flag": 1}  # no labels, meta_source, ...
    config = RunConfig.from_flag_values(old)
    assert (config.data.labels_missing, config.data.meta_source) == ("error", "given")
    assert config.run.directory == "runs/digits_uniform0.4_mwnet_seed0"


@pytest.mark.parametrize("values, fragment", [
    ({"method": "base", "outer_lr": 5.0}, "--outer_lr: method 'base' has no option outer_lr"),
    ({"method": "gdw", "method_option": ["nope=1"]},
     "--method_option=nope=...: method 'gdw' has no option nope"),
    ({"method": "gdw", "clip": 0.1, "method_option": ["clip=0.2"]}, "both set clip"),
    ({"method": "gwd"}, "unknown method 'gwd'"),
])
def test_bad_method_options_are_one_error_naming_the_flag(values, fragment):
    with pytest.raises(ValueError, match=fragment):  # as the config is made
        RunConfig.from_flag_values(values)


def test_the_python_api_defaults_are_the_flags_defaults():
    """gdw_tf.data.build and GDWModel take some flags as keyword arguments; where a flag's
    default is a value (not resolved per dataset), the library's default is the same."""
    import inspect

    import gdw_tf

    resolved = {"noise_type", "noise_rate", "dataset"}  # per dataset: RunConfig
    shared = 0
    for fn in (gdw_tf.data.build, gdw_tf.GDWModel.__init__):
        for name, p in inspect.signature(fn).parameters.items():
            if name in FLAG_DEFAULTS and name not in resolved and p.default is not p.empty:
                assert p.default == FLAG_DEFAULTS[name], (fn.__qualname__, name)
                shared += 1
    assert shared >= 10


def test_a_keras_backbone_fine_tuned_from_weights_starts_at_the_clothing1m_learning_rate():
    def lr(**values):
        return RunConfig.from_flag_values({"dataset": "folder", "data_dir": "photos", **values}).optim.lr

    assert lr(model="keras:EfficientNetV2B0", init_weights="imagenet") == 1e-3
    assert lr(model="keras:EfficientNetV2B0", init_weights="w.keras", lr=0.01) == 0.01
    assert lr(model="keras:EfficientNetV2B0") == lr(model="keras:EfficientNetV2B0", init_weights="none") == 0.1
    assert lr(model="resnet18", init_weights="resnet18.npz") == 0.1
