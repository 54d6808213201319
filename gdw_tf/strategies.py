"""`--strategy` names -> tf.distribute strategies (a registry, built on demand).

Batch semantics for every strategy: `--batch_size` is the GLOBAL batch; each
of the R replicas gets batch_size / R examples, and the loss is the mean over
the global batch, so one step on R replicas equals one step on one device with
the same batch and learning rate (tested). Nothing is rescaled.
"""
import json
import os

import tensorflow as tf

from gdw_tf.registry import Registry

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
