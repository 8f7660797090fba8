"""Fine-tuning on scikit-learn's digits with generated base weights."""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from alexft import checkpoint as checkpoints
from alexft import weights
from alexft.data import DataError
from alexft.devices import DeviceError, resolve_device
from alexft.model import build_alexnet, head, truncated
from alexft.preprocess import image_views
from alexft.train import TrainingError, finetune
from cli import main
from test_preprocess import bad_images

FROZEN = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"]


def quiet(message):
    pass


def read_history(run):
    with open(run / "history.csv") as handle:
        return list(csv.DictReader(handle))


def test_fc8_learns_the_digits_far_above_chance(fc8_run):
    summary, _ = fc8_run
    assert summary["cached"] and summary["epochs"] == 30
    assert summary["val_images"] == 60 and summary["train_images"] == 240
    assert summary["val_accuracy"] > 0.5, summary  # chance is 0.1


def test_frozen_layers_are_bit_identical_to_the_input_file(fc8_run, canonical_params):
    _, run = fc8_run
    for name in ("model.npz", "model_last.npz"):
        saved = weights.load(run / name)
        assert saved.class_names == [f"digit_{d}" for d in range(10)]
        for layer in FROZEN:
            assert np.array_equal(saved.params[layer][0], canonical_params[layer][0]), layer
            assert np.array_equal(saved.params[layer][1], canonical_params[layer][1]), layer
        assert saved.params["fc8"][0].shape == (4096, 10)


def test_run_folder_describes_the_run(fc8_run):
    summary, run = fc8_run
    history = read_history(run)
    assert [int(row["epoch"]) for row in history] == list(range(1, 31))
    assert float(history[-1]["lr"]) == pytest.approx(0.0001) and float(history[0]["lr"]) == pytest.approx(0.001)
    best = max(history, key=lambda row: float(row["val_accuracy"]))
    assert summary["best_epoch"] == int(best["epoch"])
    config = json.loads((run / "config.json").read_text())
    assert config["seed"] == 0 and config["train"] == ["fc8"] and config["skip"] == ["fc8"]
    assert set(config["versions"]) >= {"alexft", "tensorflow", "numpy", "opencv", "python"}
    assert json.loads((run / "classes.json").read_text())[3] == "digit_3"
    assert json.loads((run / "broken_files.json").read_text()) == []
    curves = cv2.imread(str(run / "curves.png"))
    assert curves is not None and curves.shape[:2] == (400, 1000)
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(run / "tensorboard"))
    assert not [p for p in run.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_best_and_last_models_are_the_tracked_epochs(fc8_run):
    summary, run = fc8_run
    record, arrays = checkpoints.load(run / "checkpoint.npz")
    assert record["best_epoch"] == summary["best_epoch"] and record["epoch"] == 30
    best, last = weights.load(run / "model.npz"), weights.load(run / "model_last.npz")
    # Trained variables in order: fc8 kernel, fc8 bias.
    np.testing.assert_array_equal(best.params["fc8"][0], arrays["best/0"])
    np.testing.assert_array_equal(last.params["fc8"][0], arrays["current/0"])
    np.testing.assert_array_equal(last.params["fc8"][1], arrays["current/1"])


def test_cached_and_full_paths_give_the_same_loss_for_the_same_view(canonical_weights_file, digits_folder):
    model = build_alexnet(num_classes=10, seed=1)
    weights.assign(model, weights.load(canonical_weights_file), skip=("fc8",))
    paths = sorted(digits_folder.glob("digit_*/*.png"))[::37][:4]
    labels = np.array([int(p.parent.name[-1]) for p in paths])
    views = np.stack([image_views(p, ten_crop=True) for p in paths])  # (4, 10, 227, 227, 3)
    for after in ("fc7", "fc6", "pool5"):
        cached = truncated(model, after).predict(views.reshape(-1, 227, 227, 3), verbose=0)
        cached = cached.reshape((4, 10) + cached.shape[1:])
        top = head(model, after)
        for view in (0, 4, 7):
            full_logits = model(views[:, view], training=False).numpy()
            cached_logits = top(cached[:, view], training=False).numpy()
            np.testing.assert_allclose(cached_logits, full_logits, rtol=1e-4, atol=1e-4)
            full_loss = cross_entropy(full_logits, labels)
            assert cross_entropy(cached_logits, labels) == pytest.approx(full_loss, rel=1e-5)


def cross_entropy(logits, labels):
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probabilities[np.arange(len(labels)), labels].mean())


def test_full_path_trains_fc7_and_fc8_with_ten_crop_validation(small_digits_folder, canonical_weights_file, tmp_path, canonical_params):
    summary = finetune(small_digits_folder, weights=canonical_weights_file, train=["fc7", "fc8"], epochs=2, batch_size=8,
                       val_split=0.2, ten_crop_val=True, cache=False, output=tmp_path / "run", progress=False, log=quiet)
    assert not summary["cached"] and summary["epochs"] == 2
    assert np.isfinite(summary["train_loss"]) and 0 <= summary["val_accuracy"] <= 1
    saved = weights.load(tmp_path / "run" / "model_last.npz")
    assert np.array_equal(saved.params["fc6"][0], canonical_params["fc6"][0])
    assert not np.array_equal(saved.params["fc7"][0], canonical_params["fc7"][0])  # trained at 1x


def test_broken_files_are_skipped_and_listed(small_digits_folder, canonical_weights_file, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small_digits_folder, data)
    for name in ("cut.jpg", "empty.jpg"):
        (data / "digit_3" / name).write_bytes(bad_images()[name][0])
    # cache_memory=0: the feature cache goes to a memory-mapped file in the run folder.
    summary = finetune(data, weights=canonical_weights_file, epochs=1, batch_size=8, val_split=0, output=tmp_path / "run",
                       cache_memory=0, progress=False, log=quiet)
    assert summary["broken_files"] == 2 and summary["train_images"] == 60 and summary["cached"]
    assert not (tmp_path / "run" / "feature_cache").exists()
    listed = json.loads((tmp_path / "run" / "broken_files.json").read_text())
    assert sorted(os.path.basename(row["path"]) for row in listed) == ["cut.jpg", "empty.jpg"]
    assert "truncated JPEG" in " ".join(row["error"] for row in listed)
    with pytest.raises(DataError, match="2 of 62 images are broken"):
        finetune(data, weights=canonical_weights_file, epochs=1, val_split=0, output=tmp_path / "strict",
                 max_broken=0.01, progress=False, log=quiet)


def test_layer_choices_that_would_leave_random_layers_are_refused(small_digits_folder, canonical_weights_file, tmp_path):
    with pytest.raises(TrainingError, match="--skip fc7 without training it would leave it random"):
        finetune(small_digits_folder, weights=canonical_weights_file, skip=["fc7", "fc8"], train=["fc8"],
                 output=tmp_path / "a", log=quiet)
    with pytest.raises(TrainingError, match="unknown layer.s. fc9"):
        finetune(small_digits_folder, weights=canonical_weights_file, train=["fc9"], output=tmp_path / "b", log=quiet)


def test_mirrored_strategy_on_two_cpu_devices_matches_one_device(small_digits_folder, canonical_weights_file, tmp_path):
    results = {}
    for strategy in ("one", "mirrored"):
        finetune(small_digits_folder, weights=canonical_weights_file, epochs=2, batch_size=8, dropout=0.0, val_split=0,
                 strategy=strategy, output=tmp_path / strategy, progress=False, log=quiet)
        results[strategy] = weights.load(tmp_path / strategy / "model_last.npz").params["fc8"]
    initial = build_alexnet(num_classes=10, seed=0).get_layer("fc8").kernel.numpy()
    assert not np.allclose(results["one"][0], initial, atol=1e-6)  # it trained
    np.testing.assert_allclose(results["mirrored"][0], results["one"][0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(results["mirrored"][1], results["one"][1], rtol=1e-4, atol=1e-6)


def test_float16_mixed_precision_path_runs_on_cpu(small_digits_folder, canonical_weights_file, tmp_path):
    # The GPU's float16 path, forced on the CPU: float16 kernels are slow here, so train fc8
    # only, on float32-cached features; the float16 training step (loss scaling) is what runs.
    summary = finetune(small_digits_folder, weights=canonical_weights_file, epochs=2, batch_size=8,
                       val_split=0.2, mixed_precision="float16", output=tmp_path / "run", progress=False, log=quiet)
    assert np.isfinite(summary["train_loss"]) and np.isfinite(summary["val_loss"])
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["mixed_precision"] == "float16"
    saved = weights.load(tmp_path / "run" / "model_last.npz")  # variables stay float32
    assert saved.params["fc8"][0].dtype == np.float32
    initial = build_alexnet(num_classes=10, seed=0).get_layer("fc8").kernel.numpy()
    assert not np.allclose(saved.params["fc8"][0], initial)  # the loss-scaled updates were applied
    model = build_alexnet(num_classes=10, dtype="mixed_float16")
    assert model.get_layer("conv2").compute_dtype == "float16" and model.get_layer("conv2").kernel.dtype == "float32"
    assert model.get_layer("fc8").compute_dtype == "float16" and model.output.dtype == "float32"  # logits


def test_mixed_precision_means_float16_on_gpus_and_bfloat16_on_cpus(monkeypatch):
    import tensorflow as tf

    from alexft import devices

    cpu = tf.distribute.OneDeviceStrategy("/CPU:0")
    monkeypatch.setattr(devices, "cpu_has_bfloat16", lambda: True)
    assert [devices.precision_policy(choice, cpu) for choice in (None, False, True, "float16", "bfloat16")] == [
        "float32", "float32", "mixed_bfloat16", "mixed_float16", "mixed_bfloat16"]
    monkeypatch.setattr(devices, "uses_gpu", lambda strategy: True)
    assert [devices.precision_policy(choice, cpu) for choice in (None, False, True)] == [
        "mixed_float16", "float32", "mixed_float16"]
    with pytest.raises(DeviceError, match="expected True, False, 'float16' or 'bfloat16'"):
        devices.precision_policy("float8", cpu)


def test_bfloat16_is_refused_on_a_cpu_without_it(monkeypatch, small_digits_folder, canonical_weights_file, tmp_path):
    from alexft import devices

    monkeypatch.setattr(devices, "cpu_has_bfloat16", lambda: False)
    with pytest.raises(DeviceError, match="no bfloat16 instructions .* train without --mixed-precision"):
        finetune(small_digits_folder, weights=canonical_weights_file, epochs=1, batch_size=8, val_split=0.2,
                 mixed_precision=True, output=tmp_path / "run", progress=False, log=quiet)
    assert not (tmp_path / "run").exists()  # the refused start left nothing that would block the next one


def test_cpu_bfloat16_flags_are_read_from_cpuinfo(tmp_path):
    from alexft.cpu_features import cpu_has_bfloat16

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert cpu_has_bfloat16(info) is True
    info.write_text("processor\t: 0\nflags\t\t: fpu sse amx_tile amx_bf16\n")
    assert cpu_has_bfloat16(info) is True
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512bw\n")
    assert cpu_has_bfloat16(info) is False
    info.write_text("Processor\t: AArch64\n")  # no flags line: unknown
    assert cpu_has_bfloat16(info) is None
    assert cpu_has_bfloat16(tmp_path / "missing") is None


def test_bfloat16_training_on_cpu_learns_every_layer(small_digits_folder, canonical_weights_file, tmp_path):
    from alexft.cpu_features import cpu_has_bfloat16

    if cpu_has_bfloat16() is False:
        pytest.skip("this CPU has no bfloat16 instructions (avx512_bf16, amx_bf16): the refusal is tested instead")
    messages = []
    summary = finetune(small_digits_folder, weights=canonical_weights_file, epochs=2, batch_size=16, val_split=0.2,
                       train="all", mixed_precision=True, output=tmp_path / "run", progress=False, log=messages.append)
    assert "mixed precision: bfloat16 compute, float32 weights, loss and softmax" in messages
    assert np.isfinite(summary["train_loss"]) and np.isfinite(summary["val_loss"])
    loaded = weights.load(canonical_weights_file).params
    saved = weights.load(tmp_path / "run" / "model_last.npz").params
    for name in ("conv1", "conv3", "fc7"):  # every layer learned, and stayed float32
        assert saved[name][0].dtype == np.float32
        assert not np.allclose(saved[name][0], loaded[name][0])
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert len(history) == 3  # header + 2 epochs


def test_asking_for_a_missing_gpu_is_a_clear_error():
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    with pytest.raises(DeviceError, match="TensorFlow sees no GPU"):
        resolve_device("gpu")
    with pytest.raises(DeviceError, match="expected auto, cpu, gpu or gpu:N"):
        resolve_device("tpu")
    assert resolve_device("auto") == "/CPU:0"


def test_divergence_stops_with_a_clear_message(small_digits_folder, canonical_weights_file, tmp_path):
    with pytest.raises(TrainingError, match="training diverged; lower --lr"):
        finetune(small_digits_folder, weights=canonical_weights_file, epochs=3, batch_size=8, lr=1e12, val_split=0,
                 output=tmp_path / "run", progress=False, log=quiet)
    assert not (tmp_path / "run" / "model.npz").exists()


def test_divergence_in_the_last_update_of_an_epoch_is_caught_before_it_is_saved(small_digits_folder, canonical_weights_file, tmp_path):
    """With one batch per epoch every loss is computed before a diverging update: only the
    weights show it. The run must stop there, keeping epoch 1's finite checkpoint."""
    with pytest.raises(TrainingError, match="weights became non-finite in epoch 2: training diverged"):
        finetune(small_digits_folder, weights=canonical_weights_file, epochs=3, batch_size=64, lr=1e30, val_split=0,
                 output=tmp_path / "run", progress=False, log=quiet)
    with np.load(tmp_path / "run" / "checkpoint.npz") as checkpoint:
        assert json.loads(str(checkpoint["record"]))["epoch"] == 1
        assert all(np.isfinite(checkpoint[key]).all() for key in checkpoint.files if key.startswith("current/"))


def test_resume_refuses_a_different_configuration(small_digits_folder, canonical_weights_file, tmp_path):
    finetune(small_digits_folder, weights=canonical_weights_file, epochs=1, batch_size=8, val_split=0,
             output=tmp_path / "run", progress=False, log=quiet)
    with pytest.raises(TrainingError, match=r"cannot resume with a different configuration \(train: was \[\"fc8\"\], now \[\"fc7\", \"fc8\"\]"):
        finetune(small_digits_folder, weights=canonical_weights_file, train=["fc7", "fc8"], epochs=1, batch_size=8,
                 val_split=0, output=tmp_path / "run", resume=True, progress=False, log=quiet)
    with pytest.raises(TrainingError, match="already holds a run; pass --resume"):
        finetune(small_digits_folder, weights=canonical_weights_file, epochs=1, batch_size=8, val_split=0,
                 output=tmp_path / "run", progress=False, log=quiet)


def test_python_api_and_cli_produce_the_same_run(small_digits_folder, canonical_weights_file, tmp_path):
    finetune(small_digits_folder, weights=canonical_weights_file, epochs=2, batch_size=8, seed=3,
             output=tmp_path / "api", progress=False, log=quiet)
    result = CliRunner().invoke(main, ["finetune", str(small_digits_folder), "--weights", str(canonical_weights_file),
                                       "--epochs", "2", "--batch-size", "8", "--seed", "3", "--output", str(tmp_path / "cli"),
                                       "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["run"] == str(tmp_path / "cli")
    api, cli = (weights.load(tmp_path / name / "model.npz") for name in ("api", "cli"))
    for layer in api.params:
        np.testing.assert_array_equal(api.params[layer][0], cli.params[layer][0])
    strip = lambda run: [{k: v for k, v in row.items() if k != "seconds"} for row in read_history(run)]  # noqa: E731
    assert strip(tmp_path / "api") == strip(tmp_path / "cli")
    assert sorted(os.listdir(tmp_path / "api")) == sorted(os.listdir(tmp_path / "cli"))


def cli_command(data, weights_file, output, epochs=6):
    return [sys.executable, "-m", "cli", "finetune", str(data), "--weights", str(weights_file), "--epochs", str(epochs),
            "--batch-size", "4", "--val-split", "0.2", "--output", str(output), "--json"]


def run_cli(command):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(__file__)))
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def uninterrupted_run(small_digits_folder, canonical_weights_file, tmp_path_factory):
    output = tmp_path_factory.mktemp("runs") / "uninterrupted"
    result = run_cli(cli_command(small_digits_folder, canonical_weights_file, output))
    assert result.returncode == 0, result.stderr
    return output


def interrupt_after_first_checkpoint(command, output, signal_number):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(__file__)))
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 300
    while not (output / "checkpoint.npz").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal_number)
    stdout, stderr = process.communicate(timeout=300)
    return process.returncode, stderr


# kill -9 at many moments is tried in test_faults.py; here the signals a user or a scheduler sends.
@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_resume_after_interruption_matches_an_uninterrupted_run(
        signal_number, small_digits_folder, canonical_weights_file, tmp_path, uninterrupted_run):
    output = tmp_path / "run"
    command = cli_command(small_digits_folder, canonical_weights_file, output)
    returncode, stderr = interrupt_after_first_checkpoint(command, output, signal_number)
    assert returncode == 128 + signal_number, stderr
    assert "continue with --resume" in stderr
    assert not (output / "model.npz").exists()
    assert not [p.name for p in output.iterdir() if p.name.startswith(".")]
    resumed = run_cli(command + ["--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    history, reference_history = read_history(output), read_history(uninterrupted_run)
    assert [row["epoch"] for row in history] == [str(e) for e in range(1, 7)]
    for row, expected in zip(history, reference_history):
        assert float(row["train_loss"]) == pytest.approx(float(expected["train_loss"]), rel=1e-4)
        assert float(row["val_accuracy"]) == pytest.approx(float(expected["val_accuracy"]))
    final, expected = (weights.load(run / "model_last.npz").params["fc8"][0] for run in (output, uninterrupted_run))
    np.testing.assert_allclose(final, expected, rtol=1e-4, atol=1e-6)


def test_rate_multipliers_reach_the_update(small_digits_folder, canonical_weights_file, tmp_path):
    """One update of fc8 (one batch, one epoch) moves a variable by lr * multiplier * (gradient +
    decay * weight), the same for every run from the same start: so the moves must scale with the
    fresh-layer multiplier, and the biases' with fresh x bias multiplier."""
    def fc8_after_one_update(fresh, bias):
        output = tmp_path / f"fresh{fresh}-bias{bias}"
        finetune(small_digits_folder, weights=canonical_weights_file, epochs=1, batch_size=64, val_split=0.2,
                 cache=False, dropout=0.0, fresh_lr_multiplier=fresh, bias_lr_multiplier=bias, output=output,
                 progress=False, log=quiet)
        fc8 = weights.load(output / "model_last.npz").params["fc8"]
        shutil.rmtree(output)  # about 435 MB a run
        return fc8

    (k1, b1), (k2, b2), (k4, b4) = (fc8_after_one_update(1, 1), fc8_after_one_update(2, 1),
                                    fc8_after_one_update(4, 0.5))
    # kernel multipliers 1, 2, 4 (fresh); bias multipliers 1, 2, 2 (fresh x bias)
    assert np.abs(k2 - k1).max() > 1e-6 and np.abs(b2 - b1).max() > 1e-6
    np.testing.assert_allclose(k4 - k2, 2 * (k2 - k1), rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(b4, b2, rtol=1e-6, atol=1e-7)
