"""tf.data pipelines over in-memory arrays and over streamed (TFDS) splits.

Randomness is reproducible: shuffling uses a fixed seed with
reshuffle_each_iteration (a new order every epoch, the same sequence of orders
every run), and augmentation is driven by stateless seeds taken from
``tf.data.Dataset.random(seed, rerandomize_each_iteration=True)`` zipped with
the data, so a given batch position in a given epoch always gets the same
augmentation regardless of parallelism.

The positional pipelines (`positional_array_dataset`, `positional_record_dataset`)
go further: every batch is a pure function of (seed, global position), so a
pipeline can start at any step and yield what an uninterrupted one yields there
(exact mid-epoch resume).

`with_meta` pairs each training batch with a meta batch (the input of
`GDWModel.fit`) into one flat dict: image [B, ...], label int [B], optionally
true_label int [B] and index int [B] (from the training batch), meta_image
[M, ...] and meta_label int [M]; `split_batch` takes a step's input apart again.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from gdw_tf.data.augment import Augmentation
from gdw_tf.data.protocol import tf_seed_for
from gdw_tf.data.sources.base import RecordFiles

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
        image = (augmentation.train(example["image"], s) if training
                 else augmentation.test(example["image"]))
        return {**example, "image": image}

    if training:
        seeds = (seeds(augmentation.batched) if seeds is not None
                 else seed_stream(tf_seed_for(seed, f"{stage}/augment")))
    if augmentation.batched:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        if training:
            ds = tf.data.Dataset.zip(ds, seeds).map(lambda i, s: output(augmented(load(i), s)),
                                                    AUTOTUNE)
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
        ds = ds.shuffle(len(rows), seed=tf_seed_for(seed, f"{stage}/shuffle"),
                        reshuffle_each_iteration=True)
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
    return _finish(_positioned_ids(len(rows), per_epoch, first, last, seed, stage), augmentation,
                   True, seed, stage, batch_size, True, _array_loader(images, rows, fields), output,
                   seeds=_position_seeds(seed, stage, first, last, batch_size))


def positional_serialized_dataset(serialized: tf.Tensor, parse: Callable[[object], dict], *,
                                  augmentation: Augmentation, batch_size: int, per_epoch: int,
                                  first: int, last: int | None, seed: int, stage: str,
                                  output: Callable[[dict], object]) -> tf.data.Dataset:
    """`positional_array_dataset` over encoded records held in memory: serialized string [N]
    (e.g. `records_at`), each parsed by `parse` (RecordFiles.parse) and decoded per image.
    Positions, order and augmentation seeds as there; elements as `stream_dataset`'s."""
    _check_per_image(augmentation)
    n = int(serialized.shape[0])
    return _finish(_positioned_ids(n, per_epoch, first, last, seed, stage), augmentation, True,
                   seed, stage, batch_size, True,
                   lambda i: _decoded(parse(tf.gather(serialized, i))), output,
                   seeds=_position_seeds(seed, stage, first, last, batch_size))


def _positioned_ids(n: int, per_epoch: int, first: int, last: int | None, seed: int,
                    stage: str) -> tf.data.Dataset:
    """int64 example ids of stream positions first, first + 1, ... (< last; None: forever):
    position p holds index_shuffle(p % per_epoch, seed=(stage seed, p // per_epoch)) of n."""
    if not 0 < per_epoch <= n:
        raise ValueError(f"per_epoch={per_epoch} is not in [1, {n}] (the examples)")
    order_seed = tf_seed_for(seed, f"{stage}/position_order")

    def example_id(p):
        return tf.random.experimental.index_shuffle(
            p % per_epoch, seed=tf.stack([tf.constant(order_seed, tf.int64), p // per_epoch]),
            max_index=n - 1)

    return _positions(first, last).map(example_id)


def _positions(first: int, last: int | None, step: int = 1) -> tf.data.Dataset:
    """int64 first, first + step, ... (< last; None: forever)."""
    if last is None:
        return tf.data.Dataset.counter(first, step)
    return tf.data.Dataset.range(first, last, step)


def _position_seeds(seed: int, stage: str, first: int, last: int | None, batch_size: int):
    """`_finish`'s seeds for positions [first, last): (stage seed, p) per example p, or per
    batch (its first position)."""
    augment_seed = tf_seed_for(seed, f"{stage}/position_augment")

    def seeds(per_batch):
        return _positions(first, last, batch_size if per_batch else 1).map(
            lambda p: tf.stack([tf.constant(augment_seed, tf.int64), p]))
    return seeds


RECORD_BLOCK = 64   # consecutive records read after one seek
RECORD_WINDOW = 64  # blocks whose records are shuffled together in memory (4096 records)


def positional_record_dataset(records: RecordFiles, *, augmentation: Augmentation, batch_size: int,
                              per_epoch: int, first: int, last: int | None, seed: int, stage: str,
                              output: Callable[[dict], object], block: int = RECORD_BLOCK,
                              window: int = RECORD_WINDOW) -> tf.data.Dataset:
    """`positional_array_dataset` for a split on disk (TFRecord files, read by position).

    Epoch e's order: the split's records cut into blocks of `block` consecutive
    ones (a block stays in one file), the blocks in a permutation seeded by
    (stage seed, e), grouped `window` blocks at a time; each group's records in a
    permutation seeded by (stage seed, e, group). Stream position p holds the
    (p % per_epoch)-th record of epoch p // per_epoch's order (the first
    `per_epoch` <= records.size are used) and gets augmentation seed (stage seed, p).
    Batches are positions [first + k B, first + (k+1) B) up to `last` (None:
    forever), so a pipeline started at any batch boundary yields exactly what one
    started at 0 yields from there on (examples, order, augmentation).

    Cost: a group is read (block by block, `block` records per seek) while the one
    before it is consumed: about two groups (block * window encoded images) in
    memory. Starting at position p reads only p's group before the first batch,
    dropping its records before p undecoded; earlier groups are not read, and
    files are entered by skipping record headers. TFDS writes a split's examples in
    a hashed order, so blocks of neighbours are already mixed.
    Elements as `stream_dataset`'s; the augmentation must work per image.
    """
    _check_per_image(augmentation)
    n = records.size
    if not 0 < per_epoch <= n:
        raise ValueError(f"per_epoch={per_epoch} is not in [1, {n}] (the split's records)")
    spans = [(f, start, min(block, count - start))
             for f, count in enumerate(records.counts) for start in range(0, count, block)]
    files = tf.constant(records.files)
    block_file, block_start, block_len = (tf.constant(np.array(c, np.int64)) for c in zip(*spans))
    num_blocks, num_groups = len(spans), -(-len(spans) // window)
    order_seed = tf.constant(tf_seed_for(seed, f"{stage}/record_order"), tf.int64)
    group_seed = tf.constant(tf_seed_for(seed, f"{stage}/record_group"), tf.int64)
    first_epoch, first_offset = divmod(first, per_epoch)

    def read_block(b):  # -> one element: the block's serialized records, string [len]
        return tf.data.TFRecordDataset(tf.gather(files, block_file[b])).skip(
            block_start[b]).take(block_len[b]).batch(block)

    def epoch_records(e):
        """The serialized records of epoch e at its order's positions [begin, end)."""
        begin = tf.where(e == first_epoch, tf.constant(first_offset, tf.int64), 0)
        end = tf.constant(per_epoch, tf.int64)
        if last is not None:
            end = tf.minimum(end, last - e * per_epoch)
        blocks = tf.random.experimental.index_shuffle(
            tf.range(num_blocks, dtype=tf.int64), tf.stack([order_seed, e]), num_blocks - 1)
        sizes = tf.math.segment_sum(tf.gather(block_len, blocks), tf.range(num_blocks) // window)
        group_starts = tf.cumsum(sizes, exclusive=True)
        # The group holding `begin`.
        g0 = tf.reduce_sum(tf.cast(group_starts <= begin, tf.int64)) - 1

        def shuffled(g, group):  # group: RaggedTensor [blocks, None] -> its records, permuted
            flat = group.flat_values
            count = tf.size(flat, out_type=tf.int64)
            return tf.gather(flat, tf.random.experimental.index_shuffle(
                tf.range(count), tf.stack([group_seed, e * num_groups + g]), count - 1))

        groups = tf.data.Dataset.from_tensor_slices(blocks[g0 * window:]).interleave(
            read_block, num_parallel_calls=AUTOTUNE, deterministic=True).ragged_batch(window)
        return (tf.data.Dataset.zip(tf.data.Dataset.range(g0, num_groups), groups)
                .map(shuffled).prefetch(1).unbatch()
                .skip(begin - group_starts[g0]).take(end - begin))

    epochs = (tf.data.Dataset.counter(first_epoch) if last is None
              else tf.data.Dataset.range(first_epoch, -(-last // per_epoch)))
    ds = _finish(epochs.flat_map(epoch_records), augmentation, True, seed, stage, batch_size, True,
                 lambda serialized: _decoded(records.parse(serialized)), output,
                 seeds=_position_seeds(seed, stage, first, last, batch_size))
    options = tf.data.Options()  # split batches across workers, never files: the order is global
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def records_in_order(records: RecordFiles, *, augmentation: Augmentation, batch_size: int,
                     output: Callable[[dict], object]) -> tf.data.Dataset:
    """One pass over a split's records in record order (position 0, 1, ...), each decoded and
    given the test transform; batches of `batch_size`, the last one smaller."""
    _check_per_image(augmentation)
    raw = tf.data.TFRecordDataset(list(records.files))
    return _finish(raw, augmentation, False, 0, "in_order", batch_size, False,
                   lambda serialized: _decoded(records.parse(serialized)), output)


def record_fields(records: RecordFiles, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """key -> int64 [records.size]: the field of every record, by record position (images
    are not decoded)."""
    ds = tf.data.TFRecordDataset(list(records.files)).map(
        lambda s: {k: tf.cast(records.parse(s)[k], tf.int64) for k in keys}, AUTOTUNE)
    parts = list(ds.batch(8192).as_numpy_iterator())
    return {k: np.concatenate([p[k] for p in parts]) if parts else np.zeros([0], np.int64)
            for k in keys}


def records_at(records: RecordFiles, positions: np.ndarray) -> tf.Tensor:
    """string [len(positions)]: the serialized records at `positions` (distinct record
    positions, in that order), read in one pass over the split."""
    positions = np.asarray(positions, np.int64)
    if positions.size and (positions.min() < 0 or positions.max() >= records.size):
        raise ValueError(f"record positions must be in [0, {records.size}), got "
                         f"{positions.min()}..{positions.max()}")
    wanted = np.zeros([records.size], bool)
    wanted[positions] = True
    if wanted.sum() != positions.size:
        raise ValueError("record positions must be distinct")
    wanted_t = tf.constant(wanted)
    ds = tf.data.TFRecordDataset(list(records.files)).enumerate().filter(
        lambda p, s: tf.gather(wanted_t, p)).batch(1024)
    found, data = [], []
    for p, s in ds.as_numpy_iterator():
        found.append(p)
        data.append(s)
    found = np.concatenate(found) if found else np.zeros([0], np.int64)
    data = np.concatenate(data) if data else np.zeros([0], object)
    by_position = dict(zip(found.tolist(), range(found.size)))
    return tf.constant(data[[by_position[p] for p in positions.tolist()]], tf.string)


def stream_dataset(raw: tf.data.Dataset, *, augmentation: Augmentation, training: bool,
                   batch_size: int, drop_remainder: bool, shuffle_buffer: int, repeat: bool,
                   seed: int, stage: str, output: Callable[[dict], object]) -> tf.data.Dataset:
    """Batches from a stream of {"image": encoded bytes, "label", "true_label", "index"}.

    Images are decoded (to RGB uint8 of any size) after shuffling, then
    augmented per example; the augmentation must give one fixed output shape.
    """
    _check_per_image(augmentation)
    ds = raw
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=tf_seed_for(seed, f"{stage}/shuffle"),
                        reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    return _finish(ds, augmentation, training, seed, stage, batch_size, drop_remainder, _decoded,
                   output)


def _check_per_image(augmentation: Augmentation):
    if augmentation.batched:
        raise ValueError(f"augment={augmentation.name} works on fixed-size batches; "
                         "streamed images need a per-image recipe")


def _decoded(example: dict) -> dict:
    """A streamed example with its image decoded (uint8 [H, W, 3]) and int32 label fields."""
    image = tf.io.decode_image(example["image"], channels=3, expand_animations=False)
    out = {k: tf.cast(example[k], tf.int32) for k in ("label", "true_label", "index")}
    out["image"] = tf.ensure_shape(image, [None, None, 3])
    return out


def as_train_element(example: dict) -> dict:
    """{"image", "label", "true_label", "index"} (the training batches; no true_label
    where the truth is unknown)."""
    return {k: example[k] for k in TRAIN_KEYS if k in example}


def as_pair(example: dict) -> tuple:
    """(image, label) (meta and test batches)."""
    return example["image"], example["label"]


# Pairing training and meta batches.
TRAIN_KEYS = ("image", "label", "true_label", "index")
META_KEYS = ("meta_image", "meta_label")


def _as_dict(element, where):
    """(x, y) or {"image", "label", ...} -> dict with at least image and label."""
    if isinstance(element, dict):
        missing = [k for k in ("image", "label") if k not in element]
        unknown = [k for k in element if k not in TRAIN_KEYS + META_KEYS]
        if missing or unknown:
            raise ValueError(
                f"{where}: dict elements need keys 'image' and 'label' (optional "
                f"'true_label', 'index'); missing {missing}, unknown {unknown}")
        return dict(element)
    if isinstance(element, (tuple, list)) and len(element) == 2:
        return {"image": element[0], "label": element[1]}
    raise ValueError(
        f"{where}: expected (image, label) pairs or a dict with 'image' and "
        f"'label', got {type(element).__name__} of length "
        f"{len(element) if hasattr(element, '__len__') else '?'}")


def _check_batched(dataset, where):
    spec = dataset.element_spec
    label_spec = spec["label"] if isinstance(spec, dict) else spec[1]
    if label_spec.shape.rank != 1:
        raise ValueError(
            f"{where}: labels must be batched, shape [batch], got "
            f"{label_spec.shape}; call .batch(...) first")


def with_index(dataset):
    """`dataset` of single examples, (image, label) or dicts with image and label, as dicts
    with "index" added: the example's position 0..N-1, by which GDWModel's per-example record
    (record_examples=N) and the table methods address it. Add it before shuffling and
    batching, so that an example keeps its index in every epoch."""
    spec = dataset.element_spec
    label_spec = spec["label"] if isinstance(spec, dict) else spec[1] if isinstance(
        spec, (tuple, list)) else None
    if label_spec is not None and label_spec.shape.rank != 0:
        raise ValueError(f"with_index(dataset): expected single examples (a scalar label), got "
                         f"labels of shape {label_spec.shape}; add the index before .batch(...)")
    return dataset.enumerate().map(
        lambda i, element: {**_as_dict(element, "with_index(dataset)"), "index": i})


def with_meta(train_ds, meta_ds):
    """Pairs every training batch with a batch of the (repeated) meta set.

    Args:
      train_ds: batched `tf.data.Dataset` of (image, label) or dicts with
        image, label and optionally true_label and index. One pass = one epoch.
      meta_ds: batched `tf.data.Dataset` of clean (image, label) (or dicts);
        repeated forever, so it may be shorter than train_ds.
    Returns:
      A dataset with as many elements as train_ds, each one flat dict.
    """
    _check_batched(train_ds, "with_meta(train_ds)")
    _check_batched(meta_ds, "with_meta(meta_ds)")
    spec = meta_ds.element_spec
    if isinstance(spec, (tuple, list)) and len(spec) != 2:
        raise ValueError(f"with_meta(meta_ds): expected (image, label) pairs, got {len(spec)} "
                         "elements; the meta loss is the plain mean over the clean meta batch, so "
                         "sample weights have no place in it: drop them")
    if not isinstance(train_ds.element_spec, dict):
        train_ds = train_ds.map(lambda *e: _as_dict(e, "train_ds"))
    if isinstance(meta_ds.element_spec, dict):
        meta_ds = meta_ds.map(lambda e: (e["image"], e["label"]))
    meta_ds = meta_ds.repeat()

    def merge(train, meta):
        return {**_as_dict(train, "train_ds"),
                "meta_image": meta[0], "meta_label": meta[1]}

    return tf.data.Dataset.zip((train_ds, meta_ds)).map(merge)


def split_batch(data, needs_meta):
    """Splits a step's input into (batch dict, (meta_image, meta_label) or None).

    Raises a ValueError (at trace time) when a meta method gets no meta batch.
    """
    batch = _as_dict(data, "training data")
    meta = None
    if "meta_image" in batch:
        meta = (batch.pop("meta_image"), batch.pop("meta_label"))
    if needs_meta and meta is None:
        raise ValueError(
            "this method learns its weights from a clean meta set, but the "
            "training data has no meta batch: fit on "
            "gdw_tf.data.with_meta(train_ds, meta_ds)")
    return batch, meta
