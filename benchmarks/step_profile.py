"""Where the wall time of a float32 training step goes (issue #6, target 3), from TensorFlow's
own profiler.

    python benchmarks/step_profile.py [--batch 64] [--steps 4]

Profiles the step the suite times (`alexft_cases.training_step`, every layer trainable) on
generated weights. TensorFlow runs independent ops at the same time, so summing op durations
counts the same wall time twice; here each moment of the step is split evenly among the ops
running then, which makes the parts add up to the step's wall time.
"""
import argparse
import collections
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
from alexft.model import build_alexnet  # noqa: E402
from alexft_cases import random_views, training_step  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

from fixtures import random_params  # noqa: E402

# Op type (with oneDNN's prefixes removed) -> the part of the step it belongs to.
PARTS = {
    "Conv2D": "convolutions, forward",
    "FusedConv2D": "convolutions, forward",
    "Conv2DBackpropInput": "convolutions, backward to the input",
    "Conv2DBackpropFilter": "convolutions, backward to the weights",
    "Conv2DBackpropFilterWithBias": "convolutions, backward to the weights",
    "MatMul": "fc6-fc8 matmuls (forward and backward)",
    "FusedMatMul": "fc6-fc8 matmuls (forward and backward)",
    "LRN": "LRN, forward",
    "LRNGrad": "LRN, gradient",
    "MaxPool": "pooling, forward and backward",
    "MaxPoolGrad": "pooling, forward and backward",
    "Split": "group split, concat and their gradients' slices",
    "ConcatV2": "group split, concat and their gradients' slices",
    "Slice": "group split, concat and their gradients' slices",
}
UPDATE = "SGD update (decay and momentum)"
REST = "the rest (bias, ReLU, dropout, loss, ...)"


def op_events(xspace):
    """(start ps, end ps, op name, op type) of every op the executor ran."""
    events = []
    for plane in xspace.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue  # the executor's threads; the others hold oneDNN's and Eigen's subtasks
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if "::" in name or ":" not in name or event.duration_ps == 0:
                    continue
                start = line.timestamp_ns * 1000 + event.offset_ps
                events.append((start, start + event.duration_ps, *name.rsplit(":", 1)))
    return events


def part_of(op_name, op_type, optimizer_name):
    if op_name.split("/")[0].startswith(optimizer_name):  # Keras may add a suffix: caffe_sgd_1
        return UPDATE
    return PARTS.get(op_type.replace("_MklNative", "").replace("_Mkl", ""), REST)


def wall_shares(events, optimizer_name):
    """Wall picoseconds per part, each moment split evenly among the ops running then; and
    the time no op ran."""
    edges = sorted([(start, 1, i) for i, (start, _, _, _) in enumerate(events)]
                   + [(end, -1, i) for i, (_, end, _, _) in enumerate(events)])
    shares, running, idle, previous = collections.Counter(), set(), 0, edges[0][0]
    for moment, change, index in edges:
        for other in running:
            name, kind = events[other][2:]
            shares[part_of(name, kind, optimizer_name)] += (moment - previous) / len(running)
        if not running:
            idle += moment - previous
        previous = moment
        (running.add if change == 1 else running.discard)(index)
    return shares, idle


def profile(step, inputs, steps):
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(steps):
            float(step(*inputs))
        tf.profiler.experimental.stop()
        xspace = xplane_pb2.XSpace()
        xspace.ParseFromString(next(Path(logdir).rglob("*.xplane.pb")).read_bytes())
    return xspace


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    model = build_alexnet()
    weights_io.assign(model, weights_io.WeightSet({n: tuple(p) for n, p in random_params(seed=0).items()}))
    step = training_step(model, "all")
    inputs = (tf.constant(random_views(args.batch)), tf.constant(np.zeros(args.batch, np.int32)))
    walls = []
    for _ in range(args.steps + 2):
        start = time.perf_counter()
        float(step(*inputs))
        walls.append(time.perf_counter() - start)
    events = op_events(profile(step, inputs, args.steps))
    shares, idle = wall_shares(events, "caffe_sgd")
    span = (max(end for _, end, _, _ in events) - min(start for start, _, _, _ in events)) / args.steps
    print(f"batch {args.batch}: step {1000 * statistics.median(walls[2:]):.0f} ms unprofiled, "
          f"{span / 1e9:.0f} ms profiled ({args.steps} steps); wall ms per step:")
    for part, picoseconds in shares.most_common():
        print(f"  {picoseconds / 1e9 / args.steps:7.1f} ms  {100 * picoseconds / args.steps / span:4.1f}%  {part}")
    print(f"  {idle / 1e9 / args.steps:7.1f} ms  {100 * idle / args.steps / span:4.1f}%  no op running")


if __name__ == "__main__":
    main()
