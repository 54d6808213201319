"""Dataset sources; importing this package registers them all (see base.py)."""
import dataclasses
import functools

from gdw_tf.data.sources import clothing1m, digits, folder, tfds_any, tfds_cifar  # noqa: F401  (registration)
from gdw_tf.data.sources.base import (  # noqa: F401
    SOURCES,
    TFDS_PREFIX,
    ArraySplits,
    RecordFiles,
    SourceOptions,
    SourceSpec,
    StreamSplits,
    available_datasets,
    register_source,
)


def get_source(name: str) -> SourceSpec:
    """The SourceSpec of --dataset=name: a registered name, or tfds:NAME[/CONFIG] (any prepared
    TFDS dataset, whose spec is the registered tfds one named `name`); a ValueError lists them."""
    if name.startswith(TFDS_PREFIX):
        spec = SOURCES.get(TFDS_PREFIX + "NAME[/CONFIG]")
        return dataclasses.replace(spec, name=name, load=functools.partial(spec.load, dataset=name))
    return SOURCES.get(name)
