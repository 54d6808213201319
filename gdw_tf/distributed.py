"""Everything tf.distribute: the strategies `--strategy` names, and the cross-replica
helpers a train step uses (identities outside multi-replica training).

Batch semantics for every strategy: `--batch_size` is the GLOBAL batch; each
of the R replicas gets batch_size / R examples, and the loss is the mean over
the global batch, so one step on R replicas equals one step on one device with
the same batch and learning rate (tested). Nothing is rescaled.
"""
import json
import os

import tensorflow as tf

from gdw_tf.registry import Registry

# --- strategies (built on demand) ---------------------------------------------------------

STRATEGIES = Registry("strategy (--strategy)")


def split_cpu(num_devices):
    """Splits the first CPU into `num_devices` logical devices (before TF starts)."""
    if num_devices <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)


@STRATEGIES.register("default")
def _default(tpu=None):
    return tf.distribute.get_strategy()


@STRATEGIES.register("one_device")
def _one_device(tpu=None):
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


@STRATEGIES.register("mirrored")
def _mirrored(tpu=None):
    """All local GPUs; without GPUs, all logical CPU devices (--num_cpu_devices)."""
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return tf.distribute.MirroredStrategy(devices)


@STRATEGIES.register("multi_worker")
def _multi_worker(tpu=None):
    """MultiWorkerMirroredStrategy over the cluster described by TF_CONFIG."""
    config = os.environ.get("TF_CONFIG")
    if not config:
        raise ValueError("--strategy=multi_worker needs the TF_CONFIG environment variable "
                         "(cluster and task of this worker)")
    try:
        json.loads(config)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON: {error}") from None
    return tf.distribute.MultiWorkerMirroredStrategy()


@STRATEGIES.register("tpu")
def _tpu(tpu=None):
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def make_strategy(name, tpu=None):
    return STRATEGIES.get(name)(tpu=tpu)


def is_chief(strategy):
    """True on the worker that writes reports (all single-host strategies)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in (None, "chief") or (
        resolver.task_type == "worker" and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict())


# --- inside a replica ----------------------------------------------------------------------

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
