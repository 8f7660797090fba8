"""TF_CONFIG, the variable schedulers set for TensorFlow's multi-worker training, read without
TensorFlow: the command line checks it before TensorFlow's seconds of start-up."""
import json
import os

from .errors import DeviceError


def cluster_role():
    """(is_chief, task description) from TF_CONFIG, the variable schedulers set for TensorFlow.

    The chief is the task of type "chief", or worker 0 when the cluster has no chief task;
    it alone writes the run folder.
    """
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise DeviceError("--strategy multiworker needs TF_CONFIG: the cluster's workers and this task (see docs/cluster.md)")
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        kind, index = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as error:
        raise DeviceError(f"TF_CONFIG must be JSON with 'cluster' and 'task' {{'type', 'index'}} ({error!r})") from None
    if kind not in cluster or not 0 <= index < len(cluster[kind]):
        raise DeviceError(f"TF_CONFIG: task {kind} {index} is not in the cluster {sorted(cluster)}")
    chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
    return chief, f"{kind} {index}"
