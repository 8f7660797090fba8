"""The convergence matrix of issue #22: does fine-tuning with default options converge on any base weights?

The matrix is base weights x dataset x training mode, one fine-tuning run per cell:

- Base weights at three feature scales, all made from the generated weights
  (`tests/fixtures.py random_params(seed=0)`, the layout of bvlc_alexnet.npy):
  x1 the generated weights as they are; x40 the same with fc6 and fc7 rescaled so that fc7's
  activations are 40 times larger; x1/20 rescaled the other way. ReLU is positively homogeneous
  (relu(s*z) = s*relu(z) for s > 0), so multiplying fc6's kernel and bias by sqrt(s), fc7's kernel
  by sqrt(s) and fc7's bias by s multiplies fc7's output by exactly s and changes nothing else the
  network computes below fc8: the same features, at another scale. fc7's mean L2 norm per image
  is measured on the datasets' images (centre crop) and printed, so the factor is checked, not
  assumed. Scales are given as factors (`--scales 1,40,1/20`).
- Two real datasets: scikit-learn's handwritten digits (10 classes; train and val are disjoint
  ranges of one seeded shuffle, `alexft.demo.write_digits`) and six classes cut from the photos
  scikit-image and scikit-learn ship (`alexft.demo.sample_photos`; see `write_photo_split` for
  how the crops are made and why train and val come from disjoint regions).
- Three training modes: fc8 only (`skip=("fc8",)`, the default `train`); fc7+fc8
  (`train=["fc7", "fc8"]`); all layers (`train="all"`, the full path: no feature cache) on a small
  subset of the training folder, a few epochs at batch 16, since every layer trains at only
  40-70 images/s on a CPU.

Every cell calls `alexft.train.finetune` with the library's defaults for everything but the data,
the weights, the layers, the epochs and the run folder (and the batch size of the all-layers
mode): in particular no learning rate, so the cells measure whatever `finetune` does by default.

Beside the cells, a logistic-regression probe (scikit-learn, standardised features) is trained on
the same frozen fc7 features (centre crop, the base weights) of the training folder and scored on
the validation folder: what a linear classifier on those features can reach. Standardising makes
it blind to the features' scale, so it scores the same at every scale: one yardstick per dataset.

Targets (issue #22), checked per cell:
- never NaN: no NaN or infinity anywhere in history.csv, and no divergence error;
- never a folder without a model: run/model.npz exists and `alexft.weights.load` accepts it;
- fc8 only: the last epoch's validation accuracy is at most 5 points below the probe's (doing
  better is fine). Not the best epoch's, which is what model.npz holds: that epoch is picked on
  this very validation set, so a run whose loss runs away can still show one lucky epoch (seen
  with a fixed rate at x40: training loss in the thousands, validation accuracy jumping between
  10% and 81%). A converged run ends near its best. `--compare best` checks the best epoch instead;
  the tables show both, and the last training loss (a uniform guess scores ln(classes)).

The tables go to stdout as Markdown (`--json`: one JSON document instead), progress to stderr.
The exit status is 1 when a cell misses a target. Run folders stay under `--out` (default: a
temporary folder, removed at the end); their .npz files (about 230 MB each) are deleted once
measured unless `--keep-models`.

    python benchmarks/convergence.py                              # all 18 cells: ~40-60 min on 2 cores
    python benchmarks/convergence.py --modes fc8,fc7+fc8 --out /tmp/matrix
    python benchmarks/convergence.py --scales 40 --datasets digits --modes fc8 --json
    PYTHONPATH=/path/to/other/checkout python benchmarks/convergence.py   # measure another alexft

Time goes into the feature cache, which runs the frozen layers on ten views of every train and
val image: a digits cell (900 images) takes 3-5 min, a photos cell (540) 2-4 min, an all-layers
cell 1-1.5 min, and each scale's probe under a minute, on a 2-core CPU (the higher figures on a
shared machine).
"""
import argparse
import csv
import gc
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from fixtures import random_params  # noqa: E402

from alexft import demo  # noqa: E402
from alexft import weights as weights_io  # noqa: E402
from alexft.data import load_dataset  # noqa: E402
from alexft.errors import AlexftError  # noqa: E402
from alexft.features import layer_outputs  # noqa: E402
from alexft.model import build_alexnet, truncated  # noqa: E402
from alexft.train import finetune  # noqa: E402

SCALES = (Fraction(1), Fraction(40), Fraction(1, 20))
DATASETS = ("digits", "photos")
PROBE_MARGIN = 0.05  # fc8 only may end at most this far (5 points) below the probe
PHOTO_TRAIN_SHARE = 0.6  # photo train crops come from the left 60% of each photo, val crops from the rest


@dataclass(frozen=True)
class Mode:
    """A training mode: `skip` and `train` as `finetune` takes them, and what the mode changes."""

    name: str
    skip: tuple
    train: object  # None (the skipped layers), a list of layers, or "all"
    subset: Optional[int] = None  # training images per class; None: the whole training folder
    batch_size: Optional[int] = None  # None: the library's default
    epochs: Optional[int] = None  # None: --epochs


MODES = {
    "fc8": Mode("fc8", ("fc8",), None),
    "fc7+fc8": Mode("fc7+fc8", ("fc8",), ["fc7", "fc8"]),
    # Every layer, without cache: 10 images per class, 2 epochs at batch 16 keep a cell near a minute.
    "all": Mode("all", ("fc8",), "all", subset=10, batch_size=16, epochs=2),
}


def say(message):
    print(f"convergence: {message}", file=sys.stderr, flush=True)


def scale_label(factor):
    return f"x{factor}"


# --- base weights ----------------------------------------------------------------------


def scaled_params(params, factor):
    """`params` ({layer: [kernel, bias]}) with fc7's output multiplied by `factor` (> 0).

    fc6's kernel and bias get sqrt(factor), so fc6's output (after ReLU) is sqrt(factor) times
    larger; fc7's kernel gets sqrt(factor), which makes its input term factor times larger, and
    its bias gets factor. The arrays of `params` are not modified (a session fixture may hold them).
    """
    root = np.float32(math.sqrt(factor))
    scaled = dict(params)
    fc6_kernel, fc6_bias = params["fc6"]
    fc7_kernel, fc7_bias = params["fc7"]
    scaled["fc6"] = [fc6_kernel * root, fc6_bias * root]
    scaled["fc7"] = [fc7_kernel * root, fc7_bias * np.float32(factor)]
    return scaled


def write_base_weights(params, factor, path):
    """The weights at feature scale `factor`, as an alexft .npz at `path` (reused if there)."""
    path = Path(path)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        weights_io.save(weights_io.WeightSet(scaled_params(params, float(factor))), path)
    return path


# --- datasets --------------------------------------------------------------------------


def write_digits_split(root, train_per_class=60, val_per_class=30, seed=0):
    """scikit-learn digits as root/train and root/val: disjoint ranges of one seeded shuffle."""
    root = Path(root)
    train = demo.write_digits(root / "train", per_class=train_per_class, seed=seed, start=0)
    val = demo.write_digits(root / "val", per_class=val_per_class, seed=seed, start=train_per_class)
    return train, val


def write_photo_split(root, train_per_class=60, val_per_class=30, seed=0):
    """Six classes (one per photo: chelsea, coffee, astronaut, camera, china, flower) of random
    crops, as root/train and root/val.

    Each crop has a random size (35-90% of the region's shorter side), aspect ratio (3:4 to 4:3)
    and position; half are mirrored, half are downscaled to 30-80% (less detail once the network
    upscales them again). Train crops come from the left 60% of each photo and val crops from
    the right 40%: disjoint regions. Random crops from the whole photo would overlap, so val would
    show pixels the network trained on and every classifier, good or broken, would score near 100%,
    leaving nothing for the 5-point comparison with the probe to measure. Disjoint regions make
    val a part of the scene never seen in training, as new photos of a class would be; the
    sizes differ a little (the val region is narrower), which is part of that shift.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for name, path in demo.sample_photos().items():
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # camera.png is greyscale: 3 equal channels
        split = round(image.shape[1] * PHOTO_TRAIN_SHARE)
        for part, region, count in (("train", image[:, :split], train_per_class), ("val", image[:, split:], val_per_class)):
            folder = root / part / name
            folder.mkdir(parents=True, exist_ok=True)
            for number in range(count):
                cv2.imwrite(str(folder / f"{number:04d}.png"), random_crop(region, rng))
    return root / "train", root / "val"


def random_crop(region, rng):
    height, width = region.shape[:2]
    side = rng.uniform(0.35, 0.9) * min(height, width)
    aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    crop_height = min(height, max(16, round(side / math.sqrt(aspect))))
    crop_width = min(width, max(16, round(side * math.sqrt(aspect))))
    top = rng.integers(0, height - crop_height + 1)
    left = rng.integers(0, width - crop_width + 1)
    crop = region[top:top + crop_height, left:left + crop_width]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.5:
        factor = rng.uniform(0.3, 0.8)
        crop = cv2.resize(crop, (max(8, round(crop_width * factor)), max(8, round(crop_height * factor))),
                          interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(crop)


def subset_folder(source, target, per_class):
    """The first `per_class` images (sorted) of each class folder of `source`, copied to `target`."""
    source, target = Path(source), Path(target)
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        (target / folder.name).mkdir(parents=True, exist_ok=True)
        for path in sorted(folder.iterdir())[:per_class]:
            shutil.copy(path, target / folder.name / path.name)
    return target


def write_datasets(root, names, train_per_class, val_per_class):
    """{name: (train folder, val folder)} for the datasets asked for, written afresh under `root`."""
    writers = {"digits": write_digits_split, "photos": write_photo_split}
    folders = {}
    for name in names:
        shutil.rmtree(Path(root) / name, ignore_errors=True)
        folders[name] = writers[name](Path(root) / name, train_per_class, val_per_class)
    return folders


# --- the probe -------------------------------------------------------------------------


def fc7_model(weights_path):
    """AlexNet with the weights at `weights_path`, truncated after fc7 (ReLU included)."""
    weight_set = weights_io.load(weights_path)
    model = build_alexnet(weight_set.num_classes)
    weights_io.assign(model, weight_set)
    return truncated(model, "fc7")


def centre_features(prefix, paths):
    """(len(paths), 4096) fc7 activations of each image's centre crop."""
    def refuse(path, message):
        raise AlexftError(f"{path}: {message}")

    rows = [outputs[0] for _, outputs in layer_outputs(prefix, paths, False, refuse)]
    return np.stack(rows)


def probe_accuracy(train_features, train_labels, val_features, val_labels):
    """(val accuracy, converged) of a logistic regression on standardised features."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        probe.fit(train_features, train_labels)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return float(probe.score(val_features, val_labels)), converged


def measure_base(weights_path, folders):
    """{dataset: {fc7_norm, probe, probe_converged}} for one base weights file: fc7's mean L2
    norm per image (centre crops of train and val) and the probe's val accuracy."""
    prefix = fc7_model(weights_path)
    measured = {}
    for name, (train_dir, val_dir) in folders.items():
        dataset = load_dataset(train_dir, val_dir=val_dir)
        train = centre_features(prefix, dataset.train.paths)
        val = centre_features(prefix, dataset.val.paths)
        accuracy, converged = probe_accuracy(train, dataset.train.labels, val, dataset.val.labels)
        norm = float(np.linalg.norm(np.concatenate([train, val]), axis=1).mean())
        measured[name] = dict(fc7_norm=norm, probe=accuracy, probe_converged=converged)
    del prefix
    gc.collect()
    return measured


# --- one cell --------------------------------------------------------------------------


def run_cell(train_dir, val_dir, weights, mode, epochs, run, log=None):
    """Fine-tune one cell with the library's defaults and return what the run folder shows.

    `epochs` (None: the library's default) applies unless the mode sets its own.
    """
    options = dict(skip=mode.skip, train=mode.train, epochs=mode.epochs or epochs, batch_size=mode.batch_size)
    options = {key: value for key, value in options.items() if value is not None or key == "train"}
    shutil.rmtree(run, ignore_errors=True)
    started = time.perf_counter()
    summary, error = {}, None
    try:
        summary = finetune(train_dir, val_dir=val_dir, weights=weights, output=run, progress=False,
                           log=log or (lambda message: None), **options)
    except AlexftError as failure:  # a diverged run raises TrainingError: record it, go on
        error = str(failure).splitlines()[0]
    seconds = time.perf_counter() - started
    gc.collect()
    return inspect_run(run, summary, error, seconds)


def inspect_run(run, summary=None, error=None, seconds=None):
    """The cell's record from its run folder (and `finetune`'s summary when it returned one)."""
    run = Path(run)
    history = read_history(run)
    config = _read_json(run / "config.json")
    accuracies = [value for value in (_number(row.get("val_accuracy")) for row in history) if value is not None]
    losses = [value for value in (_number(row.get("train_loss")) for row in history) if value is not None]
    model_ok, model_error = model_loads(run / "model.npz")
    return dict(
        val_best=max(accuracies) if accuracies else None,
        val_last=accuracies[-1] if accuracies else None,
        epochs_run=len(accuracies),
        train_loss_last=losses[-1] if losses else None,
        nonfinite=history_has_nonfinite(history),
        model=model_ok, model_error=model_error,
        run_mb=round(folder_bytes(run) / 1e6, 1),
        seconds=None if seconds is None else round(seconds, 1),
        lr_requested=config.get("lr"),
        lr=chosen_lr(summary or {}, config, history),
        error=error,
    )


def read_history(run):
    path = Path(run) / "history.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def history_has_nonfinite(history):
    """Whether any cell of history.csv is a number that is NaN or infinite."""
    for row in history:
        for value in row.values():
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            if not math.isfinite(number):
                return True
    return False


def model_loads(path):
    """(True, None) when `path` exists and alexft.weights.load accepts it, else (False, why)."""
    if not Path(path).is_file():
        return False, "no model.npz"
    try:
        weights_io.load(path)
    except AlexftError as error:
        return False, str(error)
    return True, None


def folder_bytes(folder):
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


LR_KEYS = ("lr_found", "lr_chosen", "chosen_lr", "found_lr", "base_lr", "lr")


def chosen_lr(summary, config, history):
    """The base learning rate the run used: a number in the summary or config.json under one of
    LR_KEYS (a range test's result, or the rate given), else the first epoch's rate in history.csv."""
    for source in (summary, config):
        for key in LR_KEYS:
            if _number(source.get(key)) is not None:
                return _number(source.get(key))
    for row in history:
        if _number(row.get("lr")) is not None:
            return _number(row.get("lr"))
    return None


def _number(value):
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def drop_models(run):
    """Delete a measured run folder's .npz files (model, last model, checkpoint: ~230 MB each)."""
    for path in Path(run).glob("*.npz"):
        path.unlink()


# --- targets and tables ----------------------------------------------------------------


def missed_targets(cell, probe, compare="last"):
    """The targets a cell misses, as short phrases (empty: all met). `compare`: which epoch's
    validation accuracy ("last" or "best") must come within PROBE_MARGIN of the probe."""
    missed = []
    if cell["nonfinite"] or (cell["error"] and ("diverged" in cell["error"] or "nan" in cell["error"].lower())):
        missed.append("NaN/inf")
    if cell["error"]:
        missed.append("error")
    if not cell["model"]:
        missed.append("no usable model.npz")
    if cell["mode"] == "fc8":
        accuracy = cell[f"val_{compare}"]
        if accuracy is None or accuracy < probe - PROBE_MARGIN:
            missed.append(f"{compare} epoch more than {PROBE_MARGIN * 100:.0f} points below the probe")
    return missed


def _percent(value):
    return "-" if value is None else f"{100 * value:.1f}"


def _lr_text(cell):
    requested, used = cell["lr_requested"], cell["lr"]
    used_text = "-" if used is None else f"{used:.3g}"
    if isinstance(requested, str):
        return f"{requested} → {used_text}"
    return used_text


def _loss_text(value):
    return "-" if value is None else f"{value:.3g}"


def markdown(bases, cells):
    lines = ["| base weights | dataset | fc7 L2 norm per image | probe val acc % |", "|---|---|---:|---:|"]
    for scale, measured in bases.items():
        for dataset, values in measured.items():
            note = "" if values["probe_converged"] else " (not converged)"
            lines.append(f"| {scale} | {dataset} | {values['fc7_norm']:.1f} | {_percent(values['probe'])}{note} |")
    lines += ["", "| base weights | dataset | mode | probe % | val best % | val last % | last − probe | train loss last | "
                  "NaN/inf | model.npz | run MB | lr | s | targets |",
              "|---|---|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---|"]
    for cell in cells:
        probe = bases[cell["scale"]][cell["dataset"]]["probe"]
        delta = "-" if cell["val_last"] is None else f"{100 * (cell['val_last'] - probe):+.1f}"
        targets = "; ".join(cell["missed"]) or ("met" if cell["mode"] == "fc8" else "met (accuracy is no target)")
        if cell["error"]:
            targets += f" ({cell['error'][:100]})"
        lines.append(
            f"| {cell['scale']} | {cell['dataset']} | {cell['mode']} | {_percent(probe)} | {_percent(cell['val_best'])} | "
            f"{_percent(cell['val_last'])} | {delta} | {_loss_text(cell['train_loss_last'])} | "
            f"{'yes' if cell['nonfinite'] else 'no'} | "
            f"{'loads' if cell['model'] else 'MISSING' if cell['model_error'] == 'no model.npz' else 'REFUSED'} | "
            f"{cell['run_mb']:.0f} | {_lr_text(cell)} | {cell['seconds']:.0f} | {targets} |")
    return "\n".join(lines)


# --- the matrix ------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--scales", default=",".join(map(str, SCALES)),
                        help="fc7 feature scales relative to the generated weights, e.g. 1,40,1/20")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="digits, photos")
    parser.add_argument("--modes", default=",".join(MODES), help="fc8, fc7+fc8, all")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs of the fc8 and fc7+fc8 modes (default: the library's, 'auto')")
    parser.add_argument("--all-epochs", type=int, default=MODES["all"].epochs, help="epochs of the all-layers mode")
    parser.add_argument("--all-per-class", type=int, default=MODES["all"].subset,
                        help="training images per class in the all-layers mode")
    parser.add_argument("--train-per-class", type=int, default=60, help="training images (crops) per class")
    parser.add_argument("--val-per-class", type=int, default=30, help="validation images (crops) per class")
    parser.add_argument("--out", type=Path, help="folder for weights, data and run folders (kept); default: a temporary one")
    parser.add_argument("--keep-models", action="store_true", help="keep the run folders' .npz files")
    parser.add_argument("--compare", choices=("last", "best"), default="last",
                        help="the epoch whose val accuracy fc8 only must bring within 5 points of the probe")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of Markdown tables")
    args = parser.parse_args(argv)
    try:
        args.scales = [Fraction(text) for text in args.scales.split(",")]
    except ValueError as error:
        parser.error(f"--scales: {error}")
    if any(factor <= 0 for factor in args.scales):
        parser.error("--scales: factors must be positive (ReLU keeps only a positive scale)")
    args.datasets = args.datasets.split(",")
    unknown = [name for name in args.datasets if name not in DATASETS] + [
        name for name in args.modes.split(",") if name not in MODES]
    if unknown:
        parser.error(f"unknown dataset or mode: {', '.join(unknown)}")
    args.modes = [MODES[name] for name in args.modes.split(",")]
    args.modes = [Mode(**dict(asdict(mode), subset=args.all_per_class, epochs=args.all_epochs)) if mode.name == "all"
                  else mode for mode in args.modes]
    return args


def run_matrix(args, out):
    folders = write_datasets(out / "data", args.datasets, args.train_per_class, args.val_per_class)
    subsets = {mode.subset for mode in args.modes if mode.subset}
    small = {(name, n): subset_folder(train, out / "data" / name / f"train_{n}", n)
             for name, (train, _) in folders.items() for n in subsets}
    for name, (train_dir, val_dir) in folders.items():
        dataset = load_dataset(train_dir, val_dir=val_dir)
        say(f"{name}: {len(dataset.class_names)} classes, {len(dataset.train)} train, {len(dataset.val)} val images")
    params = random_params(seed=0)
    bases, cells = {}, []
    for factor in args.scales:
        scale = scale_label(factor)
        weights = write_base_weights(params, factor, out / "weights" / f"scale_{str(factor).replace('/', '_')}.npz")
        say(f"{scale}: fc7 features and the probe")
        bases[scale] = measure_base(weights, folders)
        for dataset, values in bases[scale].items():
            say(f"{scale} {dataset}: fc7 norm {values['fc7_norm']:.1f}, probe {values['probe']:.3f}")
        for dataset, (train_dir, val_dir) in folders.items():
            for mode in args.modes:
                name = f"{scale} {dataset} {mode.name}"
                run = out / "runs" / f"{str(factor).replace('/', '_')}_{dataset}_{mode.name}"
                say(f"{name}: fine-tuning")
                cell = run_cell(small[dataset, mode.subset] if mode.subset else train_dir, val_dir, weights, mode,
                                args.epochs, run, log=lambda message, name=name: say(f"{name}: {message}"))
                cell.update(scale=scale, dataset=dataset, mode=mode.name)
                cell["missed"] = missed_targets(cell, bases[scale][dataset]["probe"], args.compare)
                say(f"{name}: val best {_percent(cell['val_best'])}%, last {_percent(cell['val_last'])}%, "
                    f"{cell['seconds']:.0f} s, "
                    f"targets {'; '.join(cell['missed']) or 'met'}")
                cells.append(cell)
                if not args.keep_models:
                    drop_models(run)
    return bases, cells


def main(argv=None):
    args = parse_args(argv)
    import alexft

    say(f"alexft from {Path(alexft.__file__).parent}")  # PYTHONPATH=<a checkout> measures another version
    with tempfile.TemporaryDirectory(prefix="alexft-convergence-") as scratch:
        out = args.out or Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        bases, cells = run_matrix(args, out)
        say(f"matrix done in {time.perf_counter() - started:.0f} s")
    if args.json:
        print(json.dumps(dict(bases=bases, cells=cells, probe_margin=PROBE_MARGIN, compare=args.compare), indent=1))
    else:
        print(markdown(bases, cells))
    return 1 if any(cell["missed"] for cell in cells) else 0


if __name__ == "__main__":
    sys.exit(main())
