"""Batch-1 inference under different threading, alexft and ONNX Runtime alternated: why
alexft falls behind at batch 1 when the host steals CPU time (issue #6, target 1).

    python benchmarks/threads_batch1.py [--rounds 3] [--seconds 5]

Each configuration runs in its own process (thread pools are fixed at start-up), in turn,
`--rounds` times; printed are the median img/s and the host's steal % during the runs.
ONNX Runtime's pool threads busy-wait between parallel loops by default; turning that off
shows what waking a sleeping thread costs on this machine. TensorFlow has no setting to make
its pools spin longer (only `disable_thread_spinning`, which turns spinning off).
"""
import argparse
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from suite import ALEXFT_CASES, cpu_ticks, peers_python, run_json, steal_percent, write_weights  # noqa: E402

CONFIGS = [  # label, runtime, extra arguments, environment
    ("ONNX Runtime, default (busy-waiting pool)", "onnx", [], {}),
    ("ONNX Runtime, pool threads sleep when idle", "onnx", ["--no-spin"], {}),
    ("ONNX Runtime, 1 thread", "onnx", ["--threads", "1"], {}),
    ("alexft, default (TensorFlow's pools)", "alexft", [], {}),
    ("alexft, 1 intra-op thread", "alexft", [], {"TF_NUM_INTRAOP_THREADS": "1"}),
    ("alexft, 1 inter-op thread", "alexft", [], {"TF_NUM_INTEROP_THREADS": "1"}),
]


def measure(config, weights, seconds, peer):
    _, runtime, extra, env = config
    common = ["infer", "--weights", weights, "--batch", "1", "--seconds", seconds, *extra]
    if runtime == "onnx":
        return run_json([peer, HERE / "peers.py", *common, "--runtime", "onnx"])["img_per_s"]
    return run_json([sys.executable, ALEXFT_CASES, *common], env=env)["img_per_s"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    peer = peers_python()
    results = {config[0]: [] for config in CONFIGS}
    before = cpu_ticks()
    with tempfile.TemporaryDirectory() as folder:
        weights = write_weights(Path(folder))
        for _ in range(args.rounds):
            for config in CONFIGS:
                results[config[0]].append(measure(config, weights, str(args.seconds), peer))
    steal = steal_percent(before, cpu_ticks())
    print(f"batch 1, median img/s of {args.rounds} rounds; host steal during the runs: "
          f"{'unknown' if steal is None else f'{steal:.0f}%'}")
    for label, values in results.items():
        print(f"{label:<48} {statistics.median(values):7.1f}   ({', '.join(f'{v:.1f}' for v in values)})")


if __name__ == "__main__":
    main()
