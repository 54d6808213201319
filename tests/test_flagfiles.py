"""flags/*.flags: each parses with the trainer's flags and gives the paper's values."""
import copy
import os

import pytest
from absl import flags as absl_flags

from gdw_tf import flags as gdw_flags
from gdw_tf.config import RunConfig
from gdw_tf.methods import available_methods, create_method, data_options
from tests.tiny import ROOT

FLAGFILES = sorted(f for f in os.listdir(os.path.join(ROOT, "flags")) if f.endswith(".flags"))
BASES = ["cifar_base.flags", "cifar_n_base.flags"]  # nested by the settings, not run alone
SETTINGS = [f for f in FLAGFILES if f not in BASES]
# What a flagfile may set: data, model and optimisation. The weighting methods' flags stay
# unset (their defaults are the paper's values; CIFAR-100's outer_lr of 1000 is that
# dataset's default), so every flagfile works with every --method.
SHARED = {"dataset", "noise_type", "noise_rate", "imbalance_factor", "num_meta", "model",
          "epochs", "batch_size", "lr", "schedule", "momentum", "weight_decay",
          "label_key", "true_label_key", "train_split", "test_split", "image_size"}
# Real noise without a clean label: the bi-level methods need --meta_source=auto on top.
NO_TRUTH = {"cnwl_red40.flags"}


@pytest.fixture(autouse=True)
def _from_the_repository_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # nested --flagfile paths are relative to the working directory


def parse(*argv):
    """The trainer's flags parsed from `argv`, on copies (the global FLAGS stay untouched,
    and whatever another test parsed into them is not carried over)."""
    values = absl_flags.FlagValues()
    for flag in absl_flags.FLAGS.get_flags_for_module(gdw_flags):
        values[flag.name] = copy.deepcopy(flag)  # the same definitions, validators and defaults
        values[flag.name].unparse()
    values(["train", *argv])
    return values


def settings(values):
    """The flag values of parsed `values`, by name."""
    return {name: values[name].value for name in values}


def test_every_flagfile_parses_sets_no_method_flag_and_works_with_every_method():
    from gdw_tf.methods.bilevel import BilevelMethod
    from gdw_tf.methods.method import METHODS

    assert len(SETTINGS) == 27
    for name in FLAGFILES:
        values = parse(f"--flagfile=flags/{name}")
        present = {flag for flag in values if values[flag].present}
        assert present <= SHARED, (name, present - SHARED)
        if name in SETTINGS:
            assert values["dataset"].value in (
                "cifar10", "cifar100", "clothing1m", "tfds:cifar10_n", "tfds:cifar100_n",
                "tfds:controlled_noisy_web_labels/mini_imagenet_red"), name
            assert {"dataset", "model", "epochs", "lr"} <= present, name
            for method in available_methods():  # the trainer's check of method flags passes
                extra = {}
                if name in NO_TRUTH and METHODS.get(method).needs_meta:
                    with pytest.raises(ValueError, match="--meta_source=auto"):
                        RunConfig.from_flag_values({**settings(values), "method": method})
                    if not issubclass(METHODS.get(method), BilevelMethod):
                        continue  # glc: needs a clean meta set before training, none here
                    extra = {"meta_source": "auto"}
                config = RunConfig.from_flag_values({**settings(values), "method": method, **extra})
                assert config.method.options == {}, (name, method)  # paper values: data_options


@pytest.mark.parametrize("name, data, optimisation, outer_lr", [
    ("cifar10_uniform40.flags",
     dict(dataset="cifar10", noise_type="uniform", noise_rate=0.4, imbalance_factor=1.0,
          num_meta=1000, model="resnet32"),
     dict(epochs=80, batch_size=100, lr=0.1, momentum=0.9, weight_decay=5e-4), 100.0),
    ("cifar100_longtail01.flags",
     dict(dataset="cifar100", noise_type="none", noise_rate=0.0, imbalance_factor=0.1,
          num_meta=1000, model="resnet32"),
     dict(epochs=80, batch_size=100, lr=0.1, momentum=0.9, weight_decay=5e-4), 1000.0),
    ("cifar10n_worst.flags",
     dict(dataset="tfds:cifar10_n", label_key="worse_label", true_label_key="label",
          noise_type=None, imbalance_factor=1.0, num_meta=1000, model="resnet32"),
     dict(epochs=100, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4), 100.0),
    ("cifar100n.flags",
     dict(dataset="tfds:cifar100_n", label_key="noise_label", true_label_key="label",
          noise_type=None, imbalance_factor=1.0, num_meta=1000, model="resnet32"),
     dict(epochs=100, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4), 1000.0),
    ("cnwl_red40.flags",
     dict(dataset="tfds:controlled_noisy_web_labels/mini_imagenet_red", train_split="train_40",
          test_split="validation", image_size=32, true_label_key=None, num_meta=None),
     dict(epochs=80, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4), 100.0),
    ("clothing1m.flags",
     dict(dataset="clothing1m", noise_type=None, noise_rate=None, imbalance_factor=1.0,
          num_meta=None, model="resnet18"),
     dict(epochs=5, batch_size=128, lr=1e-3, momentum=0.9, weight_decay=1e-3), 100.0),
])
def test_flagfiles_give_the_papers_values(name, data, optimisation, outer_lr):
    values = parse(f"--flagfile=flags/{name}")
    assert {k: values[k].value for k in data} == data
    assert {k: values[k].value for k in optimisation} == pytest.approx(optimisation)
    assert values["schedule"].value == "cosine"
    auto = {"meta_source": "auto"} if name in NO_TRUTH else {}
    config = RunConfig.from_flag_values({**settings(values), "method": "gdw", **auto})
    # As the trainer builds GDW: data_options (the dataset's paper values), then the explicit.

    class Bundle:  # what data_options reads of the DataBundle
        name = config.data.dataset

    gdw = {**create_method("gdw").options(), **data_options("gdw", Bundle), **config.method.options}
    paper = {"outer_lr": outer_lr, "clip": 0.2, "meta_learning_rate": 1e-3,
             "meta_weight_decay": 1e-4, "hidden_units": 100, "meta_interval": 1}
    assert {k: gdw[k] for k in paper} == paper


def test_a_flag_after_the_flagfile_overrides_it_and_the_setting_overrides_the_base():
    values = parse("--flagfile=flags/cifar100_uniform40.flags", "--epochs=3", "--method=base")
    assert values["epochs"].value == 3 and values["method"].value == "base"
    assert values["noise_rate"].value == 0.4  # the setting's line, after the base's defaults


def test_nested_flagfiles_resolve_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(absl_flags.CantOpenFlagFileError, match="flags/cifar_base.flags"):
        parse(f"--flagfile={os.path.join(ROOT, 'flags', 'cifar10_uniform40.flags')}")
