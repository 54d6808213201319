"""Cross-replica helpers that are identities outside multi-replica training."""
import tensorflow as tf


def _replica_context():
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return None
    return ctx


def replica_sum(value):
    """Sums a tensor (or a list of tensors) over all replicas, differentiably.

    Inside a replica function of a multi-replica strategy this is an
    all-reduce (its gradient is the all-reduce of the upstream gradients);
    elsewhere it returns `value` unchanged.
    """
    ctx = _replica_context()
    if ctx is None:
        return value
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, value)


def replica_concat(value):
    """Every replica's `value` [n, ...] concatenated along axis 0 in replica order,
    on every replica (n must be the same on all). Unchanged outside multi-replica training.

    An all-reduce sum of blocks that are zero except for the replica's own:
    exact, and it works where `ReplicaContext.all_gather` does not (Keras' train
    step under MultiWorkerMirroredStrategy, whose tensors carry no device).
    """
    ctx = _replica_context()
    if ctx is None:
        return value
    replicas = ctx.num_replicas_in_sync
    blocks = tf.scatter_nd([[ctx.replica_id_in_sync_group]], value[None],
                           tf.concat([[replicas], tf.shape(value)], axis=0))
    summed = ctx.all_reduce(tf.distribute.ReduceOp.SUM, blocks)
    return tf.reshape(summed, tf.concat([[-1], tf.shape(value)[1:]], axis=0))


def global_batch_size(labels, dtype):
    """Number of examples in the global batch, as a `dtype` scalar."""
    return replica_sum(tf.cast(tf.shape(labels)[0], dtype))


def num_replicas():
    """Replicas whose gradients the optimizer will sum (1 outside a strategy)."""
    ctx = tf.distribute.get_replica_context()
    return 1 if ctx is None else ctx.num_replicas_in_sync


def add_weight_decay(grads, variables, coefficient):
    """grads + coefficient * variables, split so the cross-replica sum adds it once."""
    if not coefficient:
        return list(grads)
    share = coefficient / num_replicas()
    return [g + share * v for g, v in zip(grads, variables)]
