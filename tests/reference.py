"""An independent numpy forward pass of bvlc_alexnet, written from Caffe's definition.

It shares no code with alexft: the layer table, the grouping, Caffe's LRN formula and its
ceil-mode pooling are spelled out here from deploy.prototxt and Caffe's layer docs, and it
computes in float64. Weights are in the bvlc_alexnet.npy layout: conv (k, k, in/group, out),
fc (in, out), fc6's inputs in (h, w, c) order.
"""
import math

import numpy as np

#          name     stride pad group lrn    pool
CONVS = [("conv1", 4, 0, 1, True, True),
         ("conv2", 1, 2, 2, True, True),
         ("conv3", 1, 1, 1, False, False),
         ("conv4", 1, 1, 2, False, False),
         ("conv5", 1, 1, 2, False, True)]


def convolution(x, weights, biases, stride, pad, groups):
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    size = weights.shape[0]
    windows = np.lib.stride_tricks.sliding_window_view(x, (size, size), axis=(1, 2))[:, ::stride, ::stride]
    in_per_group, out_per_group = x.shape[3] // groups, weights.shape[3] // groups
    outputs = []
    for g in range(groups):
        patch = windows[:, :, :, g * in_per_group:(g + 1) * in_per_group]  # (n, h, w, c, ky, kx)
        kernel = weights[..., g * out_per_group:(g + 1) * out_per_group]  # (ky, kx, c, f)
        outputs.append(np.tensordot(patch, kernel, axes=([3, 4, 5], [2, 0, 1])))
    return np.concatenate(outputs, axis=3) + biases


def caffe_lrn(x, local_size=5, alpha=1e-4, beta=0.75, k=1.0):
    """Caffe ACROSS_CHANNELS: x / (k + alpha/n * sum over n neighbouring channels of x^2)^beta."""
    half = local_size // 2
    squares = np.pad(x * x, ((0, 0), (0, 0), (0, 0), (half, half)))
    window_sum = sum(squares[..., i:i + x.shape[3]] for i in range(local_size))
    return x / (k + alpha / local_size * window_sum) ** beta


def numeric_input_gradient(function, x, upstream, step=1e-3):
    """d sum(function(x) * upstream) / dx by central differences, one element at a time (small
    float64 inputs only): the gradient from the forward's definition, no formula for it."""
    gradient = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        shifted = [x.copy(), x.copy()]
        shifted[0][index] += step
        shifted[1][index] -= step
        gradient[index] = np.sum((function(shifted[0]) - function(shifted[1])) * upstream) / (2 * step)
    return gradient


def caffe_max_pool(x, size=3, stride=2):
    """Caffe's pooling rounds the output size up and clips windows at the border (each side on
    its own: inputs need not be square)."""
    height, width = x.shape[1:3]
    out_h, out_w = (int(math.ceil((side - size) / stride)) + 1 for side in (height, width))
    result = np.empty((x.shape[0], out_h, out_w, x.shape[3]), x.dtype)
    for i in range(out_h):
        for j in range(out_w):
            rows = slice(i * stride, min(i * stride + size, height))
            cols = slice(j * stride, min(j * stride + size, width))
            result[:, i, j] = x[:, rows, cols].max(axis=(1, 2))
    return result


def forward(params, images, until="fc8"):
    """Logits (or the activation after `until`) for (n, 227, 227, 3) BGR mean-subtracted images."""
    x = np.asarray(images, np.float64)
    for name, stride, pad, groups, lrn, pool in CONVS:
        weights, biases = (np.asarray(a, np.float64) for a in params[name])
        x = np.maximum(convolution(x, weights, biases, stride, pad, groups), 0)
        if until == name:
            return x
        if lrn:
            x = caffe_lrn(x)
        if pool:
            x = caffe_max_pool(x)
    if until == "pool5":
        return x
    x = x.reshape(len(x), -1)  # (h, w, c) order, as the file's fc6 rows
    for name in ("fc6", "fc7", "fc8"):
        weights, biases = (np.asarray(a, np.float64) for a in params[name])
        x = x @ weights + biases
        if name != "fc8":
            x = np.maximum(x, 0)
        if until == name:
            return x
    return x


def softmax(logits):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)
