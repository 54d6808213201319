"""Datasets, label corruption and tf.data pipelines for GDW.

Entry point: ``build(name, ...)`` -> DataBundle (train / meta / meta_once / test
pipelines and a JSON summary). Datasets: ``available_datasets()``; augmentation
recipes: ``available_augmentations()``; your own (image, label) batches paired
with a meta set for `GDWModel.fit`: ``with_meta``; stable example indices for the
per-example record: ``with_index``.

Modules: `bundle` (build, DataBundle, the table of pipeline roles), `protocol`
(meta split, long tail, label noise, seeded random streams), `pipeline`
(tf.data pipelines, with_meta), `augment` (recipes), `sources` (one module per
dataset; `register_source` adds one).
"""
from gdw_tf.data.augment import available_augmentations, make_augmentation
from gdw_tf.data.bundle import DEFAULT_DATASET, DataBundle, build, known_input
from gdw_tf.data.pipeline import with_index, with_meta
from gdw_tf.data.sources import available_datasets, register_source

__all__ = [
    "build", "DataBundle", "DEFAULT_DATASET", "known_input", "available_datasets",
    "register_source",
    "available_augmentations", "make_augmentation", "with_index", "with_meta",
]
