"""Multi-worker training on TensorFlow's own engine: two worker processes on 127.0.0.1,
configured through TF_CONFIG as any scheduler would."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from alexft import checkpoint as checkpoints
from alexft import weights
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
    return [(worker.wait(timeout), *worker.communicate()) for worker in workers]


def test_two_workers_train_together_and_match_one_process(small_digits_folder, canonical_weights_file, tmp_path):
    run = tmp_path / "two_workers"
    results = _finish(_start_workers(small_digits_folder, canonical_weights_file, run))
    for status, stdout, stderr in results:
        assert status == 0, stderr[-3000:]
    assert "multi-worker training as worker 0 (chief" in results[0][2]
    assert "multi-worker training as worker 1" in results[1][2]
    assert all("2 replicas in sync across the cluster" in stderr for _, _, stderr in results)

    single = finetune(small_digits_folder, weights=canonical_weights_file, epochs=3, batch_size=10, val_split=0.2,
                      dropout=0, output=tmp_path / "one", progress=False, log=lambda message: None)
    together = weights.load(run / "model_last.npz").params
    alone = weights.load(Path(single["run"]) / "model_last.npz").params
    for got, expected in zip(together["fc8"], alone["fc8"]):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    history = [line.split(",") for line in (run / "history.csv").read_text().splitlines()[1:]]
    expected = [line.split(",") for line in (Path(single["run"]) / "history.csv").read_text().splitlines()[1:]]
    assert len(history) == len(expected) == 3
    for got, want in zip(history, expected):
        np.testing.assert_allclose([float(v) for v in got[1:5]], [float(v) for v in want[1:5]], rtol=1e-4, atol=1e-6)
    # Only the chief wrote: one TensorBoard events file, no worker leftovers.
    assert len(list((run / "tensorboard").glob("events.*"))) == 1
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []


def test_a_killed_worker_ends_the_job_and_every_worker_resumes(small_digits_folder, canonical_weights_file, tmp_path):
    run = tmp_path / "run"
    workers = _start_workers(small_digits_folder, canonical_weights_file, run, "--no-cache", "--epochs", "6")
    deadline = time.monotonic() + 300
    while not (run / "checkpoint.npz").exists():
        assert time.monotonic() < deadline and all(worker.poll() is None for worker in workers), _finish(workers)
        time.sleep(0.05)
    workers[1].send_signal(signal.SIGKILL)
    status, _, stderr = _finish(workers[:1], timeout=120)[0]
    workers[1].wait()
    assert status != 0
    assert "lost contact with another worker" in stderr and "Restart every worker with --resume" in stderr, stderr[-3000:]
    done, _ = checkpoints.load(run / "checkpoint.npz")
    assert 1 <= done["epoch"] < 6

    results = _finish(_start_workers(small_digits_folder, canonical_weights_file, run, "--no-cache", "--epochs", "6", "--resume"))
    for status, _, stderr in results:
        assert status == 0, stderr[-3000:]
    assert f"resuming {run} at epoch {done['epoch'] + 1}" in results[0][2]
    epochs = [line.split(",")[0] for line in (run / "history.csv").read_text().splitlines()[1:]]
    assert epochs == [str(number) for number in range(1, 7)]


def test_cluster_mistakes_are_refused_before_any_worker_waits(small_digits_folder, canonical_weights_file, tmp_path, monkeypatch):
    """Each of these would otherwise leave the other workers waiting for the cluster forever."""
    import pytest

    from alexft.devices import DeviceError
    from alexft.train import TrainingError

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
    with pytest.raises(TrainingError, match="needs --output"):
        start()
    with pytest.raises(TrainingError, match="--device cannot be combined"):
        start(output=tmp_path / "run", device="cpu")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "checkpoint.npz").write_bytes(b"an earlier run")
    with pytest.raises(TrainingError, match="already holds a run; pass --resume"):  # worker 1, not only the chief
        start(output=tmp_path / "old")
