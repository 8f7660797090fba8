"""How long loading the weights takes, per format: `weights.load` (read + every check) on the
legacy pickled `.npy`, on our converted `.npz` and on a Caffe `.caffemodel`, plus numpy's own
(unsafe) `np.load(allow_pickle=True)` of the pickle as a peer.

Writes generated weights in the canonical layout (233 MB each) to a scratch folder, reads
each file once to warm the page cache, then alternates the formats for `--repeats` rounds
and reports the medians and the ratios against the pickled `.npy`.

    python benchmarks/weights_load.py [--repeats 7] [--json results.json]
"""
import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from caffemodel import write_canonical_caffemodel  # noqa: E402
from fixtures import random_params  # noqa: E402
from py2pickle import write_python2_npy  # noqa: E402

from alexft import weights  # noqa: E402
from alexft.weights.tools import convert  # noqa: E402


def timed(function, path):
    start = time.perf_counter()
    function(path)
    return time.perf_counter() - start


def numpy_unsafe_load(path):
    return np.load(path, allow_pickle=True, encoding="latin1").item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        params = random_params(seed=0)
        legacy = write_python2_npy(scratch / "bvlc_alexnet.npy", params)
        converted = scratch / "bvlc_alexnet.npz"
        convert(legacy, converted)
        caffe = scratch / "bvlc_alexnet.caffemodel"
        write_canonical_caffemodel(caffe, params)
        cases = {
            "alexft .npy (pickle, safe unpickler)": (weights.load, legacy),
            "alexft .npz (converted)": (weights.load, converted),
            "alexft .caffemodel": (weights.load, caffe),
            "numpy np.load(allow_pickle=True) .npy": (numpy_unsafe_load, legacy),
        }
        times = {name: [] for name in cases}
        for function, path in cases.values():
            function(path)  # warm the page cache
        for _ in range(args.repeats):
            for name, (function, path) in cases.items():
                times[name].append(timed(function, path))
    baseline = statistics.median(times["alexft .npy (pickle, safe unpickler)"])
    rows = []
    for name, samples in times.items():
        median = statistics.median(samples)
        rows.append({"case": name, "median_ms": round(median * 1000, 1), "speedup_vs_pickled_npy": round(baseline / median, 2)})
    print(f"{'case':<42} {'median':>9} {'vs .npy':>8}")
    for row in rows:
        print(f"{row['case']:<42} {row['median_ms']:>7.1f}ms {row['speedup_vs_pickled_npy']:>7.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"repeats": args.repeats, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
