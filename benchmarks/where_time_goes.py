"""Where the time goes: per-layer time at batch 1, and what LRN, weight decay and dropout
cost in a training step with every layer trainable (the two targets of issue #6 that miss).

    python benchmarks/where_time_goes.py [--weights W.npz]   # generated weights by default
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

# alexft before TensorFlow: importing it chooses TensorFlow's CPU kernels (alexft/__init__.py).
from alexft import weights as weights_io  # noqa: E402
from alexft.model import LocalResponseNorm, build_alexnet, truncated  # noqa: E402
from alexft.predict import load_predictor  # noqa: E402
from alexft_cases import random_views, training_step  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from fixtures import random_params  # noqa: E402


def median_ms(function, calls):
    function()
    function()
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        np.asarray(function())
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def batch_one(weights):
    model = load_predictor(weights, download=False).model
    view = tf.constant(random_views(1))
    previous = 0.0
    print("batch 1, cumulative time up to each layer (median of 60 calls):")
    for layer in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
        part = truncated(model, layer)
        run = tf.function(lambda x, part=part: part(x, training=False))
        elapsed = median_ms(lambda: run(view), 60)
        print(f"  {layer:<6} {elapsed:6.2f} ms  (+{elapsed - previous:5.2f})")
        previous = elapsed
    kernel = model.get_layer("fc6").kernel
    matmul = tf.function(lambda x: tf.matmul(x, kernel))
    row = tf.constant(random_views(1).reshape(1, -1)[:, :9216])
    elapsed = median_ms(lambda: matmul(row), 60)
    print(f"  fc6 matmul alone {elapsed:.2f} ms: {kernel.numpy().nbytes / elapsed / 1e6:.1f} GB/s of weights")


def training_variants(weights):
    views = tf.constant(random_views(64))
    labels = tf.constant(np.zeros(64, np.int32))
    original_lrn = LocalResponseNorm.call
    print("training step, all layers, batch 64 (median of 4 steps):")
    for variant in ("as shipped", "without LRN", "without weight decay", "without dropout"):
        LocalResponseNorm.call = (lambda self, x: x) if variant == "without LRN" else original_lrn
        model = build_alexnet(dropout=0.0 if variant == "without dropout" else 0.5)
        weights_io.assign(model, weights_io.load(weights))
        step = training_step(model, "all", decay=0.0 if variant == "without weight decay" else 5e-4)
        elapsed = median_ms(lambda: step(views, labels), 4)
        print(f"  {variant:<22} {64000 / elapsed:5.1f} img/s")
    LocalResponseNorm.call = original_lrn


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        weights = args.weights
        if weights is None:
            params = {name: tuple(pair) for name, pair in random_params(seed=0).items()}
            weights = weights_io.save(weights_io.WeightSet(params), Path(scratch) / "weights.npz")
        batch_one(weights)
        training_variants(weights)


if __name__ == "__main__":
    main()
