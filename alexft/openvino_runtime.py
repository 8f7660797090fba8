"""The network on OpenVINO's CPU plugin: `--runtime openvino`, where it is installed.

At batch 1 TensorFlow spends about 2 ms a call in its executor and reorders the weights on
every call; OpenVINO compiles the graph once, with the weights packed for its kernels, and runs
AlexNet 1.4x as fast there in float32, 1.6x in bfloat16 (Zen 5, docs/benchmarks.md). It imports
in 0.2 s and compiles in 0.2 s, so a call also starts without TensorFlow's seconds.

The graph is built here from the weight arrays with OpenVINO's own operations (no ONNX file,
no cache), from architecture.LAYERS as the TensorFlow model is. TensorFlow stays the
reference: in float32 the two agree to 1e-5 in probability (tests/test_openvino_runtime.py).
OpenVINO's CPU default precision is bfloat16 where the CPU has it: float32 is asked for
explicitly, bfloat16 only with `precision="bfloat16"`.
"""
import importlib.util
import logging
import os
import sys
from unittest import mock

import numpy as np

from .architecture import INPUT_SIZE, LAYERS, LRN, Conv
from .cpu_features import cpu_has_bfloat16
from .errors import AlexftError

log = logging.getLogger(__name__)

PRECISION_HINTS = {"float32": "f32", "bfloat16": "bf16"}
MAX_COMPILED = 4  # one compiled model per batch size met (a run's full and last batches)


class OpenVinoError(AlexftError):
    """OpenVINO cannot be used as asked."""


def openvino_installed():
    return importlib.util.find_spec("openvino") is not None


def import_openvino():
    """`import openvino` without its usage telemetry. OpenVINO's package sends an event to Google
    Analytics when it is imported (openvino.tools.ovc, opted in by default), from a child process
    that a quick exit or a Ctrl-C killed with a traceback of its own, and that waits up to 3 s
    on a network that drops packets. alexft asks nothing of the network here: the import runs as
    OpenVINO's telemetry sees a CI job, where it stays off for the process."""
    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    with mock.patch.dict(os.environ, CI="true"):  # (restored as it was, set or not)
        import openvino
    return openvino


def network(params, batch):
    """The softmax network as an openvino.Model for a static `batch` of NHWC float32 views.
    `params`: {layer: (weights, biases)} in bvlc_alexnet's layout (architecture.py)."""
    openvino = import_openvino()
    import openvino.opset13 as ops

    views = ops.parameter([batch, INPUT_SIZE, INPUT_SIZE, 3], np.float32, name="views")
    x = ops.transpose(views, _axes(0, 3, 1, 2))  # OpenVINO's convolutions take NCHW
    for name, layer in LAYERS.items():
        weights, biases = (np.asarray(array, np.float32) for array in params[name])
        if isinstance(layer, Conv):
            x = ops.relu(ops.add(_convolution(ops, x, weights, layer), _constant(ops, biases.reshape(1, -1, 1, 1))))
            if layer.lrn:  # OpenVINO's alpha is divided by the size, as Caffe's is (TensorFlow's is not)
                size = 2 * LRN["depth_radius"] + 1
                x = ops.lrn(x, _axes(1), alpha=LRN["alpha"] * size, beta=LRN["beta"], bias=LRN["bias"], size=size)
            if layer.pool:  # (floor and Caffe's ceil give the same sizes for 227x227 views: 27, 13, 6)
                x = ops.max_pool(x, strides=[2, 2], dilations=[1, 1], pads_begin=[0, 0], pads_end=[0, 0],
                                 kernel_shape=[3, 3]).output(0)
            continue
        if name == "fc6":  # fc6's rows are pool5 flattened in (height, width, channel) order
            x = ops.reshape(ops.transpose(x, _axes(0, 2, 3, 1)), _axes(batch, -1), special_zero=False)
        x = ops.add(ops.matmul(x, _constant(ops, weights), False, False), _constant(ops, biases))
        if layer.relu:
            x = ops.relu(x)
    probabilities = ops.softmax(x, 1)
    probabilities.output(0).get_tensor().set_names({"probabilities"})
    return openvino.Model([probabilities], [views], "alexnet")


def _convolution(ops, x, weights, layer):
    pad = [(layer.kernel - 1) // 2] * 2 if layer.padding == "same" else [0, 0]
    strides, dilations = [layer.stride] * 2, [1, 1]
    kernel = weights.transpose(3, 2, 0, 1)  # (h, w, in, out) -> (out, in, h, w)
    if layer.groups == 1:
        return ops.convolution(x, _constant(ops, kernel), strides, pad, pad, dilations)
    out, per_group, height, width = kernel.shape
    grouped = kernel.reshape(layer.groups, out // layer.groups, per_group, height, width)
    return ops.group_convolution(x, _constant(ops, grouped), strides, pad, pad, dilations)


def _constant(ops, array):
    return ops.constant(np.ascontiguousarray(array, np.float32))


def _axes(*values):
    import openvino.opset13 as ops

    return ops.constant(np.array(values, np.int64))


class OpenVinoPredictor:
    """`predict.Predictor`'s interface (`probabilities`, `class_names`, `preprocessing`) on
    OpenVINO. Compiled once per batch size met, in about 0.2 s each."""

    def __init__(self, params, class_names, preprocessing=None, precision="float32"):
        if not openvino_installed():
            raise OpenVinoError("OpenVINO is not installed: pip install openvino (or 'alexft[openvino]')")
        from .predict import check_precision

        check_precision(precision)
        if precision == "bfloat16" and cpu_has_bfloat16() is False:
            log.warning("this CPU has no bfloat16 instructions (AVX512_BF16 or AMX): OpenVINO computes in float32 here")
        openvino = import_openvino()

        self.params, self.class_names, self.preprocessing = params, list(class_names), preprocessing
        self.precision = precision
        self._core = openvino.Core()
        self._requests = {}

    def probabilities(self, views, fused_lrn=False):
        """(N, 227, 227, 3) float32 views -> (N, classes) softmax probabilities. `fused_lrn` is
        TensorFlow's choice and ignored here."""
        from .predict import check_views

        batch = check_views(views)
        if batch == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        request = self._request(batch)
        # Copied out: the request's output buffer is overwritten by its next call.
        return request.infer([np.ascontiguousarray(views, np.float32)])[0].copy()

    def _request(self, batch):
        if batch not in self._requests:
            if len(self._requests) >= MAX_COMPILED:
                self._requests.pop(next(iter(self._requests)))
            config = {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[self.precision]}
            compiled = self._core.compile_model(network(self.params, batch), "CPU", config)
            self._requests[batch] = compiled.create_infer_request()
        return self._requests[batch]
