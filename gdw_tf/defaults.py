"""The per-dataset defaults: one table that the flags' help text, `gdw_tf.config.RunConfig`
and the Python API (`gdw_tf.methods.data_options`) all read.

A flag left unset takes its dataset's value here; what a source decides from its data
(num_meta, augment) is the source's (`gdw_tf.data.build`), and an option left unset
everywhere is the method constructor's own default.
"""
import dataclasses

SYNTHETIC_NOISE_RATE = 0.4  # --noise_rate's default with synthetic noise
# A keras:NAME backbone fine-tuned from --init_weights starts at the learning rate of the
# paper's Clothing1M setting (every layer trained from ImageNet weights), not from scratch's.
FINE_TUNE_LR = 1e-3
TFDS_PREFIX = "tfds:"


@dataclasses.dataclass(frozen=True)
class DatasetDefaults:
    """Values of the flags left unset, for one --dataset.

    noise_type: synthetic noise ("none" for a dataset with real noise); its rate
    defaults to SYNTHETIC_NOISE_RATE, or 0 with "none". pretrained: the paper's
    setting starts `model` from pretrained weights (--init_weights).
    method_options: the paper's per-dataset values of method options, for the
    methods that take them, where neither a method flag nor --method_option sets them.
    """

    model: str
    lr: float
    epochs: int
    noise_type: str = "uniform"
    pretrained: bool = False
    method_options: dict = dataclasses.field(default_factory=dict)


# digits runs 150 epochs (1,800 iterations): long enough for the weighting network to
# learn and for plain training to memorise the noisy labels, the regime GDW is for
# (docs/evidence.md, "The embedded default").
DATASET_DEFAULTS = {"digits": DatasetDefaults("small_cnn", 0.05, 150),
                    "cifar10": DatasetDefaults("resnet32", 0.1, 80),
                    "cifar100": DatasetDefaults("resnet32", 0.1, 80,
                                                method_options={"outer_lr": 1000.0}),
                    "folder": DatasetDefaults("resnet32", 0.1, 30),
                    "clothing1m": DatasetDefaults("resnet18", 1e-3, 5, noise_type="none",
                                                  pretrained=True)}
# --dataset=tfds:NAME takes the defaults of dataset NAME, or of the dataset of the same images:
TFDS_SAME_IMAGES = {"cifar10_n": "cifar10", "cifar100_n": "cifar100"}  # CIFAR-N: CIFAR's images
OTHER_DATASET_DEFAULTS = DatasetDefaults("resnet32", 0.1, 30)


def for_dataset(dataset):
    """The DatasetDefaults of --dataset (a registered name or tfds:NAME[/CONFIG]). A tfds:
    dataset takes the defaults of dataset NAME, if any (tfds:cifar100 those of cifar100), or
    of the dataset of the same images (TFDS_SAME_IMAGES: tfds:cifar100_n those of cifar100),
    with no synthetic noise: its labels are taken as they are."""
    if not dataset.startswith(TFDS_PREFIX):
        return DATASET_DEFAULTS.get(dataset, OTHER_DATASET_DEFAULTS)
    name = dataset[len(TFDS_PREFIX):].partition("/")[0]
    defaults = DATASET_DEFAULTS.get(TFDS_SAME_IMAGES.get(name, name), OTHER_DATASET_DEFAULTS)
    return dataclasses.replace(defaults, noise_type="none")


def per_dataset(field):
    """'150 digits, 80 cifar10/cifar100, ...': the table's `field` by dataset, for help texts."""
    names = {}
    for dataset, defaults in DATASET_DEFAULTS.items():
        names.setdefault(getattr(defaults, field), []).append(dataset)
    listed = [f"{value:g}" if isinstance(value, float) else str(value) for value in names]
    by_value = ", ".join(f"{value} {'/'.join(datasets)}"
                         for value, datasets in zip(listed, names.values()))
    return by_value + f", else {getattr(OTHER_DATASET_DEFAULTS, field)}"
