"""How long each `alexft` command takes to report a usage mistake (issue #24: under 1 s).

Each case is a fresh `alexft ...` process, as a user types it, run `--rounds` times in turn
(median reported); `python -c "import tensorflow"` is timed the same way in the same run as the
peer: what a mistake used to cost when it was found after TensorFlow's start-up. Also reports
the exit status each case gave (the contract: 2 usage, 1 unusable input).

    python benchmarks/usage_errors.py            # Markdown table on stdout
    python benchmarks/usage_errors.py --rounds 9 --json
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ALEXFT = str(Path(sys.executable).parent / "alexft")


def cases(folder):
    one_class = folder / "one" / "only"
    one_class.mkdir(parents=True)
    (one_class / "a.png").write_bytes(b"not read")
    existing = folder / "run"
    existing.mkdir()
    (existing / "config.json").write_text("{}")
    (folder / "two" / "a").mkdir(parents=True)
    (folder / "two" / "b").mkdir()
    for name in ("a", "b"):
        (folder / "two" / name / "x.png").write_bytes(b"not read")
    weights = folder / "w.npz"
    weights.write_bytes(b"not read either")
    features = folder / "fc7.npz"  # a whole .npz, but features, not weights: found by reading it
    np.savez(features, features=np.zeros((2, 4096), np.float32))
    return {
        "classify nope.jpg": ["classify", "nope.jpg"],
        "classify --top-k 0": ["classify", "x.jpg", "--top-k", "0"],
        "features nope.jpg": ["features", "nope.jpg", "--output", "f.npz"],
        "features --layer pool9": ["features", str(folder), "--output", "f.npz", "--layer", "pool9"],
        "finetune (one class)": ["finetune", str(folder / "one"), "--weights", str(weights)],
        "finetune --output (in use)": ["finetune", str(folder / "two"), "--output", str(existing), "--weights", str(weights)],
        "finetune --lr fast": ["finetune", str(folder / "two"), "--lr", "fast"],
        "evaluate (no data)": ["evaluate"],
        "export --format onnx": ["export", "out", "--format", "onnx"],
        "classify --weights (features .npz)": ["classify", str(folder / "two" / "a" / "x.png"), "--runtime",
                                               "tensorflow", "--weights", str(features)],
        "export --weights (features .npz)": ["export", "out", "--weights", str(features)],
        "weights info nope.npz": ["weights", "info", "nope.npz"],
        "weights convert nope.npy": ["weights", "convert", "nope.npy", "out.npz"],
        "clasify (typo)": ["clasify", "x.jpg"],
    }


def timed(command, cwd):
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True)
    return time.perf_counter() - started, done.returncode


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        commands = {name: [ALEXFT, *arguments] for name, arguments in cases(folder).items()}
        commands["peer: import tensorflow"] = [sys.executable, "-c", "import tensorflow"]
        seconds = {name: [] for name in commands}
        status = {}
        for _ in range(args.rounds):  # rounds alternate the cases, so drift hits all alike
            for name, command in commands.items():
                elapsed, status[name] = timed(command, folder)
                seconds[name].append(elapsed)
    peer = statistics.median(seconds["peer: import tensorflow"])
    rows = [dict(case=name, median_s=round(statistics.median(values), 3), exit=status[name],
                 ratio_to_import_tensorflow=round(statistics.median(values) / peer, 3))
            for name, values in seconds.items()]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"| case | median of {args.rounds} (s) | exit | × `import tensorflow` |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(f"| `{row['case']}` | {row['median_s']:.2f} | {row['exit']} | {row['ratio_to_import_tensorflow']:.2f} |")


if __name__ == "__main__":
    main()
