"""How long `alexft finetune` stays silent when stderr is not a terminal (issue #24: a line at
least every ~10 s), on a folder with many classes, and what Ctrl-C then leaves.

Builds a folder of `--classes` class folders with `--per-class` images each (hard links to a
dozen small JPEGs cut from the photos scikit-learn ships, so 10,000 classes cost seconds and no
disk), writes weights in bvlc_alexnet.npy's layout (`tests/fixtures.py`), starts
`alexft finetune DATA --output RUN` with stderr a pipe, timestamps every stderr line, sends
SIGINT after `--seconds`, and reports:
- the longest gap between stderr lines (from the start of the process), and where it was;
- the exit status (130 expected) and the time from SIGINT to exit;
- what the run folder holds afterwards (nothing, when stopped before epoch 1 ends).

    python benchmarks/quiet_gaps.py                     # 10,000 classes x 2 images, 90 s
    python benchmarks/quiet_gaps.py --classes 1000 --seconds 60 --json
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
ALEXFT = str(Path(sys.executable).parent / "alexft")


def make_folder(root, classes, per_class):
    from large_folder import make_folder as linked_images  # 12 small real JPEGs, hard-linked

    (root / "sources").mkdir()
    linked_images(root / "sources", 12)
    sources = sorted((root / "sources").glob("source_*.jpg"))
    data = root / "data"
    for index in range(classes):
        folder = data / f"class_{index:05d}"
        folder.mkdir(parents=True)
        for number in range(per_class):
            os.link(sources[(index + number) % len(sources)], folder / f"{number}.jpg")
    return data


def watch(command, seconds):
    """Run `command`, timestamp its stderr lines, SIGINT it after `seconds`."""
    started = time.monotonic()
    # As a user starts it: large_folder sets TF_CPP_MIN_LOG_LEVEL, which would show TensorFlow's start-up log.
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    lines = []

    def read():
        for line in process.stderr:
            lines.append((time.monotonic() - started, line.rstrip()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        process.wait(timeout=seconds)
        interrupted_at = None
    except subprocess.TimeoutExpired:
        interrupted_at = time.monotonic() - started
        process.send_signal(signal.SIGINT)
        process.wait(timeout=120)
    ended = time.monotonic() - started
    reader.join(timeout=10)
    return process.returncode, lines, interrupted_at, ended


def longest_gap(lines, until):
    times = [0.0] + [at for at, _ in lines] + [until]
    gaps = [(later - earlier, earlier, index) for index, (earlier, later) in enumerate(zip(times, times[1:]))]
    gap, start, index = max(gaps)
    before = lines[index - 1][1] if index > 0 else "(process start)"
    return gap, start, before


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=10_000)
    parser.add_argument("--per-class", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=90, help="SIGINT after this long")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from fixtures import random_params
    from py2pickle import write_python2_npy

    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        data = make_folder(root, args.classes, args.per_class)
        weights = root / "bvlc_alexnet.npy"
        write_python2_npy(weights, random_params(seed=0))
        run = root / "run"
        command = [ALEXFT, "finetune", str(data), "--output", str(run), "--weights", str(weights),
                   "--val-split", str(round(1 / args.per_class, 3))]
        status, lines, interrupted_at, ended = watch(command, args.seconds)
        until = interrupted_at if interrupted_at is not None else ended
        gap, gap_start, before = longest_gap([line for line in lines if line[0] <= until], until)
        result = dict(classes=args.classes, images=args.classes * args.per_class, status=status,
                      stderr_lines=len(lines), longest_gap_s=round(gap, 1), gap_started_s=round(gap_start, 1),
                      line_before_gap=before, sigint_at_s=interrupted_at and round(interrupted_at, 1),
                      exit_after_sigint_s=interrupted_at and round(ended - interrupted_at, 1),
                      run_folder_after=sorted(p.name for p in run.iterdir()) if run.exists() else None,
                      last_lines=[line for _, line in lines[-3:]])
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
        print("\nfirst lines:", file=sys.stderr)
        for at, line in lines[:12]:
            print(f"  {at:6.1f}s  {line[:150]}", file=sys.stderr)


if __name__ == "__main__":
    main()
