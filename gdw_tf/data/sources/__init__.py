"""Dataset sources; importing this package registers them all (see base.py)."""
from gdw_tf.data.sources import clothing1m, digits, folder, tfds_cifar  # noqa: F401  (registration)
from gdw_tf.data.sources.base import (  # noqa: F401
    SOURCES,
    ArraySplits,
    RecordFiles,
    SourceOptions,
    SourceSpec,
    StreamSplits,
    available_datasets,
    register_source,
)
