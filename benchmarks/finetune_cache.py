"""What the feature cache and the feature store buy.

Builds a folder of scikit-learn digits (real images) and generated weights in the canonical
layout, then fine-tunes fc8 with the same options four times: cached without the feature
store, cached with an empty store (the first run), again with the store filled (the second
run), and with --no-cache. Prints the median epoch time of the cached and full-forward runs
and their ratio, the one-off cost of building the cache, what the empty store adds to it, and
how much sooner the second run ends.

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
        runs = (("no store", True, "off"), ("first", True, str(scratch / "store")), ("second", True, str(scratch / "store")),
                ("full", False, "off"))
        for label, cache, store in runs:
            os.environ["ALEXFT_FEATURE_STORE"] = store
            started = time.perf_counter()
            summary = finetune(data, weights=weights, epochs=args.epochs, batch_size=32, val_split=0, cache=cache,
                               lr=0.001, output=scratch / label, progress=False, log=lambda message: None)
            total = time.perf_counter() - started
            epochs = epoch_seconds(scratch / label)
            results[label] = dict(median_epoch_s=statistics.median(epochs[1:] or epochs), total_s=total,
                                  images=summary["train_images"])
        overhead = results["no store"]["total_s"] - sum(epoch_seconds(scratch / "no store"))
        ratio = results["full"]["median_epoch_s"] / results["no store"]["median_epoch_s"]
        print(f"images per epoch: {results['full']['images']}")
        print(f"full-forward epoch: {results['full']['median_epoch_s']:.2f} s   cached epoch: "
              f"{results['no store']['median_epoch_s']:.3f} s   ratio {ratio:.0f}x")
        print(f"cached run total {results['no store']['total_s']:.1f} s (cache build and set-up {overhead:.1f} s); "
              f"full run total {results['full']['total_s']:.1f} s")
        first, second = results["first"]["total_s"], results["second"]["total_s"]
        print(f"feature store: first run {first:.1f} s ({first - results['no store']['total_s']:+.1f} s against no "
              f"store), second run {second:.1f} s: {first / second:.1f}x sooner")
        print(json.dumps(dict(results, ratio=ratio, second_run_speedup=first / second)))

if __name__ == "__main__":
    main()
