"""The peers' side of the benchmark suite: the same AlexNet in ONNX Runtime, OpenVINO and PyTorch.

Runs in the peers' own virtual environment (see suite.py), never imports alexft, and reads
the weights from the same `.npz` alexft uses (`conv1/weights`, ... in bvlc_alexnet's layout).
Each command prints one JSON object on stdout.

    python peers.py infer  --runtime onnx|openvino|torch --weights W.npz --batch 64 [--seconds 10] [--threads N] [--no-spin]
                           [--precision float32|default]     # OpenVINO's inference precision
    python peers.py train  --runtime torch --weights W.npz --batch 64 --layers all|fc8 [--precision bfloat16]
    python peers.py check  --runtime onnx|openvino|torch --weights W.npz --views IN.npy --output OUT.npy
    python peers.py classify --weights W.npz FOLDER    # ONNX Runtime behind a plain decode loop
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

MEAN_BGR = np.array([104.00698793, 116.66876762, 122.67891434], dtype=np.float32)
CONVS = {  # name: (stride, padding, groups, lrn, pool), from bvlc_alexnet's deploy.prototxt
    "conv1": (4, 0, 1, True, True),
    "conv2": (1, 2, 2, True, True),
    "conv3": (1, 1, 1, False, False),
    "conv4": (1, 1, 2, False, False),
    "conv5": (1, 1, 2, False, True),
}
FCS = ("fc6", "fc7", "fc8")


def load_params(path):
    with np.load(path, allow_pickle=False) as archive:
        return {name: (archive[f"{name}/weights"], archive[f"{name}/biases"]) for name in (*CONVS, *FCS)}


def nchw_layout(params):
    """bvlc_alexnet's (h, w, in, out) / (in, out) layout -> the (out, in, h, w) / (out, in) both peers use.

    fc6's rows are in pool5's (h, w, c) order; NCHW flattening needs (c, h, w).
    """
    converted = {}
    for name, (weights, biases) in params.items():
        if name in CONVS:
            weights = weights.transpose(3, 2, 0, 1)
        elif name == "fc6":
            weights = weights.reshape(6, 6, 256, -1).transpose(3, 2, 0, 1).reshape(-1, 9216)
        else:
            weights = weights.T
        converted[name] = (np.ascontiguousarray(weights), biases)
    return converted


# --- ONNX Runtime --------------------------------------------------------------------------


def onnx_model(params):
    """The network as an ONNX ModelProto (NHWC float32 views in, softmax probabilities out)."""
    from onnx import TensorProto, helper, numpy_helper

    params = nchw_layout(params)
    nodes, initializers = [], []
    x = "views"
    nodes.append(helper.make_node("Transpose", [x], ["nchw"], perm=[0, 3, 1, 2]))  # NHWC in, like alexft
    x = "nchw"
    for name, (stride, pad, groups, lrn, pool) in CONVS.items():
        weights, biases = params[name]
        initializers += [numpy_helper.from_array(weights, f"{name}_w"), numpy_helper.from_array(biases, f"{name}_b")]
        nodes.append(helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [name], strides=[stride] * 2,
                                      pads=[pad] * 4, group=groups, kernel_shape=list(weights.shape[2:])))
        nodes.append(helper.make_node("Relu", [name], [f"{name}_relu"]))
        x = f"{name}_relu"
        if lrn:  # ONNX's LRN divides alpha by size, as Caffe's does
            nodes.append(helper.make_node("LRN", [x], [f"{name}_lrn"], size=5, alpha=1e-4, beta=0.75, bias=1.0))
            x = f"{name}_lrn"
        if pool:
            nodes.append(helper.make_node("MaxPool", [x], [f"{name}_pool"], kernel_shape=[3, 3], strides=[2, 2]))
            x = f"{name}_pool"
    nodes.append(helper.make_node("Flatten", [x], ["flat"], axis=1))
    x = "flat"
    for name in FCS:
        weights, biases = params[name]
        initializers += [numpy_helper.from_array(weights, f"{name}_w"), numpy_helper.from_array(biases, f"{name}_b")]
        nodes.append(helper.make_node("Gemm", [x, f"{name}_w", f"{name}_b"], [name], transB=1))
        x = name
        if name != "fc8":
            nodes.append(helper.make_node("Relu", [x], [f"{name}_relu"]))
            x = f"{name}_relu"
    nodes.append(helper.make_node("Softmax", [x], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes, "alexnet", [helper.make_tensor_value_info("views", TensorProto.FLOAT, [None, 227, 227, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 1000])], initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def onnx_session(params, threads=None, spin=True):
    import onnxruntime

    model = onnx_model(params)
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    if not spin:  # idle pool threads sleep instead of busy-waiting for the next parallel loop
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda views: session.run(["probabilities"], {"views": views})[0]


def openvino_model(params, batch, precision="float32"):
    """OpenVINO's CPU plugin on the same ONNX graph, reshaped to a static batch as its users do
    for a fixed batch size. `precision`: "float32", or "default" (its own choice: bfloat16 on
    CPUs with AMX or AVX512-BF16, float32 elsewhere)."""
    import os
    import tempfile

    os.environ["CI"] = "true"  # its import would send a usage event to Google Analytics, as alexft's does not
    import openvino

    core = openvino.Core()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "alexnet.onnx"
        path.write_bytes(onnx_model(params).SerializeToString())
        model = core.read_model(str(path))
        model.reshape([batch, 227, 227, 3])
        config = {"INFERENCE_PRECISION_HINT": "f32"} if precision == "float32" else {}
        compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    print(f"openvino {openvino.__version__}: inference precision "
          f"{compiled.get_property('INFERENCE_PRECISION_HINT')}", file=sys.stderr)
    return lambda views: request.infer([views])[0].copy()


# --- PyTorch -------------------------------------------------------------------------------


def torch_model(params):
    import torch
    from torch import nn

    params = nchw_layout(params)
    layers = []
    in_channels = 3
    for name, (stride, pad, groups, lrn, pool) in CONVS.items():
        weights, biases = params[name]
        conv = nn.Conv2d(in_channels, weights.shape[0], weights.shape[2], stride, pad, groups=groups)
        conv.weight.data = torch.from_numpy(weights.copy())
        conv.bias.data = torch.from_numpy(biases.copy())
        layers += [conv, nn.ReLU(inplace=True)]
        if lrn:  # torch's LocalResponseNorm divides alpha by size, as Caffe's does
            layers.append(nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0))
        if pool:
            layers.append(nn.MaxPool2d(3, 2))
        in_channels = weights.shape[0]
    layers.append(nn.Flatten())
    for name in FCS:
        weights, biases = params[name]
        linear = nn.Linear(weights.shape[1], weights.shape[0])
        linear.weight.data = torch.from_numpy(weights.copy())
        linear.bias.data = torch.from_numpy(biases.copy())
        layers.append(linear)
        if name != "fc8":
            layers += [nn.ReLU(inplace=True), nn.Dropout(0.5)]
    return nn.Sequential(*layers).to(memory_format=torch.channels_last)


def torch_infer(params):
    import torch

    model = torch_model(params).eval()

    def run(views):
        with torch.inference_mode():
            batch = torch.from_numpy(views).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
            return torch.softmax(model(batch), dim=1).numpy()

    return run


def torch_train_step(params, layers, precision="float32"):
    """SGD with momentum and weight decay; `precision` "bfloat16": forward and loss under
    CPU autocast (PyTorch's mixed precision), backward and update as usual."""
    import contextlib

    import torch

    model = torch_model(params).train()
    trainable = [m for m in model if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    if layers == "fc8":
        for module in trainable[:-1]:
            module.requires_grad_(False)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(parameters, lr=0.001, momentum=0.9, weight_decay=5e-4)
    loss_function = torch.nn.CrossEntropyLoss()
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bfloat16" else contextlib.nullcontext

    def step(views, labels):
        batch = torch.from_numpy(views).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = loss_function(model(batch), torch.from_numpy(labels))
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


# --- measurements --------------------------------------------------------------------------


def images_per_second(function, batch, seconds):
    """Median images/s over repeated calls, after two warm-up calls, for about `seconds`."""
    function()
    function()
    samples, spent = [], 0.0
    while spent < seconds or len(samples) < 3:
        start = time.perf_counter()
        function()
        elapsed = time.perf_counter() - start
        samples.append(batch / elapsed)
        spent += elapsed
    return statistics.median(samples)


def random_views(batch, seed=0):
    return (np.random.default_rng(seed).standard_normal((batch, 227, 227, 3), dtype=np.float32) * 50)


def command_infer(args):
    params = load_params(args.weights)
    if args.runtime == "onnx":
        run = onnx_session(params, args.threads, not args.no_spin)
    elif args.runtime == "openvino":
        run = openvino_model(params, args.batch, args.precision)
    else:
        run = torch_infer(params)
    views = random_views(args.batch)
    return {"img_per_s": images_per_second(lambda: run(views), args.batch, args.seconds)}


def command_train(args):
    step = torch_train_step(load_params(args.weights), args.layers, args.precision)
    views = random_views(args.batch)
    labels = np.random.default_rng(1).integers(0, 1000, args.batch)
    return {"img_per_s": images_per_second(lambda: step(views, labels), args.batch, args.seconds)}


def command_check(args):
    params, views = load_params(args.weights), np.load(args.views)
    if args.runtime == "openvino":
        run = openvino_model(params, len(views), args.precision)
    else:
        run = (onnx_session if args.runtime == "onnx" else torch_infer)(params)
    np.save(args.output, run(views))
    return {"written": str(args.output)}


def command_classify(args):
    """A plain pipeline: decode, resize, subtract the mean, centre crop, batch, ONNX Runtime."""
    import cv2

    run = onnx_session(load_params(args.weights))
    paths = sorted(p for p in Path(args.folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    batch, results = [], 0
    for index, path in enumerate(paths):
        image = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
        image = cv2.resize(image, (256, 256), interpolation=cv2.INTER_LINEAR).astype(np.float32) - MEAN_BGR
        batch.append(image[14:241, 14:241])
        if len(batch) == args.batch or index == len(paths) - 1:
            probabilities = run(np.stack(batch))
            for row in probabilities:
                top = np.argsort(-row)[:5]
                sys.stdout.write(json.dumps({"top": top.tolist()}) + "\n")
                results += 1
            batch = []
    return {"classified": results}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("infer", "train", "check", "classify"):
        command = sub.add_parser(name)
        command.add_argument("--runtime", choices=["onnx", "torch", "openvino"], default="onnx")
        command.add_argument("--weights", type=Path, required=True)
        command.add_argument("--batch", type=int, default=64)
        command.add_argument("--seconds", type=float, default=10)
        if name == "infer":
            command.add_argument("--threads", type=int, help="ONNX Runtime's intra-op threads (default: its own choice).")
            command.add_argument("--no-spin", action="store_true", help="ONNX Runtime's pool threads sleep when idle.")
        if name == "train":
            command.add_argument("--layers", choices=["all", "fc8"], default="all")
            command.add_argument("--precision", choices=["float32", "bfloat16"], default="float32")
        if name in ("infer", "check"):
            command.add_argument("--precision", choices=["float32", "default"], default="float32",
                                 help="OpenVINO's inference precision: float32, or its default for this CPU.")
        if name == "check":
            command.add_argument("--views", type=Path, required=True)
            command.add_argument("--output", type=Path, required=True)
        if name == "classify":
            command.add_argument("folder", type=Path)
    args = parser.parse_args()
    result = globals()[f"command_{args.command}"](args)
    if args.command == "classify":
        sys.stderr.write(json.dumps(result) + "\n")
    else:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
