"""The Keras model against the independent numpy forward pass (tests/reference.py)."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import reference
from alexft import architecture as arch
from alexft import preprocess
from alexft import layers
from alexft.model import InferenceFunction, Kernels, LocalResponseNorm, build_alexnet, fusing_lrn, onednn_is_on, truncated
from alexft.weights import WeightSet, assign
from fixtures import photo_paths, random_params


def prepared_photos(names):
    return [preprocess.resize_and_subtract_mean(preprocess.read_image(photo_paths()[name])) for name in names]


def ten_class_model(params, **options):
    model = build_alexnet(num_classes=10, **options)
    assign(model, WeightSet({name: tuple(pair) for name, pair in params.items()}))
    return model


@pytest.fixture(scope="module")
def small_model():
    """A 10-class model with random weights: fast to build, same layers as the real one."""
    params = random_params(seed=1, num_classes=10)
    return ten_class_model(params), params


def assert_close_to_reference(actual, expected):
    scale = np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * scale)


def test_layer_output_shapes_follow_caffe():
    model = build_alexnet()
    shapes = {layer.name: tuple(layer.output.shape[1:]) for layer in model.layers}
    assert shapes["conv1"] == (55, 55, 96)
    assert shapes["pool1"] == (27, 27, 96)
    assert shapes["conv2"] == (27, 27, 256)
    assert shapes["pool2"] == (13, 13, 256)
    assert shapes["conv5"] == (13, 13, 256)
    assert shapes["pool5"] == (6, 6, 256)
    assert shapes["fc8"] == (1000,)
    assert model.count_params() == 60_965_224


def test_centre_crop_logits_match_numpy_reference(small_model):
    model, params = small_model
    views = np.stack([preprocess.center_crop(p) for p in prepared_photos(["chelsea", "coffee", "camera", "china"])])
    expected = reference.forward(params, views)
    actual = model(views, training=False).numpy()
    assert_close_to_reference(actual, expected)
    # The photos are told apart: the comparison is not between near-constant outputs.
    assert np.ptp(expected, axis=0).max() > 0.1 * np.abs(expected).max()


def test_grouped_layers_as_one_op_match_numpy_reference(small_model):
    """The formulation the Predictor uses where oneDNN is on (one op per grouped layer)."""
    if not onednn_is_on():
        pytest.skip("TensorFlow's oneDNN kernels are off (TF_ENABLE_ONEDNN_OPTS=0): no grouped convolution as one op")
    _, params = small_model
    model = ten_class_model(params, kernels=Kernels(groups_as_one_op=True))
    views = np.stack([preprocess.center_crop(p) for p in prepared_photos(["china", "flower"])])
    assert_close_to_reference(model(views, training=False).numpy(), reference.forward(params, views))
    # One convolution op per layer: the split formulation would have one per group.
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(tf.TensorSpec(views.shape)).graph
    conv_layers = [spec for spec in arch.LAYERS.values() if isinstance(spec, arch.Conv)]
    assert sum(op.type == "Conv2D" for op in graph.get_operations()) == len(conv_layers)


@pytest.mark.parametrize("channels", [96, 256], ids=["norm1", "norm2"])
def test_fused_lrn_follows_caffes_formula(channels):
    """The one-kernel LRN long classify runs use, on activations large enough that the
    normalisation divides them by up to ~10 (with the random weights of the other tests it is
    close to 1)."""
    x = np.random.default_rng(channels).gamma(1.0, 120.0, (2, 6, 6, channels)).astype(np.float32)
    expected = reference.caffe_lrn(x.astype(np.float64))
    assert (x / expected).max() > 3  # the formula is exercised, not just the identity
    layer = LocalResponseNorm()
    layer.fused = True
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=2e-6)


@pytest.mark.parametrize("channels, scale", [(96, 120.0), (256, 3.0)], ids=["norm1-large", "norm2-small"])
def test_a_bfloat16_fused_lrn_computes_in_float32_inside_its_one_kernel(channels, scale):
    """`--precision bfloat16` runs: the widening and the rounding back are part of the XLA
    kernel, not two passes of their own over the activations. Activations where the
    normalisation divides by up to ~10, and small ones where it is nearly the identity."""
    x = tf.cast(np.random.default_rng(channels).gamma(1.0, scale, (2, 6, 6, channels)).astype(np.float32), tf.bfloat16)
    expected = reference.caffe_lrn(tf.cast(x, tf.float64).numpy())
    assert ((tf.cast(x, tf.float64).numpy() / expected).max() > 3) == (scale > 100)
    layer = LocalResponseNorm(dtype="bfloat16")
    layer.fused = True
    outputs = layer(x)
    assert outputs.dtype == tf.bfloat16
    # one rounding of the float32 result to bfloat16 (8 significant bits): at most 2^-8 relative
    np.testing.assert_allclose(tf.cast(outputs, tf.float64).numpy(), expected, rtol=2.0 ** -8 * 1.001)
    graph = tf.function(layer).get_concrete_function(tf.TensorSpec(x.shape, tf.bfloat16)).graph
    assert [op.type for op in graph.get_operations() if op.type == "Cast"] == []


def lrn_input_gradient(layer, x, upstream):
    """The layer's outputs for `x` in training, and the gradient of sum(outputs * upstream)."""
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        outputs = layer(x, training=True)
        loss = tf.reduce_sum(outputs * upstream)
    return outputs, tape.gradient(loss, x)


@pytest.mark.parametrize("channels, scale", [(7, 120.0), (12, 3.0)], ids=["large", "small"])
def test_lrn_trained_as_xla_kernels_has_the_gradient_of_caffes_formula(channels, scale):
    """Training on a CPU (`Kernels.fused_lrn_training`): the hand-written gradient kernel against
    central differences of the numpy reference forward, in float64. Activations where the
    normalisation divides by up to ~10, and small ones where it is nearly the identity."""
    rng = np.random.default_rng(channels)
    x = rng.gamma(1.0, scale, (2, 2, 3, channels)).astype(np.float32)
    upstream = rng.normal(size=x.shape).astype(np.float32)
    expected = reference.numeric_input_gradient(reference.caffe_lrn, x.astype(np.float64), upstream)
    outputs, gradient = lrn_input_gradient(LocalResponseNorm(fused_training=True), x, upstream)
    np.testing.assert_allclose(outputs.numpy(), reference.caffe_lrn(x.astype(np.float64)), rtol=2e-6)
    # The cross-channel term matters for the large activations: there the gradient is not the
    # forward's scale alone.
    cross_channel = np.abs(expected - upstream * reference.caffe_lrn(x.astype(np.float64)) / x).max()
    assert (cross_channel > 0.05 * np.abs(expected).max()) == (scale > 100)
    # as close as TensorFlow's own op (both about 1e-7 of the largest value here)
    np.testing.assert_allclose(gradient.numpy(), expected, atol=1e-6 * np.abs(expected).max())
    # Not trained (training=False), and without the option: TensorFlow's LRN op, its gradient the same.
    for layer, training in ((LocalResponseNorm(fused_training=True), False), (LocalResponseNorm(), True)):
        graph = tf.function(lambda v, layer=layer, training=training: layer(v, training=training)).get_concrete_function(
            tf.TensorSpec(x.shape)).graph
        assert [op.type for op in graph.get_operations()].count("LRN") == 1


def test_a_bfloat16_lrn_trained_as_xla_kernels_reads_and_writes_bfloat16():
    """`finetune --mixed-precision` on a CPU: no casts around the kernels, in either direction;
    the gradient within bfloat16's rounding of the float64 one."""
    rng = np.random.default_rng(5)
    x = tf.cast(rng.gamma(1.0, 120.0, (2, 3, 3, 9)).astype(np.float32), tf.bfloat16)
    upstream = tf.cast(rng.normal(size=x.shape).astype(np.float32), tf.bfloat16)
    wide = tf.cast(x, tf.float64).numpy()
    expected = reference.numeric_input_gradient(reference.caffe_lrn, wide, tf.cast(upstream, tf.float64).numpy())
    layer = LocalResponseNorm(fused_training=True, dtype="mixed_bfloat16")
    outputs, gradient = lrn_input_gradient(layer, x, upstream)
    assert outputs.dtype == gradient.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(outputs, tf.float64).numpy(), reference.caffe_lrn(wide), rtol=2.0 ** -8 * 1.001)
    # float32 inside, rounded to bfloat16 on the way out
    np.testing.assert_allclose(tf.cast(gradient, tf.float64).numpy(), expected, atol=2.0 ** -7 * np.abs(expected).max())

    @tf.function
    def step(v):
        return lrn_input_gradient(layer, v, upstream)[1]

    graph = step.get_concrete_function(tf.TensorSpec(x.shape, tf.bfloat16)).graph
    assert [op.type for op in graph.get_operations() if op.type in ("Cast", "LRN", "LRNGrad")] == []


def test_the_cpus_training_kernels_give_the_plain_formulations_gradients():
    """The whole network trained as finetune trains it on a CPU (the LRN as XLA kernels, the
    grouped layers as one op where oneDNN runs them) against the formulation that runs everywhere."""
    params = random_params(seed=6, num_classes=10)
    fast_kernels = Kernels(groups_as_one_op=onednn_is_on(), fused_lrn_training=True)
    fast, plain = (ten_class_model(params, dropout=0.0, kernels=kernels) for kernels in (fast_kernels, Kernels()))
    rng = np.random.default_rng(6)
    images = tf.constant(rng.normal(scale=40.0, size=(2, 227, 227, 3)), tf.float32)
    labels = tf.constant([3, 7])

    def gradients(model):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        return tape.gradient(loss, model.trainable_variables)

    # conv4 on, to round-off. conv1-conv3, whose gradients pass back through pool2, by norm: a
    # ReLU or max-pool decision may flip under round-off-sized changes and move one position's
    # gradient whole (scaling these inputs by 1 + 1e-6 noise moves conv1's by 3.5e-3 of its
    # norm and conv3's by 1.6e-3; the LRN kernels by 1.9e-3 and 1.7e-3).
    for variable, got, expected in zip(fast.trainable_variables, gradients(fast), gradients(plain)):
        assert np.linalg.norm(expected) > 0, variable.path
        error = np.linalg.norm(got - expected) / np.linalg.norm(expected)
        limit = 1e-2 if variable.path.split("/")[0] in ("conv1", "conv2", "conv3") else 1e-5
        assert error < limit, f"{variable.path}: gradient off by {error:.1e} of its norm"


def test_model_traced_with_fused_lrn_matches_numpy_reference(small_model):
    model, params = small_model
    views = np.stack([preprocess.center_crop(p) for p in prepared_photos(["china", "flower"])])
    spec = tf.TensorSpec(views.shape)
    with fusing_lrn(model):
        fused = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    assert_close_to_reference(fused(tf.constant(views)).numpy(), reference.forward(params, views))
    # TensorFlow's LRN op is gone from the traced graph, and back once the block has ended.
    plain = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    assert [op.type for op in fused.graph.get_operations()].count("LRN") == 0
    assert [op.type for op in plain.graph.get_operations()].count("LRN") == 2


def test_inference_falls_back_to_tensorflows_lrn_where_xla_fails(small_model, monkeypatch, caplog):
    model, params = small_model
    views = np.stack([preprocess.center_crop(p) for p in prepared_photos(["china"])])

    @tf.function(jit_compile=True)
    def uncompilable(x):  # XLA cannot compile a call back into Python
        y = tf.numpy_function(lambda a: a, [x], tf.float32)
        y.set_shape(x.shape)
        return y

    monkeypatch.setattr(layers, "_lrn_one_kernel", uncompilable)
    run = InferenceFunction(model)
    with caplog.at_level("WARNING", logger="alexft"):
        outputs = run(views, fused_lrn=True).numpy()
    assert_close_to_reference(outputs, reference.forward(params, views))
    assert "LRN as one XLA kernel failed, TensorFlow's LRN op takes over" in caplog.text
    caplog.clear()
    run(views, fused_lrn=True)
    assert caplog.text == ""  # tried once, not on every batch


def test_ten_crop_logits_match_numpy_reference(small_model):
    model, params = small_model
    views = preprocess.ten_crops(prepared_photos(["flower"])[0])
    expected = reference.forward(params, views)
    assert_close_to_reference(model(views, training=False).numpy(), expected)


def test_intermediate_layers_match_reference(small_model):
    model, params = small_model
    views = preprocess.center_crop(prepared_photos(["astronaut"])[0])[np.newaxis]
    for layer in ("conv1", "conv2", "pool5", "fc7"):
        expected = reference.forward(params, views, until=layer)
        assert_close_to_reference(truncated(model, layer)(views).numpy(), expected)


def test_dropout_acts_only_while_training(small_model):
    model, _ = small_model
    views = preprocess.center_crop(prepared_photos(["coffee"])[0])[np.newaxis]
    inference = [model(views, training=False).numpy() for _ in range(2)]
    training = model(views, training=True).numpy()
    np.testing.assert_array_equal(inference[0], inference[1])
    assert not np.allclose(training, inference[0], rtol=1e-3)


def test_seeded_builds_start_identical_and_follow_caffe_init():
    first, second = build_alexnet(num_classes=10, seed=3), build_alexnet(num_classes=10, seed=3)
    for name in ("conv1", "fc6", "fc8"):
        np.testing.assert_array_equal(first.get_layer(name).kernel.numpy(), second.get_layer(name).kernel.numpy())
    assert abs(first.get_layer("fc6").kernel.numpy().std() - 0.005) < 1e-4
    assert abs(first.get_layer("conv1").kernel.numpy().std() - 0.01) < 1e-3
    assert np.all(first.get_layer("conv2").bias.numpy() == np.float32(0.1))
    assert np.all(first.get_layer("fc8").bias.numpy() == 0)


def test_starting_from_arrays_equals_assigning_them(canonical_params):
    from alexft.weights.formats import _aligned_empty

    params = {name: tuple(pair) for name, pair in canonical_params.items()}
    expected = build_alexnet(seed=1)
    assign(expected, WeightSet(params))
    # Aligned float32 buffers are adopted by TensorFlow without a copy; others are copied.
    initial = {}
    for index, (name, (kernel, bias)) in enumerate(params.items()):
        if index % 2 == 0:
            aligned = _aligned_empty(kernel.shape, kernel.dtype)
            aligned[...] = kernel
            kernel = aligned
        initial[name] = (kernel, bias)
    model = build_alexnet(initial=initial)
    assert initial == {}, "the arrays are handed over, not kept"
    for name in params:
        for ours, theirs in zip(model.get_layer(name).weights, expected.get_layer(name).weights):
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    views = np.random.default_rng(0).standard_normal((2, 227, 227, 3), dtype=np.float32) * 50
    np.testing.assert_array_equal(model(views).numpy(), expected(views).numpy())


@pytest.mark.parametrize("setting, enabled", [(None, "True"), ("0", "False")])
def test_importing_alexft_first_turns_on_onednn_unless_the_user_chose(setting, enabled):
    """TensorFlow picks its kernels once, at import: alexft asks for oneDNN's (faster on AVX2
    CPUs, where TensorFlow would use Eigen's), and a value the user set wins."""
    env = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    if setting is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = setting
    code = ("import alexft, tensorflow\n"
            "from tensorflow.python.util import _pywrap_util_port\n"
            "print(_pywrap_util_port.IsMklEnabled())")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == enabled
