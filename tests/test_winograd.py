"""Winograd F(4x4, 3x3) convolutions (training on a CPU) against float64 numpy references."""
import platform
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import reference
from alexft import train_network as train_module  # where the network is built
from alexft import weights
from alexft import winograd
from alexft.model import Kernels, onednn_is_on
from alexft.train import finetune
from fixtures import random_params
from test_model import ten_class_model

# (batch, height, width, in channels, out channels, groups): conv3- and conv4-like layers, sizes
# that are and are not multiples of the 4x4 output tile, and a 1x1 image (all padding).
SHAPES = [(2, 13, 13, 16, 24, 1), (3, 13, 11, 8, 12, 2), (1, 4, 4, 4, 6, 1), (2, 5, 7, 4, 6, 2), (2, 1, 1, 4, 4, 1)]
# Instruction sets as numpy names them: the two kinds of x86 CPU Winograd was measured on.
AVX2_CPU = frozenset({"SSE2", "SSE42", "AVX", "AVX2", "FMA3", "F16C"})
AVX512_CPU = AVX2_CPU | {"AVX512F", "AVX512CD", "AVX512BW", "AVX512DQ", "AVX512VL"}


def numpy_gradients(x, w, grad, groups):
    """Of sum(conv(x, w) * grad), for a 3x3 'same' correlation, from its definition:
    y[n, h, w, k] = sum over (i, j, c) of padded_x[n, h + i, w + j, c] * w[i, j, c, k]."""
    n, height, width, channels = x.shape
    c_in, k_out = channels // groups, w.shape[3] // groups
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    padded_grad = np.zeros_like(padded)
    kernel_grad = np.zeros_like(w)
    for g in range(groups):
        xs, ks = slice(g * c_in, (g + 1) * c_in), slice(g * k_out, (g + 1) * k_out)
        for i in range(3):
            for j in range(3):
                window = padded[:, i:i + height, j:j + width, xs]
                kernel_grad[i, j, :, ks] = np.tensordot(window, grad[..., ks], axes=([0, 1, 2], [0, 1, 2]))
                padded_grad[:, i:i + height, j:j + width, xs] += grad[..., ks] @ w[i, j, :, ks].T
    return padded_grad[:, 1:-1, 1:-1], kernel_grad


def assert_close(actual, expected, what):
    # Winograd's float32 round-off, relative to the largest value (measured: at most ~4e-6).
    error = np.abs(np.asarray(actual, np.float64) - expected).max() / np.abs(expected).max()
    assert error < 2e-5, f"{what}: relative error {error:.1e}"


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: "x".join(map(str, shape)))
def test_winograd_convolution_and_its_gradients_match_the_definition(shape):
    n, height, width, channels, filters, groups = shape
    rng = np.random.default_rng(sum(shape))
    x = rng.normal(size=(n, height, width, channels))
    w = rng.normal(size=(3, 3, channels // groups, filters))
    grad = rng.normal(size=(n, height, width, filters))
    # A batch size unknown when traced, as in training (the last batch of an epoch is smaller).
    spec = tf.TensorSpec([None, height, width, channels], tf.float32)

    @tf.function(input_signature=[spec])
    def convolve_and_differentiate(inputs):
        kernel = tf.constant(w, tf.float32)
        with tf.GradientTape() as tape:
            tape.watch([inputs, kernel])
            outputs = winograd.conv3x3(inputs, kernel, groups)
            loss = tf.reduce_sum(outputs * tf.constant(grad, tf.float32))
        return (outputs, *tape.gradient(loss, [inputs, kernel]))

    outputs, input_grad, kernel_grad = convolve_and_differentiate(tf.constant(x, tf.float32))
    expected_input_grad, expected_kernel_grad = numpy_gradients(x, w, grad, groups)
    assert_close(outputs, reference.convolution(x, w, np.zeros(filters), 1, 1, groups), "outputs")
    assert_close(input_grad, expected_input_grad, "gradient to the input")
    assert_close(kernel_grad, expected_kernel_grad, "gradient to the kernel")


def test_winograd_applies_to_3x3_stride_1_same_float32_only():
    assert winograd.applies(3, 1, "same", tf.float32)
    assert not winograd.applies(5, 1, "same", tf.float32)  # conv2
    assert not winograd.applies(11, 4, "valid", tf.float32)  # conv1
    assert not winograd.applies(3, 2, "same", tf.float32)
    assert not winograd.applies(3, 1, "same", tf.bfloat16)


def count_ops(function, images, op_type):
    graph = function.get_concrete_function(images).graph
    return sum(op.type == op_type for op in graph.get_operations())


def test_model_trains_conv3_to_conv5_as_winograd_and_infers_with_direct_convolutions():
    params = random_params(seed=4, num_classes=10)
    fast, direct = (ten_class_model(params, dropout=0.0, kernels=Kernels(winograd_training=flag)) for flag in (True, False))
    rng = np.random.default_rng(4)
    images = tf.constant(rng.normal(scale=40.0, size=(2, 227, 227, 3)), tf.float32)
    labels = tf.constant([3, 7])

    def gradients(model, training):
        @tf.function
        def run(images):
            with tf.GradientTape() as tape:
                logits = model(images, training=training)
                loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
            return tape.gradient(loss, model.trainable_variables)
        return run

    # Direct: conv1, conv2's two groups, conv3, conv4's and conv5's two groups each.
    assert count_ops(gradients(direct, True), images, "Conv2D") == 8
    assert count_ops(gradients(fast, False), images, "Conv2D") == 8
    assert count_ops(gradients(fast, True), images, "Conv2D") == 3  # conv3-conv5 are Winograd's
    # Compared by norm: a ReLU or max-pool decision may flip under round-off-sized changes and
    # move one position's gradient whole. (In the direct network, scaling 60 inputs by 1 + 1e-6
    # noise moves conv1's gradient by 2e-3 of its norm; Winograd here gives 1e-3 to 4e-3.)
    for variable, got, expected in zip(fast.trainable_variables, gradients(fast, True)(images),
                                       gradients(direct, True)(images)):
        error = np.linalg.norm(got - expected) / np.linalg.norm(expected)
        assert error < 1e-2, f"{variable.path}: gradient off by {error:.1e} of its norm"


def test_finetune_picks_the_cpus_training_kernels_and_winograd_in_long_runs_only(monkeypatch, small_digits_folder,
                                                                                canonical_weights_file, tmp_path):
    built = []

    class Built(Exception):
        pass

    def record(*args, **options):
        built.append(options["kernels"])
        raise Built

    def build_for(run, epochs):
        with pytest.raises(Built):
            finetune(small_digits_folder, weights=canonical_weights_file, epochs=epochs, output=tmp_path / run,
                     progress=False)

    monkeypatch.setattr(train_module, "build_alexnet", record)
    # 60 digits, 40-60 of them for training (after the validation split)
    monkeypatch.setattr(winograd, "MIN_TRAINING_IMAGES", 100)
    monkeypatch.setattr(winograd, "cpu_features", lambda: AVX2_CPU)
    build_for("short", epochs=1)  # at most 60 images: not worth XLA's compile
    build_for("long", epochs=4)  # at least 160
    monkeypatch.setattr(winograd, "cpu_features", lambda: AVX512_CPU)
    build_for("avx512", epochs=4)  # oneDNN's direct kernels are as fast there
    monkeypatch.setattr(winograd, "cpu_features", lambda: AVX2_CPU)
    monkeypatch.setattr(train_module, "uses_gpu", lambda strategy: True)
    build_for("gpu", epochs=4)  # cuDNN's own algorithms
    assert [kernels.winograd_training for kernels in built] == [False, True, False, False]
    # On a CPU, always: the LRN as XLA kernels, the grouped layers as one op where oneDNN runs them.
    assert [(kernels.fused_lrn_training, kernels.groups_as_one_op) for kernels in built[:3]] == [(True, onednn_is_on())] * 3
    assert built[3] == Kernels()


def test_winograd_is_chosen_only_on_cpus_where_it_was_measured_faster():
    assert winograd.helps_on(AVX2_CPU)
    assert not winograd.helps_on(AVX512_CPU)
    assert not winograd.helps_on(frozenset({"NEON", "ASIMD", "ASIMDHP"}))  # an Arm CPU: unmeasured
    assert not winograd.helps_on(frozenset({"SSE2", "SSE42", "AVX"}))  # no AVX2


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 instruction names")
def test_cpu_features_names_what_this_cpu_has():
    features = winograd.cpu_features()
    assert {"SSE", "SSE2"} <= features  # every x86-64 CPU has them
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():  # Linux: the kernel's own list of the CPU's flags
        flags = set(cpuinfo.read_text().split())
        assert ("AVX2" in features) == ("avx2" in flags)
        assert ("AVX512F" in features) == ("avx512f" in flags)


def test_all_layer_finetuning_on_two_cpu_devices_runs_winograd_in_each_replica(
        monkeypatch, small_digits_folder, canonical_weights_file, tmp_path):
    """One update of every layer (one batch of all 60 images) on two CPU devices, the XLA kernels
    running in each replica, equals the update on one device."""
    traced = []
    monkeypatch.setattr(winograd, "MIN_TRAINING_IMAGES", 0)  # a one-step run, as if it were long
    monkeypatch.setattr(winograd, "cpu_features", lambda: AVX2_CPU)  # whatever this CPU is

    def counted(*args, convolve=winograd.conv3x3):
        traced.append(1)  # once per trace: the training step is traced, then runs as a graph
        return convolve(*args)

    monkeypatch.setattr(winograd, "conv3x3", counted)
    initial = weights.load(canonical_weights_file).params
    updates = {}
    for strategy in ("one", "mirrored"):
        traced.clear()
        finetune(small_digits_folder, weights=canonical_weights_file, train="all", epochs=1, batch_size=64, lr=1e-2,
                 dropout=0.0, val_split=0, strategy=strategy, output=tmp_path / strategy, progress=False,
                 log=lambda message: None)
        assert traced, f"{strategy}: no Winograd convolution was traced"
        final = weights.load(tmp_path / strategy / "model.npz").params  # one epoch: the best is the last
        updates[strategy] = {name: final[name][0] - initial[name][0]
                             for name in ("conv1", "conv3", "conv4", "conv5")}
    for name, expected in updates["one"].items():
        scale = np.abs(expected).max()
        assert scale > 0, f"{name} did not move"
        np.testing.assert_allclose(updates["mirrored"][name], expected, atol=1e-3 * scale, err_msg=name)
