"""alexft's side of the benchmark suite, one measurement per command, JSON on stdout.

    python alexft_cases.py infer   --weights W.npz --batch 64 [--seconds 10] [--fused-lrn] [--precision bfloat16]
                                   [--runtime openvino]
    python alexft_cases.py train   --weights W.npz --batch 64 --layers all|fc8 [--precision bfloat16]
    python alexft_cases.py check   --weights W.npz --views IN.npy --output OUT.npy
    python alexft_cases.py tencrop --weights W.npz FOLDER [--images 100]
    python alexft_cases.py ceiling [--precision bfloat16]

`infer` times the Predictor's compiled softmax (what classify runs per batch; with `--fused-lrn`,
what it runs on the full batches of a run of 512 views or more; `--precision bfloat16`: what
`classify --precision bfloat16` runs, weights held in bfloat16; `--runtime openvino`: what
`classify --runtime openvino` runs). `train` times
the step `alexft finetune` runs without the feature cache (the kernels it picks on a CPU,
Winograd as `--convs` says): Caffe's SGD (momentum, L2 decay,
bias rate multiplier) on softmax cross entropy, dropout on; `--precision bfloat16` is what `finetune
--mixed-precision` runs on a CPU (Keras' mixed_bfloat16 policy, float32 variables).
`tencrop` times `predict_views` on the same images with the centre crop and with Caffe's
ten crops.
`ceiling` measures the machine's best matrix-product rate (TensorFlow's oneDNN on 4096-square
matrices, the kernels' best case) and divides it by AlexNet's multiply-adds per image, counted
from the model's layers: no engine can run the network faster than that with direct arithmetic.
It gives the same for a training step of all layers (forward, and the gradients to the weights
and to each layer's input but the image's).
"""
import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# alexft before TensorFlow: importing it chooses TensorFlow's CPU kernels (alexft/__init__.py).
from alexft import weights as weights_io  # noqa: E402
from alexft import winograd  # noqa: E402
from alexft.model import Kernels, build_alexnet  # noqa: E402
from alexft.predict import load_predictor, predict_views  # noqa: E402
from alexft.preprocess import find_images  # noqa: E402
from alexft.sgd import CaffeSGD, caffe_parameters  # noqa: E402
from alexft.train_network import training_kernels  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import images_per_second, random_views  # noqa: E402  (same timing and inputs as the peers)


def command_infer(args):
    predictor = load_predictor(args.weights, download=False, precision=args.precision, runtime=args.runtime)
    views = random_views(args.batch)
    run = lambda: predictor.probabilities(views, fused_lrn=args.fused_lrn)  # noqa: E731
    run()  # the fused LRN compiles on its first call, as once per classify run
    return {"img_per_s": images_per_second(run, args.batch, args.seconds)}


def training_step(model, layers, lr=0.001, momentum=0.9, decay=5e-4):
    """The update `Trainer` makes, Caffe's SGD with its per-layer rates and decays, on one device
    (fc8 counts as pretrained here, so there is no 10x rate for a fresh layer)."""
    names = ["fc8"] if layers == "fc8" else [layer.name for layer in model.layers if layer.weights]
    variables, multipliers, decays = caffe_parameters(model, names, weight_decay=decay)
    optimizer = CaffeSGD(lr, momentum, multipliers, decays)

    @tf.function
    def step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    return step


def command_train(args):
    weight_set = weights_io.load(args.weights)
    # By default as a long `alexft finetune` run builds it on this CPU (Winograd conv3-conv5 where faster).
    convs = args.convs
    if convs == "auto":
        convs = "winograd" if winograd.helps_on(winograd.cpu_features()) else "direct"
    kernels = Kernels() if args.plain_kernels else training_kernels(on_gpu=False, training_images=0)
    kernels = dataclasses.replace(kernels, winograd_training=convs == "winograd")
    model = build_alexnet(dtype=None if args.precision == "float32" else f"mixed_{args.precision}", kernels=kernels)
    weights_io.assign(model, weight_set)
    step = training_step(model, args.layers)
    views = tf.constant(random_views(args.batch))
    labels = tf.constant(np.random.default_rng(1).integers(0, 1000, args.batch).astype(np.int32))
    return {"img_per_s": images_per_second(lambda: float(step(views, labels)), args.batch, args.seconds),
            "convs": convs}


def multiply_adds_per_layer(model):
    """Each weighted layer's kernel size times its output positions, in order (grouped kernels hold
    only their group's inputs)."""
    counts = []
    for layer in model.layers:
        kernels = [weight for weight in layer.weights if len(weight.shape) > 1]
        if kernels:
            positions = np.prod(layer.output.shape[1:-1]) if len(layer.output.shape) == 4 else 1
            counts.append(int(positions) * int(np.prod(kernels[0].shape)))
    return counts


def multiply_adds_per_image(model):
    return sum(multiply_adds_per_layer(model))


def multiply_adds_per_training_image(model):
    """A training step of all layers: each layer's forward pass, its gradient to the weights (as
    many multiply-adds as the forward) and its gradient to the input (as many again), except the
    first layer's, whose input is the image."""
    counts = multiply_adds_per_layer(model)
    return 3 * sum(counts) - counts[0]


def command_ceiling(args):
    size = 4096
    dtype = tf.as_dtype(args.precision)
    a = tf.cast(tf.random.normal((size, size), seed=1), dtype)
    product = tf.function(lambda x: tf.matmul(x, x))
    product(a).numpy()
    best, deadline = float("inf"), time.perf_counter() + args.seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        product(a).numpy()
        best = min(best, time.perf_counter() - start)
    flops = 2 * size**3 / best
    model = build_alexnet()
    network, training = 2 * multiply_adds_per_image(model), 2 * multiply_adds_per_training_image(model)
    return {"gflop_per_s": flops / 1e9, "network_gflop_per_image": network / 1e9, "ceiling_img_per_s": flops / network,
            "training_ceiling_img_per_s": flops / training}


def command_check(args):
    predictor = load_predictor(args.weights, download=False)
    np.save(args.output, predictor.probabilities(np.load(args.views)))
    return {"written": str(args.output)}


def command_tencrop(args):
    predictor = load_predictor(args.weights, download=False)
    paths = find_images([args.folder])[: args.images]
    result = {}
    for label, ten_crop in (("centre", False), ("ten_crop", True)):
        # Both on the path of a long run (fused LRN), whatever the number of images here.
        for _ in predict_views(predictor, paths[:32], ten_crop=ten_crop, progress=False, fused_lrn=True):
            pass  # warm-up: traces, compiles and fills caches
        start = time.perf_counter()
        for _ in predict_views(predictor, paths, ten_crop=ten_crop, batch_size=32, progress=False, fused_lrn=True):
            pass
        result[f"{label}_img_per_s"] = len(paths) / (time.perf_counter() - start)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("infer", "train", "check", "tencrop", "ceiling"):
        command = sub.add_parser(name)
        command.add_argument("--weights", type=Path, required=name != "ceiling")
        command.add_argument("--batch", type=int, default=64)
        command.add_argument("--seconds", type=float, default=10)
        if name == "ceiling":
            command.add_argument("--precision", choices=["float32", "bfloat16"], default="float32")
        if name == "infer":
            command.add_argument("--fused-lrn", action="store_true",
                                 help="The path classify takes on full batches of a run of 512 views or more.")
            command.add_argument("--precision", choices=["float32", "bfloat16"], default="float32")
            command.add_argument("--runtime", choices=["tensorflow", "openvino"], default="tensorflow")
        if name == "train":
            command.add_argument("--layers", choices=["all", "fc8"], default="all")
            command.add_argument("--precision", choices=["float32", "bfloat16"], default="float32")
            command.add_argument("--convs", choices=["auto", "direct", "winograd"], default="auto",
                                 help="conv3-conv5 in training: as a long finetune run on this CPU (auto), "
                                      "oneDNN's direct convolutions, or Winograd (float32 only).")
            command.add_argument("--plain-kernels", action="store_true",
                                 help="Grouped layers split and TensorFlow's LRN op, as on a GPU, instead of "
                                      "the CPU's choices (one op per grouped layer, the LRN as XLA kernels).")
        if name == "check":
            command.add_argument("--views", type=Path, required=True)
            command.add_argument("--output", type=Path, required=True)
        if name == "tencrop":
            command.add_argument("folder", type=Path)
            command.add_argument("--images", type=int, default=100)
    args = parser.parse_args()
    print(json.dumps(globals()[f"command_{args.command}"](args)))


if __name__ == "__main__":
    main()
