"""Where training runs: a device name, a tf.distribute strategy, the precision policy."""
import os

import tensorflow as tf

from .cpu_features import cpu_has_bfloat16
from .cluster_config import cluster_role
from .errors import DeviceError  # noqa: F401  (raised here, and imported from here)
from .train_options import HEARTBEAT_SECONDS

# Seconds the chief's coordination service waits for a worker's heartbeat before it calls the
# worker lost and stops the job. Workers heartbeat every half timeout, so a stall of half the
# timeout is already at risk: TensorFlow's own 10 s stopped healthy jobs on a busy machine (the
# test suite on 2 cores). 120 s rides out stalls of a minute. The price: the heartbeat is also
# how a crashed or killed worker is noticed (the others wait for it in the next collective,
# tests/test_multiworker.py), so such a job now stops 1-2 minutes after the crash instead of
# 5-10 s, with the same error telling to --resume.
HEARTBEAT_TIMEOUT = 120
HEARTBEAT_TIMEOUT_VARIABLE = "ALEXFT_HEARTBEAT_TIMEOUT"


def resolve_device(name="auto"):
    """'auto' | 'cpu' | 'gpu' | 'gpu:N' -> a TF device string such as '/GPU:0'."""
    gpus = tf.config.list_logical_devices("GPU")
    name = name.lower()
    if name == "auto":
        return gpus[0].name if gpus else "/CPU:0"
    if name == "cpu":
        return "/CPU:0"
    kind, _, number = name.partition(":")
    if kind == "gpu" and (number.isdigit() or not number):
        index = int(number or 0)
        if not gpus:
            raise DeviceError(f"--device {name}: TensorFlow sees no GPU on this machine (is the CUDA build installed? `pip install 'tensorflow[and-cuda]'`)")
        if not 0 <= index < len(gpus):
            raise DeviceError(f"--device {name}: there are {len(gpus)} GPU(s), numbered 0 to {len(gpus) - 1}")
        return f"/GPU:{index}"
    raise DeviceError(f"--device {name}: expected auto, cpu, gpu or gpu:N")


def make_strategy(strategy="auto", device="auto", heartbeat_timeout=None):
    """'one': the resolved device; 'mirrored': data-parallel over all local GPUs (over the
    logical CPUs where there is no GPU); 'auto': mirrored when several GPUs and --device auto;
    'multiworker': data-parallel over the machines TF_CONFIG describes (each with its local GPUs).

    `heartbeat_timeout` (multiworker only): seconds without a heartbeat before a worker counts
    as lost; None takes $ALEXFT_HEARTBEAT_TIMEOUT, else HEARTBEAT_TIMEOUT. Give every worker the same.
    MultiWorkerMirroredStrategy must be made before TensorFlow runs its first op.
    """
    if strategy == "multiworker":
        cluster_role()  # a clear error for a missing or malformed TF_CONFIG
        _configure_coordination(_heartbeat_seconds(heartbeat_timeout))
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if strategy == "auto":
        strategy = "mirrored" if len(gpus) > 1 and device == "auto" else "one"
    if strategy == "one":
        return tf.distribute.OneDeviceStrategy(resolve_device(device))
    if strategy == "mirrored":
        devices = gpus or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    raise DeviceError(f"--strategy {strategy}: expected auto, one, mirrored or multiworker")


def _heartbeat_seconds(value):
    """`value`, else $ALEXFT_HEARTBEAT_TIMEOUT, else HEARTBEAT_TIMEOUT, in seconds (at least 1:
    the agent heartbeats every half timeout, so less would make it spin)."""
    if value is not None:
        return _seconds(value, f"heartbeat timeout {value!r}")
    text = os.environ.get(HEARTBEAT_TIMEOUT_VARIABLE, "").strip()
    if not text:
        return HEARTBEAT_TIMEOUT
    return _seconds(text, f"{HEARTBEAT_TIMEOUT_VARIABLE}={text!r}", f" (unset: {HEARTBEAT_TIMEOUT})")


def _seconds(value, said, note=""):
    """`value` in seconds by the rule TrainOptions checks its heartbeat_timeout with, else a
    DeviceError: `said` names where it came from, `note` adds what to know."""
    try:
        return float(HEARTBEAT_SECONDS.take(value))
    except (TypeError, ValueError):
        raise DeviceError(f"{said}: expected {HEARTBEAT_SECONDS.expected}{note}") from None


def _configure_coordination(heartbeat_seconds):
    """The coordination service configuration MultiWorkerMirroredStrategy makes itself when
    none is set (tensorflow/python/distribute/collective_all_reduce_strategy.py), plus our
    heartbeat timeout, which it offers no other way to change."""
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if resolver.task_type not in ("chief", "worker"):
        return  # the strategy coordinates only these tasks
    cluster = multi_worker_util.normalize_cluster_spec(resolver.cluster_spec())
    context.context().configure_coordination_service(
        service_type="standalone", service_leader=multi_worker_util.coordination_leader(cluster),
        heartbeat_timeout_in_ms=round(heartbeat_seconds * 1000))
    jobs = context.context().coordination_service.coordinated_job_list
    for job in ("chief", "worker"):
        if job in cluster.jobs:
            jobs.add(name=job, num_tasks=cluster.num_tasks(job))


def uses_gpu(strategy):
    return any("GPU" in device.upper() for device in strategy.extended.worker_devices)


def precision_policy(mixed_precision, strategy):
    """The Keras dtype policy: 'float32', 'mixed_float16' or 'mixed_bfloat16'.

    `mixed_precision`: None (on for GPUs, off for CPUs), False, True (the device's own
    16-bit type: float16 on a GPU, bfloat16 on a CPU), or 'float16' / 'bfloat16'.
    Variables, loss and softmax stay float32 in every policy.
    """
    gpu = uses_gpu(strategy)
    if mixed_precision is None:
        mixed_precision = gpu
    if mixed_precision is False:
        return "float32"
    if mixed_precision is True:
        mixed_precision = "float16" if gpu else "bfloat16"
    if mixed_precision not in ("float16", "bfloat16"):
        raise DeviceError(f"mixed precision {mixed_precision!r}: expected True, False, 'float16' or 'bfloat16'")
    if mixed_precision == "bfloat16" and not gpu and cpu_has_bfloat16() is False:
        raise DeviceError("--mixed-precision on this CPU: it has no bfloat16 instructions (avx512_bf16 or amx_bf16), "
                          "so bfloat16 would be slower than float32; train without --mixed-precision")
    return f"mixed_{mixed_precision}"


def split_cpu(count):
    """Split the CPU into `count` logical devices (to try multi-device code without GPUs).

    Must run before TensorFlow initialises its devices.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
