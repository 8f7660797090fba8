"""Per-layer time at batch 1: alexft (oneDNN's own primitive timings) beside ONNX Runtime
(its node profiler), on the same generated weights. The profile behind target 1 of issue #6.

    python benchmarks/profile_batch1.py [--calls 40]

alexft runs with ONEDNN_VERBOSE=1, which prints every oneDNN primitive's execution time;
time TensorFlow spends outside oneDNN (its own LRN arithmetic, the executor, copies) shows
as "outside the table". ONNX Runtime runs with `enable_profiling`. Both run in their own
process, one after the other, and each figure is the median over the calls.
"""
import argparse
import collections
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

LAYERS = ("conv1", "norm1", "pool1", "conv2", "norm2", "pool2", "conv3", "conv4", "conv5", "pool5",
          "fc6", "fc7", "fc8", "weight reorders", "layout and softmax")

# oneDNN primitive descriptions -> layer (shapes from bvlc_alexnet's deploy.prototxt).
# A grouped layer run as one op shows its whole channel counts (conv2: ic96oc256), split it shows one
# group's (ic48oc128).
ONEDNN_LAYERS = [
    (r"convolution.*_ic3oc96", "conv1"), (r"convolution.*_ic(48oc128|96oc256)_", "conv2"),
    (r"convolution.*_ic256oc384", "conv3"), (r"convolution.*_ic(192oc192|384oc384)_", "conv4"),
    (r"convolution.*_ic(192oc128|384oc256)_", "conv5"),
    (r"reorder.*x(5x5|3x3|11x11),", "weight reorders"),  # a conv kernel into oneDNN's blocked layout
    (r"gemm_api.*x96:96x96", "norm1"), (r"gemm_api.*x256:256x", "norm2"),  # TF's LRN: a banded channel matmul
    (r"pooling.*ic96_ih55", "pool1"), (r"pooling.*ic256_ih27", "pool2"), (r"pooling.*ic256_ih13", "pool5"),
    (r"inner_product.*ic9216", "fc6"), (r"inner_product.*ic4096oc4096", "fc7"), (r"inner_product.*ic4096oc", "fc8"),
    (r"(softmax|reorder)", "layout and softmax"),
]


def alexft_child(weights, calls):
    """Run in a child process with ONEDNN_VERBOSE=1: one marker line before each timed call."""
    import numpy as np

    from alexft.predict import load_predictor
    from peers import random_views

    predictor = load_predictor(weights, download=False)
    views = random_views(1)
    for _ in range(3):
        predictor.probabilities(views)
    walls = []
    for _ in range(calls):
        print("CALL", flush=True)
        start = time.perf_counter()
        np.asarray(predictor.probabilities(views))
        walls.append(time.perf_counter() - start)
    print("CALL", flush=True)
    print(json.dumps({"wall_ms": 1000 * statistics.median(walls)}), flush=True)


def alexft_profile(weights, calls):
    env = dict(os.environ, ONEDNN_VERBOSE="1", TF_CPP_MIN_LOG_LEVEL="2")
    output = subprocess.run([sys.executable, __file__, "--child", "--weights", weights, "--calls", str(calls)],
                            env=env, capture_output=True, text=True, check=True).stdout
    per_call = [collections.Counter() for _ in range(calls)]
    index = -1
    for line in output.splitlines():
        if line == "CALL":
            index += 1
        elif line.startswith("onednn_verbose") and ",exec," in line and 0 <= index < calls:
            fields = line.split(",")
            layer = next((name for pattern, name in ONEDNN_LAYERS if re.search(pattern, line)), "other")
            per_call[index][layer] += float(fields[-1])
    wall = json.loads(output.strip().splitlines()[-1])["wall_ms"]
    return {layer: statistics.median(call[layer] for call in per_call) for layer in LAYERS}, wall


ORT_CHILD = r"""
import json, statistics, sys, time
sys.path.insert(0, sys.argv[1])
import onnxruntime, peers
prefix, calls = sys.argv[3], int(sys.argv[4])
class Profiled(onnxruntime.SessionOptions):
    def __init__(self):
        super().__init__()
        self.enable_profiling, self.profile_file_prefix = True, prefix
onnxruntime.SessionOptions = Profiled
run = peers.onnx_session(peers.load_params(sys.argv[2]))
views = peers.random_views(1)
for _ in range(3):
    run(views)
walls = []
for _ in range(calls):
    start = time.perf_counter(); run(views); walls.append(time.perf_counter() - start)
print(json.dumps({"wall_ms": 1000 * statistics.median(walls)}))
"""


def ort_layer(node, order):
    """ONNX Runtime's fused node names -> layer: convs keep their names; LRN and Gemm by order."""
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5"):
        if node.startswith(name):
            return f"pool{name[-1]}" if "pool" in node else name
    if node.startswith("LRN"):
        return f"norm{order['LRN']}"
    return None


def ort_profile(peer_python, weights, calls, scratch):
    prefix = str(scratch / "ort")
    result = subprocess.run([peer_python, "-c", ORT_CHILD, str(HERE), str(weights), prefix, str(calls)],
                            capture_output=True, text=True, check=True)
    wall = json.loads(result.stdout.strip().splitlines()[-1])["wall_ms"]
    events = json.loads(Path(next(scratch.glob("ort*.json"))).read_text())
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    runs = collections.defaultdict(list)  # node -> durations, in run order
    first_seen = []
    for event in nodes:
        name = event["name"][: -len("_kernel_time")]
        if name not in runs:
            first_seen.append((name, event["args"].get("op_name", "")))
        runs[name].append(event["dur"] / 1000)
    table, order = collections.Counter(), collections.Counter()
    fc_names = iter(("fc6", "fc7", "fc8"))
    for name, op in first_seen:
        median = statistics.median(runs[name][-calls:])
        if op == "LRN":
            order["LRN"] += 1
        layer = ort_layer(name, order)
        if layer is None and op in ("Gemm", "FusedGemm", "MatMul"):
            layer = next(fc_names)
        table[layer or "layout and softmax"] += median
    return {layer: table[layer] for layer in LAYERS}, wall


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--weights", type=Path, help="Default: generated weights in the canonical layout.")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, str(HERE))
        return alexft_child(args.weights, args.calls)
    from suite import peers_python, write_weights

    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        weights = args.weights or write_weights(scratch)
        ours, our_wall = alexft_profile(weights, args.calls)
        theirs, their_wall = ort_profile(peers_python(), weights, args.calls, scratch)
    print(f"batch 1, median ms per call over {args.calls} calls")
    print(f"{'layer':<20} {'alexft (oneDNN)':>16} {'ONNX Runtime':>14}")
    for layer in LAYERS:
        print(f"{layer:<20} {ours[layer]:16.2f} {theirs[layer]:14.2f}")
    convs = [f"conv{i}" for i in range(1, 6)]
    for label, names in (("convolutions", convs), ("LRN", ["norm1", "norm2"]), ("fc6-fc8", ["fc6", "fc7", "fc8"])):
        print(f"{label:<20} {sum(ours[n] for n in names):16.2f} {sum(theirs[n] for n in names):14.2f}")
    print(f"{'in the table':<20} {sum(ours.values()):16.2f} {sum(theirs.values()):14.2f}")
    print(f"{'outside the table':<20} {our_wall - sum(ours.values()):16.2f} {their_wall - sum(theirs.values()):14.2f}")
    print(f"{'wall, profiled':<20} {our_wall:16.2f} {their_wall:14.2f}")


if __name__ == "__main__":
    main()
