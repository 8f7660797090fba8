"""Which formulation of AlexNet's grouped convolutions is fastest here?

Compares, on the full network with the same random weights, alexft's split -> conv2d ->
concat layer with Keras' `Conv2D(groups=2)`: inference at batch 1 and 64, and one training
step with every layer trainable. Prints medians and the ratio (alexft / Keras) per case.

    python benchmarks/grouped_conv.py [--repeats 5]
"""
import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# alexft before TensorFlow: importing it chooses TensorFlow's CPU kernels (alexft/__init__.py).
from alexft import architecture as arch  # noqa: E402
from alexft.model import build_alexnet  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def keras_grouped_alexnet():
    """The same network with Keras' own grouped Conv2D (the alternative formulation)."""
    inputs = keras.Input((227, 227, 3))
    x = inputs
    for name, spec in arch.LAYERS.items():
        if isinstance(spec, arch.Conv):
            x = keras.layers.Conv2D(spec.filters, spec.kernel, spec.stride, spec.padding, groups=spec.groups,
                                    activation="relu", name=name)(x)
            if spec.lrn:
                x = keras.layers.Lambda(lambda t: tf.nn.local_response_normalization(t, **arch.LRN))(x)
            if spec.pool:
                x = keras.layers.MaxPooling2D(3, 2)(x)
        else:
            if name == "fc6":
                x = keras.layers.Flatten()(x)
            x = keras.layers.Dense(spec.outputs or 1000, activation="relu" if spec.relu else None, name=name)(x)
            if spec.dropout:
                x = keras.layers.Dropout(0.5)(x)
    return keras.Model(inputs, x)


def copy_weights(source, target):
    for name in arch.LAYER_NAMES:
        target.get_layer(name).kernel.assign(source.get_layer(name).kernel)
        target.get_layer(name).bias.assign(source.get_layer(name).bias)


def timed(function, argument, repeats, steps):
    function(argument)  # trace and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            result = function(argument)
        np.asarray(result)
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def inference(model):
    return tf.function(lambda x: model(x, training=False))


def training_step(model):
    optimizer = keras.optimizers.SGD(0.001, momentum=0.9)
    labels = tf.zeros([64], tf.int32)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels[: tf.shape(x)[0]], logits))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    ours, theirs = build_alexnet(seed=0), keras_grouped_alexnet()
    copy_weights(ours, theirs)
    rng = np.random.default_rng(0)
    batch64 = tf.constant(rng.standard_normal((64, 227, 227, 3), dtype=np.float32) * 50)
    difference = np.abs(ours(batch64[:4]).numpy() - theirs(batch64[:4]).numpy()).max()
    print(f"max |logit difference| between the formulations: {difference:.2e}")
    cases = [
        ("inference batch 1", inference, batch64[:1], 20),
        ("inference batch 64", inference, batch64, 3),
        ("train all layers batch 32", training_step, batch64[:32], 2),
    ]
    results = {}
    for label, make, batch, steps in cases:
        row = {}
        for name, model in (("alexft split+conv2d", ours), ("keras Conv2D(groups=2)", theirs)):
            seconds = timed(make(model), batch, args.repeats, steps)
            row[name] = len(batch) / seconds
        ratio = row["alexft split+conv2d"] / row["keras Conv2D(groups=2)"]
        results[label] = dict(row, ratio=ratio)
        print(f"{label:28s} alexft {row['alexft split+conv2d']:7.1f} img/s   keras groups {row['keras Conv2D(groups=2)']:7.1f} img/s   ratio {ratio:5.2f}x")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
