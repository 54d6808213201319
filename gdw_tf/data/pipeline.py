"""tf.data pipelines over in-memory arrays and over streamed (TFDS) splits.

Randomness is reproducible: shuffling uses a fixed seed with
reshuffle_each_iteration (a new order every epoch, the same sequence of orders
every run), and augmentation is driven by stateless seeds taken from
``tf.data.Dataset.random(seed, rerandomize_each_iteration=True)`` zipped with
the data, so a given batch position in a given epoch always gets the same
augmentation regardless of parallelism.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from gdw_tf.data.augment import Augmentation
from gdw_tf.data.seeding import tf_seed_for

AUTOTUNE = tf.data.AUTOTUNE


def seed_stream(seed: int) -> tf.data.Dataset:
    """Infinite stream of int64 [2] stateless-op seeds; new values every epoch."""
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)


def _finish(ds, augmentation: Augmentation, training: bool, seed: int, stage: str,
            batch_size: int, drop_remainder: bool, load: Callable, output: Callable,
            seeds: Callable[[bool], tf.data.Dataset] | None = None):
    """Batches ds (of example ids), loads each example dict via `load`, augments, maps to `output`.

    seeds(per_batch): the augmentation's int64 [2] seeds, one per batch (batched
    recipes) or per example; default: `seed_stream` of the stage.
    """
    def augmented(example, s=None):
        image = augmentation.train(example["image"], s) if training else augmentation.test(example["image"])
        return {**example, "image": image}

    if training:
        seeds = (seeds(augmentation.batched) if seeds is not None
                 else seed_stream(tf_seed_for(seed, f"{stage}/augment")))
    if augmentation.batched:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        if training:
            ds = tf.data.Dataset.zip(ds, seeds).map(lambda i, s: output(augmented(load(i), s)), AUTOTUNE)
        else:
            ds = ds.map(lambda i: output(augmented(load(i))), AUTOTUNE)
    else:
        if training:
            ds = tf.data.Dataset.zip(ds, seeds).map(lambda i, s: augmented(load(i), s), AUTOTUNE)
        else:
            ds = ds.map(lambda i: augmented(load(i)), AUTOTUNE)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder).map(output, AUTOTUNE)
    return ds.prefetch(AUTOTUNE)


def array_dataset(images: tf.Tensor, rows: np.ndarray, fields: dict[str, np.ndarray], *,
                  augmentation: Augmentation, training: bool, batch_size: int,
                  drop_remainder: bool, shuffle: bool, repeat: bool, seed: int, stage: str,
                  output: Callable[[dict], object]) -> tf.data.Dataset:
    """Batches of examples rows[i] of `images` (uint8 [N0, H, W, C], shared by all datasets).

    fields: name -> int array [len(rows)], emitted as int32 [B] next to "image"
    (float32 [B, ...] after the augmentation's train or test function).
    Examples are addressed by position, shuffled as ids, and gathered per batch.
    """
    ds = tf.data.Dataset.range(len(rows))
    if shuffle:
        ds = ds.shuffle(len(rows), seed=tf_seed_for(seed, f"{stage}/shuffle"), reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    return _finish(ds, augmentation, training, seed, stage, batch_size, drop_remainder,
                   _array_loader(images, rows, fields), output)


def _array_loader(images, rows, fields):
    """id (scalar or [B]) -> {"image": images[rows[id]], field: fields[field][id]}."""
    rows_t = tf.constant(np.asarray(rows, np.int64))
    cols = {k: tf.constant(np.asarray(v, np.int32)) for k, v in fields.items()}

    def load(i):
        example = {k: tf.gather(v, i) for k, v in cols.items()}
        example["image"] = tf.gather(images, tf.gather(rows_t, i))
        return example
    return load


def positional_array_dataset(images: tf.Tensor, rows: np.ndarray, fields: dict[str, np.ndarray], *,
                             augmentation: Augmentation, batch_size: int, per_epoch: int,
                             first: int, last: int | None, seed: int, stage: str,
                             output: Callable[[dict], object]) -> tf.data.Dataset:
    """Training batches over a stream whose every position is a pure function of (seed, position).

    Stream position p (0, 1, ...) holds example
    index_shuffle(p % per_epoch, seed=(stage seed, p // per_epoch), max_index=len(rows) - 1):
    a new permutation every `per_epoch` positions, of which the first `per_epoch`
    (<= len(rows)) are used; p's augmentation seed is (stage seed, p) (per batch:
    its first position). Batches are positions [first + k B, first + (k+1) B)
    up to `last` (None: forever), so a pipeline started at any batch boundary
    yields exactly what one started at 0 yields from there on: resuming a run
    mid-epoch replays the same examples, order and augmentation.
    Same elements as `array_dataset` (images, rows, fields, output).
    """
    if per_epoch > len(rows):
        raise ValueError(f"per_epoch={per_epoch} exceeds the {len(rows)} examples")
    order_seed = tf_seed_for(seed, f"{stage}/position_order")
    augment_seed = tf_seed_for(seed, f"{stage}/position_augment")

    def positions(step=1):
        if last is None:
            return tf.data.Dataset.counter(first, step)
        return tf.data.Dataset.range(first, last, step)

    def example_id(p):
        return tf.random.experimental.index_shuffle(
            p % per_epoch, seed=tf.stack([tf.constant(order_seed, tf.int64), p // per_epoch]),
            max_index=len(rows) - 1)

    def seeds(per_batch):
        return positions(batch_size if per_batch else 1).map(
            lambda p: tf.stack([tf.constant(augment_seed, tf.int64), p]))

    return _finish(positions().map(example_id), augmentation, True, seed, stage, batch_size, True,
                   _array_loader(images, rows, fields), output, seeds=seeds)


def stream_dataset(raw: tf.data.Dataset, *, augmentation: Augmentation, training: bool,
                   batch_size: int, drop_remainder: bool, shuffle_buffer: int, repeat: bool,
                   seed: int, stage: str, output: Callable[[dict], object]) -> tf.data.Dataset:
    """Batches from a stream of {"image": encoded bytes, "label", "true_label", "index"}.

    Images are decoded (to RGB uint8 of any size) after shuffling, then
    augmented per example; the augmentation must give one fixed output shape.
    """
    if augmentation.batched:
        raise ValueError(f"--augment={augmentation.name} works on fixed-size batches; streamed images need a per-image recipe")

    def load(example):
        image = tf.io.decode_image(example["image"], channels=3, expand_animations=False)
        out = {k: tf.cast(example[k], tf.int32) for k in ("label", "true_label", "index")}
        out["image"] = tf.ensure_shape(image, [None, None, 3])
        return out

    ds = raw
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=tf_seed_for(seed, f"{stage}/shuffle"), reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    return _finish(ds, augmentation, training, seed, stage, batch_size, drop_remainder, load, output)


def as_train_element(example: dict) -> dict:
    """{"image", "label", "true_label", "index"} (the training batches)."""
    return {k: example[k] for k in ("image", "label", "true_label", "index")}


def as_pair(example: dict) -> tuple:
    """(image, label) (meta and test batches)."""
    return example["image"], example["label"]
