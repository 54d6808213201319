"""Datasets, label corruption and tf.data pipelines for GDW.

Entry point: ``build(name, ...)`` -> DataBundle (train / meta / meta_once / test
pipelines and a JSON summary). Datasets: ``available_datasets()``;
augmentation recipes: ``available_augmentations()``. The protocol pieces
(meta split, long tail, label noise) are exported for direct use.
"""
from gdw_tf.data.pipeline import with_meta
from gdw_tf.data.augment import (
    AUGMENTATIONS,
    Augmentation,
    available_augmentations,
    make_augmentation,
    reflect_pad_crop_flip,
)
from gdw_tf.data.bundle import DEFAULT_DATASET, DataBundle, build, known_input
from gdw_tf.data.sources.base import default_cache_dir
from gdw_tf.data.protocol import (
    NOISE_TYPES,
    ORDER,
    ProtocolConfig,
    ProtocolResult,
    apply_protocol,
    check_imbalance,
    check_noise,
    check_num_meta,
    corrupt_labels,
    empirical_transition,
    flip_targets,
    long_tail_counts,
    long_tail_subsample,
    realised_noise,
    split_meta,
    transition_matrix,
)
from gdw_tf.data.sources import (
    SOURCES,
    ArraySplits,
    RecordFiles,
    SourceOptions,
    StreamSplits,
    available_datasets,
    register_source,
)
from gdw_tf.data.sources.folder import list_image_folder, load_image_folder
from gdw_tf.data.bundle import write_summary

__all__ = [
    "with_meta", "build", "known_input", "DataBundle", "DEFAULT_DATASET", "available_datasets",
    "available_augmentations", "make_augmentation", "Augmentation", "AUGMENTATIONS",
    "reflect_pad_crop_flip", "register_source", "SOURCES", "ArraySplits", "StreamSplits",
    "RecordFiles", "SourceOptions", "transition_matrix", "corrupt_labels", "flip_targets",
    "realised_noise",
    "empirical_transition", "check_noise", "NOISE_TYPES", "long_tail_counts",
    "long_tail_subsample", "check_imbalance", "split_meta", "check_num_meta", "apply_protocol",
    "ProtocolConfig", "ProtocolResult", "ORDER", "write_summary", "default_cache_dir",
    "list_image_folder", "load_image_folder",
]
