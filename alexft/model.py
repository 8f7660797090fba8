"""The Keras AlexNet, laid out exactly like `bvlc_alexnet.npy`.

Grouped convolutions are written as split -> one `tf.nn.conv2d` per group -> concat:
on TF 2.21 CPU that formulation infers ~25% faster than `Conv2D(groups=2)` and
trains ~4.5x faster (Keras' grouped-conv gradient is slow on CPU; see
shared/docs/PERF_NOTES.md), and it runs on every TensorFlow kernel set. Only where
TensorFlow's oneDNN kernels are on can inference instead run each grouped layer as one
`tf.nn.conv2d` (`Kernels.groups_as_one_op`): ~20% faster at batch 1 on an AVX2 CPU, the
same at batch 64, a few percent in bfloat16 training (docs/benchmarks.md). Long inference runs
can also trace LRN as one XLA kernel (`InferenceFunction`, `fusing_lrn`). Training on a CPU
runs the LRN as XLA kernels too, and can run conv3-conv5 as Winograd convolutions (`Kernels`,
alexft/winograd.py).
"""
import contextlib
import dataclasses
import logging

import keras
import numpy as np
import tensorflow as tf

from . import architecture as arch
from .layers import CaffeMaxPooling2D, GroupedConv2D, LocalResponseNorm, _lrn_one_kernel  # noqa: F401  (re-exported)
from .pipeline import check_count
from .quiet import hide_false_retracing_warnings

log = logging.getLogger("alexft")
hide_false_retracing_warnings()


# Views from which a run uses the fused LRN: its compile (~0.3 s, once per batch shape) against
# ~2 ms saved per view at batch 32-64 on a 2-core CPU (docs/benchmarks.md).
FUSED_LRN_MIN_VIEWS = 512


def fused_lrn_pays_off(views_in_run):
    """Whether a run of this many views should use the fused LRN on its full batches (one batch
    shape, so one compile)."""
    return views_in_run >= FUSED_LRN_MIN_VIEWS


class InferenceFunction:
    """`model` on batches of preprocessed views, then `finish` (e.g. a softmax), for inference.

    Traced once for every batch size. Called with `fused_lrn=True` it runs the one-kernel LRN
    instead: traced on first use, then compiled by XLA once per batch shape, so it suits long
    runs of equal batches (`FUSED_LRN_MIN_VIEWS`).
    """

    def __init__(self, model, finish=None):
        self.model = model
        self.finish = finish or (lambda outputs: outputs)
        self._plain = self._traceable()
        self._fused = None  # traced on first use; False once XLA failed here

    def _traceable(self):
        spec = tf.TensorSpec([None, arch.INPUT_SIZE, arch.INPUT_SIZE, 3], tf.float32)
        # A fixed signature: a short last batch must not trigger a retrace.
        return tf.function(lambda views: self.finish(self.model(views, training=False)), input_signature=[spec])

    def __call__(self, views, fused_lrn=False):
        views = tf.convert_to_tensor(views, tf.float32)
        if fused_lrn and self._fused is not False:
            if self._fused is None:
                with fusing_lrn(self.model):  # the layers read it while being traced, so trace now
                    self._fused = self._traceable().get_concrete_function()
            try:
                return self._fused(views)
            except tf.errors.OpError as error:  # e.g. a device XLA cannot compile for: a long run goes on
                log.warning("alexft: LRN as one XLA kernel failed, TensorFlow's LRN op takes over: %s",
                            str(error.message).strip().splitlines()[0])
                self._fused = False
        return self._plain(views)


@contextlib.contextmanager
def fusing_lrn(model):
    """While active, tracing `model` uses the one-kernel LRN (for inference functions that are
    traced inside the block and called on a few batch shapes)."""
    layers = [layer for layer in model.layers if isinstance(layer, LocalResponseNorm)]
    for layer in layers:
        layer.fused = True
    try:
        yield model
    finally:
        for layer in layers:
            layer.fused = False


def caffe_initializers(name, seed=None):
    """Caffe's train_val init: Gaussian std 0.01 (fc6/fc7 0.005); bias 0 or 0.1."""
    stddev = 0.005 if name in ("fc6", "fc7") else 0.01
    bias = 0.0 if name in ("conv1", "conv3", "fc8") else 0.1
    return keras.initializers.RandomNormal(stddev=stddev, seed=seed), keras.initializers.Constant(bias)


class _FromArray(keras.initializers.Initializer):
    """Starts a variable from a given array, then drops it: the weights are never held twice."""

    def __init__(self, holder, key):
        self.holder, self.key = holder, key

    def __call__(self, shape, dtype=None):
        array = self.holder.pop(self.key)
        if tuple(array.shape) != tuple(shape):
            raise ValueError(f"{self.key}: weights of shape {array.shape} for a variable of shape {tuple(shape)}")
        if _shareable(array, dtype):
            # The variable takes over the array's memory: no copy (convert_to_tensor makes two).
            return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
        return tf.convert_to_tensor(array, dtype=dtype)


def _shareable(array, dtype):
    """Whether TensorFlow can adopt `array`'s buffer: float32, C-contiguous, 64-byte aligned
    (TensorFlow aborts the process on a misaligned buffer, so this is checked, never assumed)."""
    wanted = np.dtype(tf.as_dtype(dtype or "float32").as_numpy_dtype)
    return (array.dtype == np.float32 == wanted and array.flags.c_contiguous and array.flags.writeable
            and array.size > 0 and array.ctypes.data % 64 == 0)


def _initializers(name, seed, initial):
    if initial is None or name not in initial:
        return caffe_initializers(name, seed)
    holder = dict(zip(("weights", "biases"), initial.pop(name)))
    return _FromArray(holder, "weights"), _FromArray(holder, "biases")


def onednn_is_on():
    """Whether TensorFlow runs its oneDNN CPU kernels in this process (decided at its import).
    Only they run a grouped convolution as one op on a CPU: Eigen's fused convolution rejects
    groups and has no grouped gradients."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # a TensorFlow that moved it: keep the formulation that runs everywhere
        return False
    return bool(_pywrap_util_port.IsMklEnabled())


@dataclasses.dataclass(frozen=True)
class Kernels:
    """How the layers are computed: the network and its arithmetic are the same either way.

    `groups_as_one_op`: conv2, conv4 and conv5 as one op each, not one per group; only where
    TensorFlow runs its oneDNN CPU kernels (or on a GPU), so not for a graph that is exported.
    `winograd_training`: in training (training=True), conv3-conv5 run as Winograd convolutions
    when the compute dtype is float32: 1.4-1.7x faster per layer on an AVX2 CPU, after a compile
    per batch shape; on a GPU, cuDNN picks its own algorithms, so leave it off there.
    `fused_lrn_training`: in training, the LRN runs as two XLA kernels, forward and gradient
    (`LocalResponseNorm`), compiled once per batch shape; for CPUs.
    """
    groups_as_one_op: bool = False
    winograd_training: bool = False
    fused_lrn_training: bool = False


def build_alexnet(num_classes=arch.IMAGENET_CLASSES, seed=None, dropout=arch.DROPOUT_RATE, dtype=None, initial=None,
                  kernels=Kernels(), last="fc8"):
    """Build AlexNet with layers named conv1..conv5, fc6..fc8; outputs float32 logits.

    Input: a batch of 227x227 BGR, mean-subtracted float images (`alexft.preprocess_input`).
    Weights start with Caffe's random init (seeded by `seed`); `alexft.assign_weights` loads a
    file's. `initial`, a dict `{layer: (weights, biases)}` (checked, e.g. `WeightSet.params`),
    starts those layers from the arrays instead, without random init or a second copy: the
    dict is emptied as the variables are made.
    Dropout (on fc6 and fc7, rate `dropout`) is active only when called with training=True.
    `dtype`: a Keras dtype policy such as "mixed_float16" (variables stay float32).
    `kernels`: how the layers are computed (`Kernels`); the default runs on any device and exports.
    `last`: the layer it stops at (any of `arch.ENDS`); below fc8 its activations are the output, and
    `initial` needs no layers above it (a feature extractor's).
    `alexft.AlexNet` is the keras.applications-style way to get one with weights.
    """
    check_count(num_classes, "num_classes")
    inputs = keras.Input((arch.INPUT_SIZE, arch.INPUT_SIZE, 3), name="image")
    x = alexnet_layers(inputs, num_classes, last=last, seed=seed, dropout=dropout, dtype=dtype, initial=initial,
                       kernels=kernels)
    if last != "fc8":
        return keras.Model(inputs, x, name=f"alexnet_to_{last}")
    # Logits are float32 even under a mixed-precision policy, so softmax and loss stay exact.
    outputs = keras.layers.Activation("linear", dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name="alexnet")


def alexnet_layers(x, num_classes=arch.IMAGENET_CLASSES, last="fc8", seed=None, dropout=arch.DROPOUT_RATE, dtype=None,
                   initial=None, kernels=Kernels()):
    """Apply AlexNet's layers to the Keras tensor `x`, up to and including `last` (a layer of
    `arch.LAYERS` or a pooling/norm layer such as "pool5"); see `build_alexnet` for the rest."""
    for index, (name, spec) in enumerate(arch.LAYERS.items()):
        layer_seed = None if seed is None else seed + index
        kernel_init, bias_init = _initializers(name, layer_seed, initial)
        if isinstance(spec, arch.Conv):
            steps = [GroupedConv2D(spec, kernel_init, bias_init, kernels.groups_as_one_op, kernels.winograd_training,
                                   name=name, dtype=dtype)]
            if spec.lrn:
                steps.append(LocalResponseNorm(kernels.fused_lrn_training, name=f"norm{name[-1]}", dtype=dtype))
            if spec.pool:
                steps.append(CaffeMaxPooling2D(3, 2, name=f"pool{name[-1]}", dtype=dtype))
        else:
            # (h, w, c), as the file's fc6, whatever keras.config's image_data_format
            flatten = keras.layers.Flatten(data_format="channels_last", name="flatten", dtype=dtype)
            steps = [flatten] if name == "fc6" else []
            steps.append(keras.layers.Dense(spec.outputs or num_classes, activation="relu" if spec.relu else None,
                                            kernel_initializer=kernel_init, bias_initializer=bias_init, name=name,
                                            dtype=dtype))
            if spec.dropout:
                steps.append(keras.layers.Dropout(dropout, seed=layer_seed, name=f"drop{name[2:]}", dtype=dtype))
        for step in steps:
            x = step(x)
            if step.name == name and isinstance(kernel_init, _FromArray):
                # The arrays are in the variables now; the config records Caffe's init, which
                # serialises (a model saved, cloned or rebuilt from its config starts from it).
                step.kernel_initializer, step.bias_initializer = caffe_initializers(name, layer_seed)
            if step.name == last:
                return x
    if last not in (None, "fc8"):
        raise ValueError(f"AlexNet has no layer {last!r}")
    return x


def head(model, after):
    """A model from `after`'s output to the logits, sharing `model`'s layers (and weights).

    Used to train the top layers on cached features of the frozen part below them.
    """
    names = [layer.name for layer in model.layers]
    start = names.index(after) + 1
    inputs = keras.Input(model.get_layer(after).output.shape[1:], name=f"{after}_features")
    x = inputs
    for layer in model.layers[start:]:
        x = layer(x)
    return keras.Model(inputs, x, name=f"alexnet_above_{after}")


def truncated(model, layer):
    """A model sharing `model`'s layers that stops at `layer`'s output (e.g. "fc7", "pool5")."""
    names = [each.name for each in model.layers]
    if layer not in names:  # Keras' own error lists internal layers (image, flatten, drop6, logits)
        inner = next((each for each in model.layers if layer in {sub.name for sub in getattr(each, "layers", [])}), None)
        if inner is not None:  # an AlexNet inside the user's own model (keras.Model(x, AlexNet(...)(x)))
            # (named as a model to pass, not a call: extract_features and truncated both come here)
            raise ValueError(f"no layer {layer!r} in {model.name!r} itself: it is inside its {inner.name!r}; give "
                             f"that model instead: model.get_layer({inner.name!r})")
        known = [name for name in (*arch.ENDS, "prob") if name in names] or names  # prob: the softmax, alexft.AlexNet's
        raise ValueError(f"no layer {layer!r} in the model; choose one of {', '.join(known)}")
    return keras.Model(model.input, model.get_layer(layer).output, name=f"alexnet_to_{layer}")
