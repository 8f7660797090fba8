"""The three passes of each AlexNet convolution at training batch size, one TensorFlow op
each: forward, backward to the input, backward to the weights (issue #6, target 3).

    python benchmarks/conv_passes.py [--batch 64] [--repeats 7] [--winograd]

Per layer and pass: median ms for the whole layer (one group timed alone, times the number
of groups) and the multiply-adds per second reached; these passes are most of a training
step. conv1's backward to the input is listed, but a step never computes it (nothing below
conv1 learns).

--winograd: instead, for conv3-conv5, forward and both backward passes together (one
gradient-tape call): oneDNN's direct convolution against `alexft.winograd.conv3x3`, what
training on a CPU runs; alternated, medians.
"""
import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# alexft before TensorFlow: importing it chooses TensorFlow's CPU kernels (alexft/__init__.py).
from alexft import architecture as arch  # noqa: E402
from alexft import winograd  # noqa: E402

import tensorflow as tf  # noqa: E402

INPUT_SIZES = {"conv1": 227, "conv2": 27, "conv3": 13, "conv4": 13, "conv5": 13}


def median_seconds(function, repeats):
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def layer_passes(spec, size, batch):
    """The three passes of one group as compiled functions, and their multiply-adds."""
    channels, filters = spec.in_channels // spec.groups, spec.filters // spec.groups
    x = tf.random.normal([batch, size, size, channels])
    w = tf.random.normal([spec.kernel, spec.kernel, channels, filters])
    strides, padding = [1, spec.stride, spec.stride, 1], spec.padding.upper()
    dy = tf.random.normal(tf.nn.conv2d(x, w, strides, padding).shape)
    passes = {
        "forward": lambda: tf.nn.conv2d(x, w, strides, padding),
        "to input": lambda: tf.raw_ops.Conv2DBackpropInput(
            input_sizes=x.shape, filter=w, out_backprop=dy, strides=strides, padding=padding),
        "to weights": lambda: tf.raw_ops.Conv2DBackpropFilter(
            input=x, filter_sizes=w.shape, out_backprop=dy, strides=strides, padding=padding),
    }
    macs = dy.shape[0] * dy.shape[1] * dy.shape[2] * filters * spec.kernel ** 2 * channels
    return {name: tf.function(function) for name, function in passes.items()}, macs


def direct_grouped(x, kernel, groups):
    pairs = zip(tf.split(x, groups, axis=-1), tf.split(kernel, groups, axis=-1))
    return tf.concat([tf.nn.conv2d(a, k, 1, "SAME") for a, k in pairs], axis=-1)


def forward_and_backward(convolve, x, kernel, grad):
    @tf.function
    def run():
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            loss = tf.reduce_sum(convolve(x, kernel) * grad)
        return tape.gradient(loss, [x, kernel])
    return lambda: [t.numpy() for t in run()]


def winograd_against_direct(batch, repeats):
    print(f"batch {batch}: forward + backward to input + backward to weights, ms (median of {repeats})")
    for name in ("conv3", "conv4", "conv5"):
        spec = arch.LAYERS[name]
        x = tf.random.normal([batch, 13, 13, spec.in_channels])
        kernel = tf.random.normal([3, 3, spec.in_channels // spec.groups, spec.filters]) * 0.05
        grad = tf.random.normal([batch, 13, 13, spec.filters])
        direct = forward_and_backward(lambda a, k: direct_grouped(a, k, spec.groups), x, kernel, grad)
        fast = forward_and_backward(lambda a, k: winograd.conv3x3(a, k, spec.groups), x, kernel, grad)
        times = {"direct": [], "winograd": []}
        for _ in range(2):  # alternate, so both see the same host
            times["direct"].append(median_seconds(direct, repeats))
            times["winograd"].append(median_seconds(fast, repeats))
        d, w = (1000 * statistics.median(t) for t in times.values())
        print(f"{name}  direct {d:6.1f} ms | winograd {w:6.1f} ms | {d / w:.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--winograd", action="store_true", help="conv3-conv5: direct against Winograd")
    args = parser.parse_args()
    if args.winograd:
        return winograd_against_direct(args.batch, args.repeats)
    totals = {}
    print(f"batch {args.batch}: ms per layer (one group x groups), G multiply-adds/s")
    for name, size in INPUT_SIZES.items():
        spec = arch.LAYERS[name]
        passes, macs = layer_passes(spec, size, args.batch)
        cells = []
        for label, function in passes.items():
            seconds = median_seconds(lambda: function().numpy(), args.repeats) * spec.groups
            if not (name == "conv1" and label == "to input"):
                totals[label] = totals.get(label, 0.0) + seconds
            cells.append(f"{label} {1000 * seconds:7.1f} ms {macs * spec.groups / seconds / 1e9:5.1f} G/s")
        print(f"{name}  " + " | ".join(cells))
    print("sum of what a step runs: " + ", ".join(f"{label} {1000 * s:.0f} ms" for label, s in totals.items())
          + f"; all {1000 * sum(totals.values()):.0f} ms")


if __name__ == "__main__":
    main()
