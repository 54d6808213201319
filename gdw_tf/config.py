"""A run's configuration: made once from the flags (or a run's flags.json), frozen.

`RunConfig.from_flags()` reads the trainer's flags (`gdw_tf.flags`), resolves every
value they leave unset that depends on the dataset (`gdw_tf.defaults`: model, lr,
epochs, noise, the paper's per-dataset method options). A RunConfig is valid by
construction: what can be checked before any data is read (the method, its options,
the meta source) is checked as it is made, so a bad flag fails before the run touches
its output directory. Each part of a run takes its own slice: `data` (what
`gdw_tf.data.build` reads), `method` (the method, its options and the backbone), `optim`
(the classifier's SGD) and `run` (how the run is carried out and where it writes).
`to_flags()` is flags.json's content: every flag by name, the dataset defaults resolved.

Defaults not resolved here: those a source decides from its data (num_meta, augment:
`gdw_tf.data.build`) and the method constructors' own (an option left unset). The
keyword defaults of the Python API (`gdw_tf.data.build`, `GDWModel`) are the flags' own
where they share a name (a test keeps them so).
"""
import ast
import dataclasses
import os
import re

from gdw_tf import flags as gdw_flags
from gdw_tf.defaults import FINE_TUNE_LR, SYNTHETIC_NOISE_RATE, TFDS_PREFIX, for_dataset
from gdw_tf.flags import FLAGS, METHOD_FLAGS

# The trainer's flags (those gdw_tf.flags defines): name -> default.
FLAG_DEFAULTS = {flag.name: flag.default for flag in FLAGS.get_flags_for_module(gdw_flags)}
NO_INIT_WEIGHTS = "none"  # --init_weights=none: from scratch, on purpose
_DERIVED = {"derived": True}  # field metadata: resolved from the flags, not one of them


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The data of a run: `gdw_tf.data.build`'s parameters, named as their flags.

    image_size: every image resized to image_size x image_size when loaded (None: as stored),
    so the model's input is image_size x image_size (or the augmentation's crop of it).
    noise_type and noise_rate are resolved (dataset defaults); meta_warmup_epochs and
    meta_refresh_epochs are --meta_source=auto's choice schedule (`gdw_tf.auto_meta`).
    seed also seeds the model's initialisation.
    """

    dataset: str
    data_dir: str | None
    manual_dir: str | None
    cache_dir: str | None
    skip_bad_images: bool
    labels: str | None
    labels_missing: str
    label_key: str
    true_label_key: str | None
    train_split: str
    test_split: str
    noise_type: str
    noise_rate: float
    imbalance_factor: float
    num_meta: int | None
    meta_source: str
    meta_warmup_epochs: int | None
    meta_refresh_epochs: int | None
    train_per_class: int | None
    augment: str | None
    image_size: int | None
    batch_size: int
    meta_batch_size: int | None
    seed: int

    def build_args(self):
        """`gdw_tf.data.build`'s keyword arguments: every field it takes, by name (all but
        dataset, its first argument, and the --meta_source=auto schedule)."""
        import inspect

        from gdw_tf.data import build

        taken = inspect.signature(build).parameters
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)
                if field.name in taken and field.name != "name"}

    @property
    def synthetic_noise_rate(self):
        """The rate of the synthetic label noise (0 without: clean data or real noise)."""
        return 0.0 if self.noise_type == "none" else self.noise_rate


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """The training method and the backbone it trains.

    method, model (resolved), init_weights, freeze_backbone: their flags. outer_lr ...
    hidden_units and method_option: the method flags as given (None: unset), kept for
    flags.json.
    options: the method's constructor options set explicitly (checked): its method flags
    that are set, then --method_option. Under them, the trainer gives the method those of
    `gdw_tf.methods.data_options` (the dataset's paper values, e.g. CIFAR-100's outer_lr,
    and those derived from the data). expects_pretrained: the paper's setting starts this
    model from pretrained weights.
    """

    method: str
    model: str
    init_weights: str | None
    freeze_backbone: bool
    outer_lr: float | None
    clip: float | None
    meta_learning_rate: float | None
    meta_weight_decay: float | None
    hidden_units: int | None
    method_option: tuple
    options: dict = dataclasses.field(metadata=_DERIVED)
    expects_pretrained: bool = dataclasses.field(metadata=_DERIVED)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """The classifier's SGD: epochs and lr resolved (dataset defaults); schedule
    "cosine" (per-epoch cosine decay) or "constant"."""

    epochs: int
    lr: float
    schedule: str
    momentum: float
    weight_decay: float


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How the run is carried out and where it writes, named as their flags.

    output_dir: as given (None: unset); directory: where the run writes, output_dir or
    runs/<dataset>_<noise>_<method>_seed<seed>.
    """

    strategy: str
    num_cpu_devices: int
    tpu: str | None
    mixed_precision: bool
    jit_compile: bool
    output_dir: str | None
    verbose: int
    resume: str
    checkpoint_steps: int
    deterministic: bool
    traceback: bool
    directory: str = dataclasses.field(metadata=_DERIVED)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The whole configuration of a run (module doc)."""

    data: DataConfig
    method: MethodConfig
    optim: OptimConfig
    run: RunOptions

    @classmethod
    def from_flags(cls, flag_values=FLAGS):
        """The config of the parsed trainer flags `flag_values`."""
        return cls.from_flag_values({name: flag_values[name].value for name in FLAG_DEFAULTS})

    @classmethod
    def from_flag_values(cls, values):
        """The config of `values` (flag name -> value, as parsed or as saved in a run's
        flags.json); a flag missing takes its default (a run made before it existed), a
        name that is no flag is ignored. A ValueError names a flag whose value is wrong."""
        given = dict(FLAG_DEFAULTS)
        given.update((name, value) for name, value in values.items() if name in given)
        defaults = dataset_defaults(given["dataset"], given["data_dir"], given["labels"])
        noise_type = given["noise_type"] or defaults.noise_type
        noise_rate = given["noise_rate"]
        if noise_rate is None:
            noise_rate = 0.0 if noise_type == "none" else SYNTHETIC_NOISE_RATE
        given.update(noise_type=noise_type, noise_rate=noise_rate,
                     method_option=tuple(given["method_option"]),
                     **{name: getattr(defaults, name) for name in ("model", "lr", "epochs")
                        if given[name] is None})
        if given["model"].startswith(("keras:", "keras_hub:")):  # a pretrained model's recipe
            preset = given["model"].startswith("keras_hub:")  # always the preset's weights
            if preset and given["init_weights"] == NO_INIT_WEIGHTS:
                raise ValueError(f"--init_weights={NO_INIT_WEIGHTS} with --model={given['model']}: "
                                 "a KerasHub preset always starts from its own weights")
            if values.get("lr") is None and (
                    preset or given["init_weights"] not in (None, NO_INIT_WEIGHTS)):
                given["lr"] = FINE_TUNE_LR
            if given["image_size"] is None:  # the size it was trained at, e.g. 224
                from gdw_tf import models
                given["image_size"] = models.default_image_size(given["model"])
        options = _method_options(given)
        noise = "clean" if noise_type == "none" else f"{noise_type}{noise_rate:g}"
        if given["imbalance_factor"] < 1:
            noise += f"_lt{given['imbalance_factor']:g}"
        dataset_name = re.sub(r"[^A-Za-z0-9_.-]+", "-", given["dataset"])  # tfds:a/b -> tfds-a-b
        directory = given["output_dir"] or os.path.join(
            "runs", f"{dataset_name}_{noise}_{given['method']}_seed{given['seed']}")
        return cls(
            data=_pick(DataConfig, given),
            method=_pick(MethodConfig, given, options=options, expects_pretrained=(
                defaults.pretrained and given["model"] == defaults.model)),
            optim=_pick(OptimConfig, given),
            run=_pick(RunOptions, given, directory=directory))

    def __post_init__(self):
        """Validates what can be checked before any data is read: --method, its options
        (against --model too) and the meta source; a ValueError names the flag."""
        _check_method_options(self)
        _check_meta_source(self)

    def to_flags(self):
        """Every flag by name (dataset defaults resolved, --method_option a list): flags.json."""
        values = {}
        for part in (self.data, self.method, self.optim, self.run):
            values.update((field.name, getattr(part, field.name))
                          for field in dataclasses.fields(part) if not field.metadata)
        return {**values, "method_option": list(values["method_option"])}


def _pick(cls, given, **derived):
    """A `cls` of its flags' values in `given` and its `derived` fields."""
    return cls(**{field.name: given[field.name] for field in dataclasses.fields(cls)
                  if not field.metadata}, **derived)


def dataset_defaults(dataset, data_dir=None, labels=None):
    """The `DatasetDefaults` of --dataset (`gdw_tf.defaults.for_dataset`). A folder with
    labels of its own (ROOT/meta or --labels) gets no synthetic noise by default: its labels
    are taken as they are."""
    from gdw_tf.data.sources.folder import has_own_labels

    found = for_dataset(dataset)
    if dataset == "folder" and has_own_labels(data_dir, labels):
        found = dataclasses.replace(found, noise_type="none")
    return found


def parse_method_options(items):
    """['gamma=2', 'mode=soft'] -> {'gamma': 2, 'mode': 'soft'}; a key given twice is a
    ValueError."""
    options = {}
    for key, value in _option_items(items):
        if key in options:
            raise ValueError(f"--method_option sets {key} twice")
        options[key] = value
    return options


def _option_items(items):
    """['gamma=2', 'mode=soft'] -> [('gamma', 2), ('mode', 'soft')] (a value that is no
    Python literal stays text)."""
    pairs = []
    for item in items:
        key, _, text = item.partition("=")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        pairs.append((key.strip(), value))
    return pairs


def _method_options(given):
    """MethodConfig.options of the flag values `given` (flag name -> value): the method flags
    that are set, then --method_option (validated as the RunConfig is made)."""
    return {**{name: given[name] for name in METHOD_FLAGS if given[name] is not None},
            **dict(_option_items(given["method_option"]))}


def _check_method_options(config):
    """Raises a ValueError naming the flag or key if --method is unknown or does not take
    it, if a flag and a --method_option both set one option, or if an option does not fit
    --model."""
    from gdw_tf.methods.method import check_options

    method = config.method
    given_as = {name: f"--{name}" for name in METHOD_FLAGS if getattr(method, name) is not None}
    keys = parse_method_options(method.method_option)
    check_options(method.method, [*given_as, *keys],
                  {**given_as, **{key: f"--method_option={key}=..." for key in keys}})
    for key in keys:
        if key in given_as:
            raise ValueError(f"--{key} and --method_option={key}=... both set {key}; give it once")
    _check_virtual_scope(method.options, method.method, method.model, method.freeze_backbone)


def _check_virtual_scope(options, method, model, freeze_backbone=False):
    """Checks the method option that depends on the backbone (virtual_scope) against
    --model, before any data is read: the count of layers with weights does not depend
    on the data's classes or image size, so a stand-in build answers."""
    from gdw_tf import models
    from gdw_tf.methods.bilevel import check_virtual_scope, moved_variable_positions

    if options.get("virtual_scope") is None:
        return
    scope = check_virtual_scope(options["virtual_scope"], method)
    try:
        backbone = models.build(model, 2)
        if freeze_backbone:
            models.freeze_backbone(backbone)
        moved_variable_positions(backbone, scope)
    except ValueError as error:
        raise ValueError(f"--method_option=virtual_scope={scope} with --model={model}: "
                         f"{error}") from None


def _check_meta_source(config):
    """--meta_source=auto applies to the bi-level methods; its schedule flags to it only. A
    tfds: dataset without --true_label_key has no clean meta set: a method that needs one
    needs --true_label_key or --meta_source=auto."""
    from gdw_tf.methods.bilevel import BilevelMethod
    from gdw_tf.methods.method import METHODS

    data, method = config.data, config.method.method
    if (data.dataset.startswith(TFDS_PREFIX) and data.true_label_key is None
            and data.meta_source == "given" and method in METHODS
            and METHODS.get(method).needs_meta):
        raise ValueError(f"--method={method} needs a clean meta set, "
                         f"and --dataset={data.dataset} has "
                         "none without its true labels: pass --true_label_key=FEATURE (held out by "
                         "it) or --meta_source=auto (chosen from the noisy training data)")
    if data.meta_source != "auto":
        for flag in ("meta_warmup_epochs", "meta_refresh_epochs"):
            if getattr(data, flag) is not None:
                raise ValueError(f"--{flag} applies to --meta_source=auto only")
        return
    method_cls = METHODS.get(method)
    if not issubclass(method_cls, BilevelMethod):
        raise ValueError(f"--meta_source=auto chooses a meta set during training, for the bi-level "
                         f"methods (mwnet, gdw, l2rw, insw, soft_label, gen_label); --method="
                         f"{method} "
                         f"{'needs one before training' if method_cls.needs_meta else 'uses none'}")
