"""Multi-worker training on TensorFlow's own engine: two worker processes on 127.0.0.1,
configured through TF_CONFIG as any scheduler would."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from alexft import checkpoint as checkpoints
from alexft import devices, weights
from alexft.devices import DeviceError
from alexft.train import finetune

ALEXFT = str(Path(sys.executable).parent / "alexft")
OPTIONS = ["--epochs", "3", "--batch-size", "10", "--val-split", "0.2", "--dropout", "0", "--no-progress"]


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for item in sockets:
        item.bind(("127.0.0.1", 0))
    ports = [item.getsockname()[1] for item in sockets]
    for item in sockets:
        item.close()
    return ports


def _start_workers(data, weights_file, run, *extra, count=2):
    ports = _free_ports(count)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = []
    for index in range(count):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        env.pop("TF_CPP_MIN_LOG_LEVEL", None)
        workers.append(subprocess.Popen(
            [ALEXFT, "finetune", str(data), "--weights", str(weights_file), "--strategy", "multiworker",
             "--output", str(run), *OPTIONS, *extra],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return workers


def _finish(workers, timeout=600):
    """Each worker's (status, stdout, stderr); a worker still running after `timeout` seconds is killed."""
    deadline, results = time.monotonic() + timeout, []
    try:
        for worker in workers:
            stdout, stderr = worker.communicate(timeout=max(deadline - time.monotonic(), 0))
            results.append((worker.returncode, stdout, stderr))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    return results


def _one_process_run(data, weights_file, output, **options):
    """The run folder of one process trained with the workers' options: what they must match."""
    summary = finetune(data, weights=weights_file, epochs=3, batch_size=10, val_split=0.2, dropout=0, output=output,
                       progress=False, log=lambda message: None, **options)
    return Path(summary["run"])


def _assert_trained_together_as_one_process(results, run, alone_run):
    for status, stdout, stderr in results:
        assert status == 0, stderr[-3000:]
    assert "multi-worker training as worker 0 (chief" in results[0][2]
    assert "multi-worker training as worker 1" in results[1][2]
    assert all("2 replicas in sync across the cluster" in stderr for _, _, stderr in results)

    together = weights.load(run / "model.npz").params  # the best epoch: the same in both, as the histories are
    alone = weights.load(alone_run / "model.npz").params
    for got, expected in zip(together["fc8"], alone["fc8"]):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    history = [line.split(",") for line in (run / "history.csv").read_text().splitlines()[1:]]
    expected = [line.split(",") for line in (alone_run / "history.csv").read_text().splitlines()[1:]]
    assert len(history) == len(expected) == 3
    for got, want in zip(history, expected):
        np.testing.assert_allclose([float(v) for v in got[1:5]], [float(v) for v in want[1:5]], rtol=1e-4, atol=1e-6)
    # Only the chief wrote: one TensorBoard events file, no worker leftovers.
    assert sorted(path.parent.name for path in (run / "tensorboard").rglob("events.*")) == ["train", "validation"]
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []


def test_two_workers_train_together_and_match_one_process(small_digits_folder, canonical_weights_file, tmp_path):
    run = tmp_path / "two_workers"
    results = _finish(_start_workers(small_digits_folder, canonical_weights_file, run))
    alone = _one_process_run(small_digits_folder, canonical_weights_file, tmp_path / "one")
    _assert_trained_together_as_one_process(results, run, alone)


# A busy loop that also ends by itself, should the test's own clean-up never run.
HOG = "import time\nend = time.monotonic() + 900\nwhile time.monotonic() < end:\n    pass"


def test_two_workers_survive_a_cpu_hog_and_a_frozen_worker(small_digits_folder, canonical_weights_file, tmp_path,
                                                            monkeypatch):
    """Issue 22: on a busy machine TensorFlow's 10 s heartbeat timeout called a healthy worker lost.
    Both workers run beside two busy loops (as many as the cores of the machine the suite was
    measured on), and worker 1 is frozen for 15 s in epoch 2, as a loaded machine can stall a
    process: under TensorFlow's default the chief stops the job within about 10 s of the freeze
    (heartbeats every 5 s, a 10 s timeout checked every second: at most 11 s).
    Without the feature cache: a fraction of the computation, and a collective every step."""
    monkeypatch.delenv(devices.HEARTBEAT_TIMEOUT_VARIABLE, raising=False)  # the default is under test
    run = tmp_path / "two_workers"
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(2)]
    try:
        workers = _start_workers(small_digits_folder, canonical_weights_file, run, "--no-cache")
        deadline = time.monotonic() + 600
        while not (run / "checkpoint.npz").exists():  # written after epoch 1, on the way to epoch 2
            assert time.monotonic() < deadline and all(worker.poll() is None for worker in workers), _finish(workers)
            time.sleep(0.05)
        workers[1].send_signal(signal.SIGSTOP)
        try:
            time.sleep(15)
        finally:
            workers[1].send_signal(signal.SIGCONT)
        results = _finish(workers, timeout=600)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert not any("stopped sending heartbeats" in stderr for _, _, stderr in results), results[0][2][-3000:]
    alone = _one_process_run(small_digits_folder, canonical_weights_file, tmp_path / "one", cache=False)
    _assert_trained_together_as_one_process(results, run, alone)


def test_the_heartbeat_timeout_reaches_the_coordination_service(monkeypatch):
    """make_strategy configures the coordination service before it makes the strategy (which
    would otherwise configure it with TensorFlow's 10 s); the strategy itself is not made here."""
    from tensorflow.python.eager import context

    monkeypatch.setattr(context.context(), "_coordination_service_config", None)  # restored afterwards
    seen = []  # the configuration each strategy would have been made with
    monkeypatch.setattr(tf.distribute, "MultiWorkerMirroredStrategy",
                        lambda: seen.append(context.context().coordination_service))

    def configured(cluster, index=1, **options):
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        devices.make_strategy("multiworker", **options)
        return seen.pop()

    workers = {"worker": ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]}
    monkeypatch.delenv(devices.HEARTBEAT_TIMEOUT_VARIABLE, raising=False)
    config = configured(workers)
    assert config.heartbeat_timeout_in_ms == devices.HEARTBEAT_TIMEOUT * 1000 == 120_000
    # Otherwise what MultiWorkerMirroredStrategy configures itself.
    assert (config.service_type, config.service_leader) == ("standalone", "/job:worker/replica:0/task:0")
    assert [(job.name, job.num_tasks) for job in config.coordinated_job_list] == [("worker", 3)]
    config = configured({"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2", "127.0.0.1:3"]}, index=0)
    assert config.service_leader == "/job:chief/replica:0/task:0"
    assert [(job.name, job.num_tasks) for job in config.coordinated_job_list] == [("chief", 1), ("worker", 2)]

    monkeypatch.setenv(devices.HEARTBEAT_TIMEOUT_VARIABLE, " 45 ")
    assert configured(workers).heartbeat_timeout_in_ms == 45_000
    assert configured(workers, heartbeat_timeout=7.5).heartbeat_timeout_in_ms == 7_500  # the argument comes first
    for wrong in ("soon", "0", "-30", "0.5", "nan", "inf"):
        monkeypatch.setenv(devices.HEARTBEAT_TIMEOUT_VARIABLE, wrong)
        with pytest.raises(DeviceError, match=rf"^ALEXFT_HEARTBEAT_TIMEOUT='{re.escape(wrong)}': expected a number "
                                              r"of seconds, at least 1 \(unset: 120\)$"):
            configured(workers)
    monkeypatch.delenv(devices.HEARTBEAT_TIMEOUT_VARIABLE)
    with pytest.raises(DeviceError, match=r"^heartbeat timeout 0: expected a number of seconds, at least 1$"):
        configured(workers, heartbeat_timeout=0)
    assert seen == []


def test_a_killed_worker_ends_the_job_and_every_worker_resumes(small_digits_folder, canonical_weights_file, tmp_path,
                                                               monkeypatch):
    run = tmp_path / "run"
    # The survivor notices the death by the missing heartbeats, here within 20 s. Under the
    # default 120 s it could not within the 50 s allowed below (heartbeats come every 60 s): the
    # variable reached the workers' coordination service.
    monkeypatch.setenv(devices.HEARTBEAT_TIMEOUT_VARIABLE, "20")
    workers = _start_workers(small_digits_folder, canonical_weights_file, run, "--no-cache", "--epochs", "6")
    deadline = time.monotonic() + 300
    while not (run / "checkpoint.npz").exists():
        assert time.monotonic() < deadline and all(worker.poll() is None for worker in workers), _finish(workers)
        time.sleep(0.05)
    workers[1].send_signal(signal.SIGKILL)
    status, _, stderr = _finish(workers[:1], timeout=50)[0]
    workers[1].wait()
    assert status != 0
    assert "lost contact with another worker" in stderr and "Restart every worker with --resume" in stderr, stderr[-3000:]
    if "stopped sending heartbeats" not in stderr:
        # Seen once under a loaded CI run: the survivor heard of the death by another route than the
        # coordination service's heartbeats, so this run could not show that the setting reached it.
        warnings.warn(f"the survivor did not name missing heartbeats: {stderr.strip().splitlines()[-1][:300]}")
    done, _ = checkpoints.load(run / "checkpoint.npz")
    assert 1 <= done["epoch"] < 6

    monkeypatch.delenv(devices.HEARTBEAT_TIMEOUT_VARIABLE)
    results = _finish(_start_workers(small_digits_folder, canonical_weights_file, run, "--no-cache", "--epochs", "6", "--resume"))
    for status, _, stderr in results:
        assert status == 0, stderr[-3000:]
    assert f"resuming {run} at epoch {done['epoch'] + 1}" in results[0][2]
    epochs = [line.split(",")[0] for line in (run / "history.csv").read_text().splitlines()[1:]]
    assert epochs == [str(number) for number in range(1, 7)]


def test_cluster_mistakes_are_refused_before_any_worker_waits(small_digits_folder, canonical_weights_file, tmp_path, monkeypatch):
    """Each of these would otherwise leave the other workers waiting for the cluster forever."""
    from alexft.train import TrainingError
    from alexft.train_options import OptionsError

    def start(**options):
        finetune(small_digits_folder, weights=canonical_weights_file, strategy="multiworker", progress=False,
                 log=lambda message: None, **options)

    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(DeviceError, match="needs TF_CONFIG"):
        start(output=tmp_path / "run")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(DeviceError, match="TF_CONFIG must be JSON"):
        start(output=tmp_path / "run")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 2}}))
    with pytest.raises(DeviceError, match="task worker 2 is not in the cluster"):
        start(output=tmp_path / "run")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    with pytest.raises(OptionsError, match="needs output"):
        start()
    with pytest.raises(OptionsError, match="device cannot be combined"):
        start(output=tmp_path / "run", device="cpu")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "checkpoint.npz").write_bytes(b"an earlier run")
    with pytest.raises(TrainingError, match="already holds a run; pass resume=True"):  # worker 1, not only the chief
        start(output=tmp_path / "old")


def test_a_lost_workers_message_keeps_tensorflows_line_that_says_why():
    from alexft.train_network import _why_lost

    said = ("Collective ops is aborted by: The coordination service has stopped.\n"
            "Task /job:worker/replica:0/task:1 stopped sending heartbeats for 20 s.\n"
            "The error could be from a previous operation. Restart your program to reset.")
    assert _why_lost(tf.errors.UnavailableError(None, None, said)) == \
        "Task /job:worker/replica:0/task:1 stopped sending heartbeats for 20 s."
    assert _why_lost(tf.errors.UnavailableError(None, None, "first\nSocket closed\n")) == "Socket closed"
    assert _why_lost(tf.errors.CancelledError(None, None, "")) == "CancelledError"


def test_multiworker_mistakes_of_the_command_line_are_usage_errors_said_first(small_digits_folder, canonical_weights_file,
                                                                             tmp_path, monkeypatch):
    """Without TF_CONFIG, a missing --output and a --device were reported only as "needs TF_CONFIG"
    (exit 1, after the data was listed); docs/cluster.md promises both refusals, and mistakes of the
    invocation, TF_CONFIG's included, exit 2 before any work."""
    from click.testing import CliRunner

    from alexft.cli import main

    monkeypatch.delenv("TF_CONFIG", raising=False)
    base = ["finetune", str(small_digits_folder), "--weights", str(canonical_weights_file), "--strategy", "multiworker"]
    for extra, code, said in (
            ([], 2, "Error: --strategy multiworker needs --output: a run folder every worker can reach (shared storage)"),
            (["-o", str(tmp_path / "r"), "--device", "cpu"], 2, "Error: --device cannot be combined with --strategy "
             "multiworker: each worker uses all its local devices (choose them with CUDA_VISIBLE_DEVICES on each machine)"),
            (["-o", str(tmp_path / "r")], 2, "Error: --strategy multiworker needs TF_CONFIG: the cluster's workers and this "
             "task (see docs/cluster.md)")):
        result = CliRunner().invoke(main, base + extra)
        assert result.exit_code == code and result.stderr.splitlines()[-1] == said, result.output
        assert "classes," not in result.stderr  # said before the data is listed (a re-trial saw the listing first)
    monkeypatch.setenv("TF_CONFIG", "{not json")
    result = CliRunner().invoke(main, base + ["-o", str(tmp_path / "r")])
    assert result.exit_code == 2 and "TF_CONFIG must be JSON with 'cluster' and 'task'" in result.stderr, result.output
    assert not (tmp_path / "r").exists()
