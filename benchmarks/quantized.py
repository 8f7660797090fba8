"""Reduced precision side by side: the TF Lite exports (float32, float16, int8) on LiteRT, and
`--precision bfloat16` on TensorFlow (issue #26).

    python benchmarks/quantized.py [--weights W] [--images DIR] [--calibration DIR] [--seconds 8]

Exports each TF Lite file with `alexft export`, then on LiteRT: file size, images/s at batch 1
and 32 (alternating the three files, median of 3 rounds), and agreement with the float32 file
on the images (top-1 equal, top-5 the same set, largest probability difference). The same for
TensorFlow's bfloat16 predictor against its float32 one. Without
`--weights`, generated weights; without image folders, crops of the photos scikit-image and
scikit-learn ship (calibration and evaluation images disjoint). Markdown on stdout.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from suite import ALEXFT, write_jpegs  # noqa: E402

from alexft.demo import generated_weights  # noqa: E402
from alexft.preprocess import find_images, image_views  # noqa: E402

MODES = ("float32", "float16", "int8")


def export(weights, mode, folder, calibration):
    path = folder / f"{mode}.tflite"
    extra = [] if mode == "float32" else ["--quantize", mode] + (["--calibration", calibration] if mode == "int8" else [])
    start = time.perf_counter()
    subprocess.run([ALEXFT, "export", "--weights", weights, "--format", "tflite", *map(str, extra), path], check=True,
                   stdout=subprocess.DEVNULL)
    return path, time.perf_counter() - start


def litert_predict(path):
    """The TF Lite file's `views -> probabilities`, on LiteRT."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path), num_threads=len(os.sched_getaffinity(0))).get_signature_runner()
    return lambda views: np.asarray(runner(views=views)["probabilities"])


def probabilities(predict, views, batch=32):
    return np.concatenate([predict(views[i:i + batch]) for i in range(0, len(views), batch)])


def images_per_second(predict, views, batch, seconds):
    x = views[:batch]
    predict(x)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        predict(x)
        done += batch
    return done / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--images", type=Path, help="Evaluation images (default: 200 generated crops).")
    parser.add_argument("--calibration", type=Path, help="Calibration images (default: 200 other crops).")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        weights = args.weights or generated_weights(scratch / "generated.npz")
        images = args.images or write_jpegs(scratch / "images", 200, seed=11)
        calibration = args.calibration or write_jpegs(scratch / "calibration", 200, seed=12)
        files = {mode: export(weights, mode, scratch, calibration) for mode in MODES}
        sizes = {mode: path.stat().st_size for mode, (path, _) in files.items()}
        views = np.concatenate([image_views(path) for path in find_images(images)])
        runs = {mode: litert_predict(path) for mode, (path, _) in files.items()}
        outputs = {mode: probabilities(run, views) for mode, run in runs.items()}
        speed = {(mode, batch): [] for mode in MODES for batch in (1, 32)}
        for _ in range(args.rounds):
            for batch in (1, 32):
                for mode in MODES:
                    speed[mode, batch].append(images_per_second(runs[mode], views, batch, args.seconds))
        del runs
        tensorflow = tensorflow_rows(weights, views, args)
    print(f"weights: {args.weights or 'generated (random: agreement figures say little about the real weights)'}; "
          f"{len(views)} images; {len(os.sched_getaffinity(0))} threads\n")
    print("| runtime | precision | size | export | b1 img/s | b32 img/s | top-1 = float32 | top-5 set = float32 | max |p - p32| |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for mode in MODES:
        row(f"LiteRT | {mode} | {sizes[mode] / 2**20:.0f} MB | {files[mode][1]:.0f} s", speed[mode, 1], speed[mode, 32],
            outputs[mode], outputs["float32"])
    for precision, (b1, b32, got) in tensorflow.items():
        row(f"TensorFlow | {precision} | | ", b1, b32, got, tensorflow["float32"][2])


def tensorflow_rows(weights, views, args):
    """{precision: (b1 img/s rounds, b32 img/s rounds, probabilities)} of TensorFlow's predictors."""
    from alexft.predict import load_predictor

    predictors = {precision: load_predictor(weights, download=False, precision=precision)
                  for precision in ("float32", "bfloat16")}
    results = {precision: ([], [], predictor.probabilities(views)) for precision, predictor in predictors.items()}
    for _ in range(args.rounds):
        for batch, column in ((1, 0), (32, 1)):
            for precision, predictor in predictors.items():
                results[precision][column].append(images_per_second(predictor.probabilities, views, batch, args.seconds))
    return results


def row(head, b1, b32, got, reference):
    top1 = (got.argmax(1) == reference.argmax(1)).mean()
    same5 = np.mean([set(a) == set(b) for a, b in zip(np.argsort(-got, axis=1)[:, :5], np.argsort(-reference, axis=1)[:, :5])])
    print(f"| {head} | {statistics.median(b1):.1f} | {statistics.median(b32):.1f} | {top1:.1%} | {same5:.1%} | "
          f"{np.abs(got - reference).max():.2e} |")


if __name__ == "__main__":
    main()
