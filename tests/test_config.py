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
        flag_values = {"dataset": "folder", "data_dir": "photos", **values}
        return RunConfig.from_flag_values(flag_values).optim.lr

    assert lr(model="keras:EfficientNetV2B0", init_weights="imagenet") == 1e-3
    assert lr(model="keras:EfficientNetV2B0", init_weights="w.keras", lr=0.01) == 0.01
    assert (lr(model="keras:EfficientNetV2B0")
            == lr(model="keras:EfficientNetV2B0", init_weights="none") == 0.1)
    assert lr(model="resnet18", init_weights="resnet18.npz") == 0.1


def test_one_table_of_dataset_defaults_feeds_the_help_the_config_and_the_python_api(tmp_path):
    """gdw_tf.defaults is read by the flags' help, RunConfig and data_options: change a value
    there and all three follow (checked with a changed table, not against copies of it)."""
    import dataclasses

    from absl import flags as absl_flags

    from gdw_tf import defaults
    from gdw_tf.methods import data_options

    for name, table in defaults.DATASET_DEFAULTS.items():
        config = RunConfig.from_flag_values({"dataset": name, "data_dir": str(tmp_path)})
        assert (config.method.model, config.optim.lr, config.optim.epochs) == \
            (table.model, table.lr, table.epochs), name
    help_text = absl_flags.FLAGS["epochs"].help
    assert all(f"{table.epochs} " in help_text for table in defaults.DATASET_DEFAULTS.values())
    assert "1000" not in defaults.per_dataset("epochs")

    class Bundle:  # what data_options reads of a DataBundle
        name = "cifar100"

    assert data_options("gdw", Bundle) == {"outer_lr": 1000.0}  # for Python users too
    assert data_options("mwnet", Bundle) == {}  # mwnet has no outer_lr
    Bundle.name = "tfds:cifar100_n"  # the same images: the same paper values
    assert data_options("gdw", Bundle) == {"outer_lr": 1000.0}
    changed = dataclasses.replace(defaults.DATASET_DEFAULTS["cifar100"], epochs=7,
                                  method_options={"outer_lr": 5.0})
    original = defaults.DATASET_DEFAULTS["cifar100"]
    defaults.DATASET_DEFAULTS["cifar100"] = changed
    try:
        assert data_options("gdw", Bundle) == {"outer_lr": 5.0}
        assert RunConfig.from_flag_values({"dataset": "cifar100"}).optim.epochs == 7
        assert "7 cifar100" in defaults.per_dataset("epochs")
    finally:
        defaults.DATASET_DEFAULTS["cifar100"] = original


def test_data_build_takes_the_data_configs_fields_by_name():
    import inspect

    import gdw_tf
    from gdw_tf.config import DataConfig

    fields = {f.name for f in dataclasses.fields(DataConfig)}
    taken = set(inspect.signature(gdw_tf.data.build).parameters) - {"name"}
    assert taken <= fields, taken - fields  # every parameter is a DataConfig field
    config = RunConfig.from_flag_values({"dataset": "digits", "num_meta": 30, "seed": 4})
    assert config.data.build_args()["num_meta"] == 30 and set(config.data.build_args()) == taken
