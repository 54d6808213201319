"""Per-example tables (one row per training example) and batch normalisation.

INSW, soft_label and gen_label keep a learnable row for every training example,
addressed by the stable `batch["index"]` (0..num_train-1). Rows are read with a
gather and written back with a scatter after the meta step, so a step touches
only the rows of its batch; memory is num_train * row size * 4 bytes.

Under a multi-replica strategy each replica holds a copy of a table. Writes
gather every replica's (indices, rows) first, so all replicas hold the same
update (an all-reduce of zero-padded blocks: `ctx.all_gather` needs placed
tensors, which Keras' step under MultiWorkerMirroredStrategy does not give), and
the table is created with ONLY_FIRST_REPLICA aggregation: the
(identical) first-replica update is then applied to every copy.
"""
import keras
import tensorflow as tf

from gdw_tf.distributed import replica_concat, replica_sum


def check_num_train(num_train, method):
    """num_train as a positive int, or a ValueError naming the option."""
    if num_train is None:
        raise ValueError(
            f"method '{method}' keeps one learnable entry per training example "
            "and needs the option num_train (the trainer derives it from the "
            "data; pass num_train=N to GDWModel otherwise)")
    if isinstance(num_train, bool) or int(num_train) != num_train or num_train < 1:
        raise ValueError(f"method '{method}': num_train must be a positive integer, "
                         f"got {num_train!r}")
    return int(num_train)


MAX_ROWS = 2 ** 24  # write_rows sends indices as float32 between replicas


def add_table(layer, name, num_train, row_shape=(), value=0.0):
    """A float32 [num_train, *row_shape] table filled with `value`, not trainable."""
    if num_train > MAX_ROWS:
        raise ValueError(f"{layer.name}: a per-example table holds at most {MAX_ROWS} rows, "
                         f"got num_train={num_train}")
    return layer.add_weight(
        name=name, shape=(num_train,) + tuple(row_shape),
        initializer=keras.initializers.Constant(value), dtype="float32",
        trainable=False, autocast=False, aggregation="only_first_replica")


def read_rows(table, index):
    """The rows of the local batch: [n, *row_shape] for int `index` [n]."""
    return tf.gather(table.value, tf.cast(index, tf.int32))


def write_rows(table, index, rows):
    """Overwrites the rows at `index` (this replica's) with `rows`, all replicas.

    Each replica contributes its own batch; every replica copy receives the
    rows of the whole global batch. Rows outside the batch are untouched.
    Replicas must hold batches of one size (as the trainer's even split does).
    """
    index = tf.cast(index, tf.int32)
    rows = tf.cast(rows, table.dtype)
    ctx = tf.distribute.get_replica_context()
    if ctx is not None and ctx.num_replicas_in_sync > 1:
        # The index travels as a float column (exact below 2**24, see add_table).
        flat = tf.reshape(rows, [tf.shape(rows)[0], -1])
        packed = replica_concat(tf.concat([tf.cast(index, rows.dtype)[:, None], flat], axis=1))
        index = tf.cast(packed[:, 0], tf.int32)
        rows = tf.reshape(packed[:, 1:], tf.concat([[-1], tf.shape(rows)[1:]], axis=0))
    return table.value.scatter_update(tf.IndexedSlices(rows, index))


def require_index(batch, method):
    """batch["index"], or a ValueError saying how to provide it."""
    if "index" not in batch:
        raise ValueError(
            f"method '{method}' looks up a per-example table and needs "
            "batch['index'] (0..num_train-1): use the training pipeline of "
            "gdw_tf.data.build, or yield dicts with an 'index' key")
    return batch["index"]


def normalise_over_batch(weights):
    """Non-negative weights scaled to sum to one over the GLOBAL batch.

    Ren et al.'s normalisation: w / sum(w) with all-zero batches mapped to
    zeros (no division by zero). `weights` must already be >= 0; any shape.
    """
    total = replica_sum(tf.reduce_sum(weights))
    return tf.math.divide_no_nan(weights, total)
