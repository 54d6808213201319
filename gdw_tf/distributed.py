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


def global_batch_size(labels, dtype):
    """Number of examples in the global batch, as a `dtype` scalar."""
    return replica_sum(tf.cast(tf.shape(labels)[0], dtype))
