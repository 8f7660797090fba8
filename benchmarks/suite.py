"""alexft against ONNX Runtime and PyTorch, side by side in one run: the targets of issue #6.

    python benchmarks/suite.py [--rounds 3] [--seconds 8] [--json benchmarks/results.json] [--only NAME,...]

Installs the peers once into their own virtual environment (`benchmarks/.peers/`, pinned
versions below), writes generated weights in the canonical layout and 2000 real-size JPEGs
(made from the photos scikit-image and scikit-learn ship) to a scratch folder, then runs
every case as separate processes, alternating alexft and its peer for `--rounds` rounds.
Reported: the median of the rounds, and the ratio alexft / peer against its target. Run it
on an otherwise idle machine; ratios are what to trust, absolute figures drift.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from fixtures import photo_paths, random_params  # noqa: E402
from py2pickle import write_python2_npy  # noqa: E402

PEERS = ["torch==2.13.0", "onnxruntime==1.31.1", "onnx==1.23.2", "openvino==2026.4.1", "numpy",
         "opencv-python-headless==5.0.0.93"]
PEERS_VENV = HERE / ".peers"
ALEXFT = shutil.which("alexft", path=str(Path(sys.executable).parent)) or "alexft"
ALEXFT_CASES = HERE / "alexft_cases.py"
# What the alexft executable does before TensorFlow starts (alexft/cli/__init__.py: run).
NO_SKLEARN = "import sys; sys.modules.setdefault('sklearn', None); "


def peers_python():
    """The peers' interpreter, installing them first if the pinned set changed."""
    stamp = PEERS_VENV / "requirements.txt"
    python = PEERS_VENV / "bin" / "python"
    if not (python.exists() and stamp.exists() and stamp.read_text() == "\n".join(PEERS)):
        print(f"installing the peers into {PEERS_VENV}: {' '.join(PEERS)}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", "--clear", PEERS_VENV], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", *PEERS], check=True)
        stamp.write_text("\n".join(PEERS))
    return str(python)


def write_weights(folder, params=None):
    """Generated weights (seed 0 unless `params` given) in the canonical layout, as alexft's
    converted `.npz`."""
    from alexft import weights as weights_io

    params = {name: tuple(pair) for name, pair in (params or random_params(seed=0)).items()}
    return weights_io.save(weights_io.WeightSet(params), folder / "bvlc_alexnet.npz")


def write_jpegs(folder, count, seed=0):
    """Real-size photos (about 500x375, like ImageNet's): random crops, flips and JPEG qualities."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = [cv2.imread(str(path), cv2.IMREAD_COLOR) for path in photo_paths().values()]
    sizes = [(500, 375), (375, 500), (500, 333), (640, 480)]
    for index in range(count):
        image = photos[index % len(photos)]
        height, width = image.shape[:2]
        scale = rng.uniform(0.6, 1.0)
        h, w = int(height * scale), int(width * scale)
        top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
        crop = image[top : top + h, left : left + w]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = cv2.resize(crop, sizes[rng.integers(len(sizes))], interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"{index:05d}.jpg"), crop, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(80, 96))])
    return folder


def run_json(command, env=None):
    """The last stdout line of a child as JSON; `env`: variables added to this process's."""
    result = subprocess.run(list(map(str, command)), capture_output=True, text=True, env={**os.environ, **(env or {})})
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# A child's peak resident memory (ru_maxrss) includes the memory of the process it was forked
# from, up to its exec: measured directly from this (large) process, every child would report
# at least this process's size (the cold start's "1020 MiB" was the suite's own). So each
# command starts from a small Python launcher that forks it, times it and reads its rusage.
LAUNCHER = """
import json, os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(json.dumps([time.perf_counter() - start, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)]), file=sys.stderr)
"""


def wall_and_peak(command, env=None):
    """(seconds, peak resident MiB) of a command run as a child process; `env`: variables added."""
    process = subprocess.run([sys.executable, "-c", LAUNCHER, *map(str, command)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    seconds, peak, status = json.loads(process.stderr.strip().splitlines()[-1])
    if status != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} exited with {status}: {process.stderr[-2000:]}")
    return seconds, peak


def cpu_ticks():
    """(stolen, total) CPU ticks so far from /proc/stat, or None off Linux. A virtual machine's
    host takes "steal" time from it; a case measured under heavy steal is not comparable."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(value) for value in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return fields[7] if len(fields) > 7 else 0, sum(fields[:8])


def steal_percent(before, after):
    if before is None or after is None or after[1] == before[1]:
        return None
    return 100 * (after[0] - before[0]) / (after[1] - before[1])


class Suite:
    def __init__(self, scratch, rounds, seconds):
        self.scratch, self.rounds, self.seconds = scratch, rounds, seconds
        self.results = []
        self.ceilings = {}  # precision -> the ceiling's rounds, measured once per run
        self.steal = []  # steal % of each measurement since the last record()
        self.peer = peers_python()
        from alexft.cpu_features import cpu_has_bfloat16  # not alexft.devices: TensorFlow here would inflate children's peak RSS

        self.cpu_has_bfloat16 = cpu_has_bfloat16() is not False
        self._write_weights()
        self.images_1000 = write_jpegs(scratch / "images_1000", 1000)
        self.images_2000 = scratch / "images_2000"
        shutil.copytree(self.images_1000, self.images_2000)
        self._add_images(self.images_2000, 1000)

    def _write_weights(self):
        params = random_params(seed=0)
        self.weights = write_weights(self.scratch, params)
        self.legacy = write_python2_npy(self.scratch / "bvlc_alexnet.npy", params)

    def _add_images(self, folder, count):
        extra = write_jpegs(self.scratch / "extra", count, seed=1)
        for path in extra.iterdir():
            path.rename(folder / f"x{path.name}")

    def alexft(self, *args):
        return run_json([sys.executable, ALEXFT_CASES, *args, "--weights", self.weights])

    def peers(self, *args):
        return run_json([self.peer, HERE / "peers.py", *args, "--weights", self.weights])

    def record(self, name, ours, theirs, peer_name, target, unit="img/s", higher_is_better=True):
        ours_median, theirs_median = statistics.median(ours), statistics.median(theirs)
        steal = [value for value in self.steal if value is not None]
        self.steal = []
        ratio = ours_median / theirs_median if higher_is_better else theirs_median / ours_median
        row = {"case": name, "alexft": round(ours_median, 2), "peer": peer_name, "peer_value": round(theirs_median, 2),
               "unit": unit, "ratio": round(ratio, 3), "target": target or None, "met": ratio >= target if target else None,
               "alexft_rounds": [round(v, 2) for v in ours], "peer_rounds": [round(v, 2) for v in theirs],
               "steal_percent": [round(v, 1) for v in steal]}
        self.results.append(row)
        print(f"{name:<44} alexft {ours_median:9.2f} {unit:<6} {peer_name:<28} {theirs_median:9.2f}   "
              f"ratio {ratio:5.2f}x  " + (f"target {target}x  {'met' if row['met'] else 'MISSED'}" if target else "context")
              + (f"  (steal up to {max(steal):.0f}%: the host took CPU time; rerun)" if steal and max(steal) > 5 else ""),
              flush=True)

    def alternate(self, ours, theirs):
        """Run the two measurements `rounds` times, alternating; return both lists."""
        a, b = [], []
        for _ in range(self.rounds):
            for measure, values in ((ours, a), (theirs, b)):
                before = cpu_ticks()
                values.append(measure())
                self.steal.append(steal_percent(before, cpu_ticks()))
        return a, b

    # --- the cases ---------------------------------------------------------------------------

    def check_peers_agree(self):
        views = self.scratch / "check_views.npy"
        np.save(views, np.random.default_rng(5).standard_normal((4, 227, 227, 3), dtype=np.float32) * 50)
        self.alexft("check", "--views", views, "--output", self.scratch / "alexft.npy")
        reference = np.load(self.scratch / "alexft.npy")
        for runtime in ("onnx", "openvino", "torch"):
            self.peers("check", "--runtime", runtime, "--views", views, "--output", self.scratch / f"{runtime}.npy")
            difference = float(np.abs(np.load(self.scratch / f"{runtime}.npy") - reference).max())
            print(f"same network check: max |p(alexft) - p({runtime})| = {difference:.2e}", flush=True)
            if difference > 1e-4:
                raise RuntimeError(f"{runtime} computes a different network (difference {difference})")

    def inference(self):
        # Targets on the path a long classify run takes per full batch (fused LRN); the plain
        # path (runs under 512 views) as context.
        for batch, target in ((64, 1.3), (1, 1.0)):
            for prefix, flags, row_target in (("1. ", ["--fused-lrn"], target), ("   (context, plain LRN) ", [], 0.0)):
                seconds = str(self.seconds)
                ours, theirs = self.alternate(
                    lambda: self.alexft("infer", "--batch", batch, "--seconds", seconds, *flags)["img_per_s"],
                    lambda: self.peers("infer", "--runtime", "onnx", "--batch", batch, "--seconds", seconds)["img_per_s"],
                )
                self.record(f"{prefix}model-only inference, batch {batch}", ours, theirs, "ONNX Runtime", row_target)
        ours, theirs = self.alternate(
            lambda: self.alexft("infer", "--batch", 64, "--seconds", str(self.seconds), "--fused-lrn")["img_per_s"],
            lambda: self.peers("infer", "--runtime", "torch", "--batch", 64, "--seconds", str(self.seconds))["img_per_s"],
        )
        self.record("   (context) inference, batch 64", ours, theirs, "PyTorch (channels-last)", 0.0)

    def openvino(self):
        """Against OpenVINO (issue #26): float32 to float32, and its default precision (bfloat16 on
        CPUs with AMX or AVX512-BF16, float32 elsewhere) as context."""
        seconds = str(self.seconds)
        # OpenVINO's default is bfloat16 where the CPU has it: there alexft's bfloat16 is its match
        # (target 1.0x at both batches), elsewhere its default is float32 and the row is context.
        ours_default = "bfloat16" if self.cpu_has_bfloat16 else "float32"
        for batch, target in ((1, 1.0), (64, 1.3)):
            for ours_precision, theirs_precision, prefix, row_target in (
                ("float32", "float32", "1b. ", target),
                (ours_default, "default", "1c. " if self.cpu_has_bfloat16 else "   (context) ",
                 1.0 if self.cpu_has_bfloat16 else 0.0),
            ):
                ours, theirs = self.alternate(
                    lambda: self.alexft("infer", "--batch", batch, "--seconds", seconds, "--fused-lrn",
                                        "--precision", ours_precision)["img_per_s"],
                    lambda: self.peers("infer", "--runtime", "openvino", "--precision", theirs_precision, "--batch", batch,
                                       "--seconds", seconds)["img_per_s"],
                )
                self.record(f"{prefix}inference {ours_precision}, batch {batch}", ours, theirs,
                            f"OpenVINO {theirs_precision}", row_target)
                if batch == 64 and row_target:
                    self.against_ceiling(ours_precision, theirs, row_target)
                # `--runtime openvino`: the same engine inside alexft, so context: what alexft's
                # graph and its Python call cost against OpenVINO's own use of its ONNX graph.
                ours, theirs = self.alternate(
                    lambda: self.alexft("infer", "--batch", batch, "--seconds", seconds, "--runtime", "openvino",
                                        "--precision", ours_precision)["img_per_s"],
                    lambda: self.peers("infer", "--runtime", "openvino", "--precision", theirs_precision, "--batch", batch,
                                       "--seconds", seconds)["img_per_s"],
                )
                self.record(f"   (context, --runtime openvino) {ours_precision}, batch {batch}", ours, theirs,
                            f"OpenVINO {theirs_precision}", 0.0)

    def ceiling(self, precision):
        """The machine's arithmetic ceiling in `precision` (`alexft_cases.py ceiling`), measured
        `rounds` times once per run: inference and training share it."""
        if precision not in self.ceilings:
            self.ceilings[precision] = [self.alexft("ceiling", "--precision", precision, "--seconds", str(self.seconds))
                                        for _ in range(self.rounds)]
        return self.ceilings[precision]

    def against_ceiling(self, precision, peer_rounds, target, peer_name="OpenVINO", work="inference", ours_rounds=()):
        """How close the peer (and alexft, when given) runs to the machine's arithmetic ceiling for
        `work` in `precision`, and how close alexft would have to run to meet `target` (above 100%:
        no engine computing AlexNet as written can)."""
        key = "ceiling_img_per_s" if work == "inference" else "training_ceiling_img_per_s"
        rates = [measured[key] for measured in self.ceiling(precision)]
        ceiling = max(rates)  # each is a best case; the best of them is the nearest to the true ceiling
        peer, needed = statistics.median(peer_rounds) / ceiling, target * statistics.median(peer_rounds) / ceiling
        row = {"case": f"ceiling, {work}, {precision}", "ceiling_img_per_s": round(ceiling, 1),
               "ceiling_rounds": [round(rate, 1) for rate in rates], "peer_share": round(peer, 3),
               "target_needs_share": round(needed, 3)}
        ours = f"alexft runs at {statistics.median(ours_rounds) / ceiling:.0%}, " if ours_rounds else ""
        if ours_rounds:
            row["alexft_share"] = round(statistics.median(ours_rounds) / ceiling, 3)
        self.results.append(row)
        print(f"{f'   (ceiling) {work}, {precision} matrix products':<44} at most {ceiling:.0f} img/s: {ours}"
              f"{peer_name} at {peer:.0%}, {target}x {peer_name} would need {needed:.0%}", flush=True)

    def classify_pipeline(self):
        def marginal(command):
            first, _ = wall_and_peak([*command, self.images_1000])
            second, _ = wall_and_peak([*command, self.images_2000])
            return 1000 / (second - first)

        ours, theirs = self.alternate(
            lambda: marginal([ALEXFT, "classify", "--json", "--no-progress", "--batch-size", "64", "--weights", self.weights]),
            lambda: marginal([self.peer, HERE / "peers.py", "classify", "--weights", self.weights]),
        )
        self.record("2. classify 1000 JPEGs, marginal", ours, theirs, "ONNX Runtime + decode loop", 1.3)

    def training(self):
        ours, theirs = self.alternate(
            lambda: self.alexft("train", "--layers", "all", "--batch", 64, "--seconds", str(self.seconds))["img_per_s"],
            lambda: self.peers("train", "--runtime", "torch", "--layers", "all", "--batch", 64, "--seconds", str(self.seconds))["img_per_s"],
        )
        self.record("3. train all layers, batch 64", ours, theirs, "PyTorch (channels-last)", 3.0)
        self.against_ceiling("float32", theirs, 3.0, "PyTorch", "training", ours)
        if self.cpu_has_bfloat16:  # --mixed-precision on a CPU; PyTorch's own mixed precision as the peer
            ours, theirs = self.alternate(
                lambda: self.alexft("train", "--layers", "all", "--batch", 64, "--seconds", str(self.seconds),
                                    "--precision", "bfloat16")["img_per_s"],
                lambda: self.peers("train", "--runtime", "torch", "--layers", "all", "--batch", 64, "--seconds",
                                   str(self.seconds), "--precision", "bfloat16")["img_per_s"],
            )
            # Issue #26: bfloat16 training >= 4x PyTorch's autocast, on CPUs with bfloat16 instructions.
            self.record("3. train all layers, bfloat16 mixed", ours, theirs, "PyTorch, autocast bfloat16", 4.0)
            self.against_ceiling("bfloat16", theirs, 4.0, "PyTorch", "training", ours)
        result = run_json([sys.executable, HERE / "finetune_cache.py", "--per-class", "20", "--epochs", "3"])
        self.record("3. fc8 epoch on the feature cache", [result["no store"]["median_epoch_s"]],
                    [result["full"]["median_epoch_s"]], "alexft full-forward epoch", 25.0, unit="s",
                    higher_is_better=False)

    def ten_crop(self):
        ours = [self.alexft("tencrop", self.images_1000, "--images", "96") for _ in range(self.rounds)]
        tens = [r["ten_crop_img_per_s"] for r in ours]
        centres = [r["centre_img_per_s"] / 10 for r in ours]
        self.record("4. ten-crop img/s vs centre img/s / 10", tens, centres, "alexft centre crop / 10", 0.9)

    def cold_start(self):
        one = next(self.images_1000.iterdir())
        cache = {"ALEXFT_CACHE": str(self.scratch / "cache")}
        files = {"npz": self.weights, "pickled npy": self.legacy}
        # The first short call answers on TensorFlow, then builds the LiteRT copy: once per file.
        first = {name: wall_and_peak([ALEXFT, "classify", "--weights", path, one], cache)[0] for name, path in files.items()}
        tensorflow, peaks, imports, plain_imports, litert = [], [], [], [], {name: [] for name in files}
        for _ in range(self.rounds):
            seconds, peak = wall_and_peak([ALEXFT, "classify", "--runtime", "tensorflow", "--weights", self.weights, one], cache)
            tensorflow.append(seconds)
            peaks.append(peak)
            # The peer starts TensorFlow as the command does, without scikit-learn (which Keras
            # imports when installed, as it is here for the tests); a plain import for context.
            imports.append(wall_and_peak([sys.executable, "-c", NO_SKLEARN + "import tensorflow"])[0])
            plain_imports.append(wall_and_peak([sys.executable, "-c", "import tensorflow"])[0])
            for name, path in files.items():
                litert[name].append(wall_and_peak([ALEXFT, "classify", "--weights", path, one], cache))
        extra = statistics.median([s - i for s, i in zip(tensorflow, imports)])
        self.results.append({"case": "5. cold start on TensorFlow: classify one.jpg - import tensorflow", "alexft": round(extra, 2),
                             "unit": "s", "target": "<= 1.0 s", "met": extra <= 1.0,
                             "classify_s": tensorflow, "import_tensorflow_s": imports,
                             "import_tensorflow_with_sklearn_s": plain_imports})
        print(f"{'5. cold start on TF, extra over import':<44} {extra:.2f} s (classify {statistics.median(tensorflow):.2f} s, "
              f"import {statistics.median(imports):.2f} s; with scikit-learn {statistics.median(plain_imports):.2f} s)  "
              f"target <= 1.0 s  {'met' if extra <= 1.0 else 'MISSED'}", flush=True)
        peak = statistics.median(peaks)
        self.results.append({"case": "5. cold start on TF, peak memory", "alexft": round(peak), "unit": "MiB", "target": "<= 1229 MiB",
                             "met": peak <= 1229})
        print(f"{'5. cold start on TF, peak memory':<44} {peak:.0f} MiB  target <= 1229 MiB  {'met' if peak <= 1229 else 'MISSED'}", flush=True)
        for name, runs in litert.items():
            wall, peak = statistics.median(run[0] for run in runs), statistics.median(run[1] for run in runs)
            self.results.append({"case": f"5. cold start, classify one.jpg (default: LiteRT copy), {name}", "alexft": round(wall, 2),
                                 "unit": "s", "target": "<= 2.0 s", "met": wall <= 2.0, "peak_mib": round(peak),
                                 "first_call_with_build_s": round(first[name], 1), "import_tensorflow_s": imports})
            print(f"{'5. cold start (LiteRT), ' + name:<44} {wall:.2f} s, peak {peak:.0f} MiB (first call, with the one-off "
                  f"build: {first[name]:.1f} s)  target <= 2.0 s  {'met' if wall <= 2.0 else 'MISSED'}", flush=True)

    def weights_load(self):
        subprocess.run([sys.executable, HERE / "weights_load.py", "--repeats", "5", "--json", self.scratch / "load.json"],
                       check=True, stdout=subprocess.DEVNULL)
        rows = {row["case"]: row for row in json.loads((self.scratch / "load.json").read_text())["results"]}
        npz = rows["alexft .npz (converted)"]
        self.results.append({"case": "6. load converted .npz vs pickled .npy", "ratio": npz["speedup_vs_pickled_npy"],
                             "target": 4.0, "met": npz["speedup_vs_pickled_npy"] >= 4.0, "details": list(rows.values())})
        print(f"{'6. load .npz vs pickled .npy':<44} ratio {npz['speedup_vs_pickled_npy']:.2f}x  target 4.0x  "
              f"{'met' if npz['speedup_vs_pickled_npy'] >= 4 else 'MISSED'}", flush=True)


CASES = ("check_peers_agree", "inference", "openvino", "classify_pipeline", "training", "ten_crop", "cold_start", "weights_load")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="Time per in-process measurement.")
    parser.add_argument("--only", help=f"Comma-separated subset of: {', '.join(CASES)}.")
    parser.add_argument("--json", type=Path, default=HERE / "results.json")
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else CASES
    with tempfile.TemporaryDirectory() as scratch:
        suite = Suite(Path(scratch), args.rounds, args.seconds)
        for case in chosen:
            getattr(suite, case)()
    args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "rounds": args.rounds, "results": suite.results}, indent=2))
    print(f"results: {args.json}")


if __name__ == "__main__":
    main()
