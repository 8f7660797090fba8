"""What the feature cache buys: an fc8 epoch on cached fc7 features vs a full-forward epoch.

Builds a folder of scikit-learn digits (real images) and generated weights in the canonical
layout, then fine-tunes fc8 twice with the same options: with the cache (default) and with
--no-cache. Prints the median epoch time of each, the one-off cost of building the cache,
and the ratio.

    python benchmarks/finetune_cache.py [--per-class 20] [--epochs 3]
"""
import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fixtures import random_params, write_digits_folder  # noqa: E402
from py2pickle import write_python2_npy  # noqa: E402

from alexft.train import finetune  # noqa: E402


def epoch_seconds(run):
    with open(run / "history.csv") as handle:
        return [float(row["seconds"]) for row in csv.DictReader(handle)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        data = write_digits_folder(scratch / "digits", per_class=args.per_class)
        weights = write_python2_npy(scratch / "bvlc_alexnet.npy", random_params(0))
        results = {}
        for label, cache in (("cached", True), ("full", False)):
            started = time.perf_counter()
            summary = finetune(data, weights=weights, epochs=args.epochs, batch_size=32, val_split=0, cache=cache,
                               output=scratch / label, progress=False, log=lambda message: None)
            total = time.perf_counter() - started
            epochs = epoch_seconds(scratch / label)
            results[label] = dict(median_epoch_s=statistics.median(epochs[1:] or epochs), total_s=total,
                                  images=summary["train_images"])
        overhead = results["cached"]["total_s"] - sum(epoch_seconds(scratch / "cached"))
        ratio = results["full"]["median_epoch_s"] / results["cached"]["median_epoch_s"]
        print(f"images per epoch: {results['full']['images']}")
        print(f"full-forward epoch: {results['full']['median_epoch_s']:.2f} s   cached epoch: "
              f"{results['cached']['median_epoch_s']:.3f} s   ratio {ratio:.0f}x")
        print(f"cached run total {results['cached']['total_s']:.1f} s (cache build and set-up {overhead:.1f} s); "
              f"full run total {results['full']['total_s']:.1f} s")
        print(json.dumps(dict(results, ratio=ratio)))


if __name__ == "__main__":
    main()
