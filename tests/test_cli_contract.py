"""The command line's contract (issue #24): usage errors before TensorFlow starts, one exit-code
rule for every command (0 good, 1 an input could not be used, 2 usage, 130/143 interrupted),
described options, images from standard input and URLs, and no silent skips."""
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import click
import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from alexft import weights as weights_io
from alexft.cli import main
from alexft.image_sources import UrlImage
from fixtures import as_at_a_terminal, photo_paths, stopped_by, write_digits_folder
from http_server import serving

ALEXFT = str(Path(sys.executable).parent / "alexft")

# Runs commands (a JSON file of [arguments, environment] pairs) without TensorFlow and says, for
# each, whether it got imported. Each runs in a process of its own, forked from one that has
# imported alexft.cli (as a process calling main has) and the libraries most commands import
# before they refuse, which would take 0.3 s each time: TensorFlow is not among them (asserted).
# What command N prints goes to N.out and N.err in the folder given.
EACH_WITHOUT_TENSORFLOW = """
import json, os, sys
from alexft.cli import main
import cv2, numpy, PIL.Image, tqdm, asyncio, hashlib, http.client, ssl, subprocess, zipfile, difflib
assert "tensorflow" not in sys.modules
cases, folder = json.loads(open(sys.argv[1]).read()), sys.argv[2]
for number, (args, environment) in enumerate(cases):
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        for descriptor, suffix in ((1, "out"), (2, "err")):
            os.dup2(os.open(f"{folder}/{number}.{suffix}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC), descriptor)
        os.environ.update(environment)
        try:
            main(args, prog_name="alexft")
        except SystemExit as done:
            code = done.code
        print("exit", code, "tensorflow" in sys.modules, file=sys.stderr)
        raise SystemExit  # the child ends as a script does: its exit functions run, its streams are flushed
    os.waitpid(child, 0)
"""


def run(*args, **kwargs):
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False, **kwargs)


@pytest.fixture
def one_class_folder(tmp_path):
    folder = tmp_path / "one"
    write_digits_folder(folder, per_class=3, classes=[4])
    return folder


def run_config(**fields):
    """A config.json as a run writes it, so far as a run folder's checks read it: it names the alexft that wrote it."""
    return json.dumps(dict(fields, versions={"alexft": "0.1.0"}))


def test_mistakes_are_refused_before_tensorflow_starts(tmp_path, one_class_folder, small_digits_folder,
                                                       canonical_weights_file, canonical_caffemodel, canonical_params):
    existing = tmp_path / "runs" / "existing"
    existing.mkdir(parents=True)
    (existing / "config.json").write_text(run_config())
    finished = tmp_path / "runs" / "finished"
    finished.mkdir()
    (finished / "config.json").write_text(run_config())
    (finished / "summary.json").write_text('{"epochs": 3}')
    extended = tmp_path / "runs" / "extended"  # finished, then resumed with more epochs and stopped
    extended.mkdir()
    for name in ("config.json", "summary.json", "checkpoint.npz"):
        (extended / name).write_text("{}")
    os.utime(extended / "summary.json", ns=(1_000_000_000, 1_000_000_000))
    moved = tmp_path / "runs" / "moved"  # a run whose data folder has gone since
    moved.mkdir()
    (moved / "config.json").write_text(run_config(data_dir=str(tmp_path / "gone")))
    # A run begun from a weights file of the user's that has gone since: the defaults are other
    # weights (a download of 233 MB, then refused by their digest), so the file is named.
    weights_gone = tmp_path / "runs" / "weights_gone"
    weights_gone.mkdir()
    (weights_gone / "config.json").write_text(run_config(data_dir=str(small_digits_folder),
                                                         weights=str(tmp_path / "mine.npy")))
    begun = tmp_path / "runs" / "begun"  # a run stopped at batch size 16, seed 0, cached
    begun.mkdir()
    (begun / "config.json").write_text(run_config(data_dir=str(small_digits_folder), batch_size=16, seed=0, cache=True))
    others = tmp_path / "others"  # a config.json of the user's own (another tool's): no run, to resume or to replace
    others.mkdir()
    (others / "config.json").write_text("{}")
    (tmp_path / "empty").mkdir()
    (tmp_path / "unreadable").mkdir()
    (tmp_path / "unreadable" / "a.jpg").write_bytes(b"not a JPEG")
    (tmp_path / "unreadable" / "b.png").write_bytes(b"")
    page = tmp_path / "page.binaryproto"
    page.write_bytes(b"<!DOCTYPE html><html>moved</html>")
    (tmp_path / "afile").write_text("a file, not a folder")
    (tmp_path / "dangling.npy").symlink_to("nowhere.npy")
    os.mkfifo(tmp_path / "pipe.npy")
    (tmp_path / "img_15.png").write_bytes(b"")
    (tmp_path / "img_25.png").write_bytes(b"")
    (tmp_path / "caf\u00e9").mkdir()  # composed; typed decomposed, it looks the same
    (tmp_path / "adir.npz").mkdir()  # a folder where an output file would go
    (tmp_path / "mine").mkdir()  # the user's own figures, under a name a report writes
    (tmp_path / "mine" / "metrics.json").write_text('{"accuracy": 0.93}')
    precious = tmp_path / "precious"
    (precious / "1").mkdir(parents=True)  # like serving/alex/1: OUTPUT given without its version number
    (precious / "thesis.txt").write_text("years of work")
    logs = tmp_path / "experiments"  # the user's own TensorBoard logs: a run would write into them and may remove them
    (logs / "tensorboard").mkdir(parents=True)
    whole = Path(canonical_weights_file).read_bytes()  # the pickled .npy users hold
    (tmp_path / "cut.npy").write_bytes(whole[: len(whole) // 2])  # a download cut short, renamed by hand
    np.savez(tmp_path / "small.npz", **{"fc8/weights": np.zeros((4096, 10), np.float32)})
    small = (tmp_path / "small.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(small[: len(small) - 100])
    np.savez(tmp_path / "fc7.npz", features=np.zeros((2, 4096), np.float32))  # features named as the weights
    # A run's checkpoint named as the weights, in its layout (TrainingNetwork.state_arrays), beside
    # its model.npz, and one stopped before its first epoch ended, without one.
    for run_name in ("run", "early"):
        (tmp_path / run_name).mkdir()
        np.savez(tmp_path / run_name / "checkpoint.npz", **{"best/0": np.zeros((4096, 10), np.float32),
                                                            "current/0": np.zeros((4096, 10), np.float32),
                                                            "optimizer/0": np.zeros((), np.int64)})
    (tmp_path / "run" / "model.npz").touch()  # only named, never read
    whole_model = Path(canonical_caffemodel).read_bytes()
    (tmp_path / "cut.caffemodel").write_bytes(whole_model[: len(whole_model) // 3])  # a download cut short
    cut_caffemodel = "cut.caffemodel: truncated or corrupt file"
    (tmp_path / "y.labels.txt").write_text("notes of the user's, where an export to y.tflite would put its labels")
    shutil.copy(photo_paths()["chelsea"], tmp_path / "photo.png")
    np.savez(tmp_path / "earlier.npz", features=np.zeros((1, 4096), np.float32), paths=np.array(["a.jpg"]))
    earlier = (tmp_path / "earlier.npz").read_bytes()
    (tmp_path / "labels.txt").write_text("photo.png 1000\n")  # ImageNet's labels end at 999
    for name, left_out in (("headless", {"fc8"}), ("convolutions", {"fc6", "fc7", "fc8"})):  # feature extractors' files
        kept = {layer: arrays for layer, arrays in canonical_params.items() if layer not in left_out}
        weights_io.save(weights_io.WeightSet(kept), tmp_path / f"{name}.npz")
    weights = ["--weights", str(canonical_weights_file)]
    cases = [
        (["classify", "nope.jpg"], 2, "nope.jpg: no such file or folder"),
        (["classify", str(tmp_path / "empty")], 2, "no images found in"),
        (["classify", "-", "-"], 2, "'-' (standard input) can be given once"),
        # An empty path (a shell variable unset) is not the current folder.
        (["classify", ""], 2, "Invalid value for 'INPUTS...': an empty path"),
        (["classify", str(photo_paths()["chelsea"]), "--weights", ""], 2, "Invalid value for '--weights': an empty path"),
        (["finetune", str(small_digits_folder), "--output", "", *weights], 2,
         "Invalid value for '-o' / '--output': an empty path"),
        (["export", "", *weights], 2, "Invalid value for 'OUTPUT': an empty path"),
        (["weights", "convert", str(canonical_weights_file), " "], 2, "Invalid value for 'DESTINATION': an empty path"),
        (["classify", str(photo_paths()["chelsea"]), "--weights", "missing.npz"], 1, "missing.npz: weights file not found"),
        (["features", "nope.jpg", "--output", "f.npz"], 2, "nope.jpg: no such file or folder"),
        (["features", str(photo_paths()["chelsea"]), "--output", "f.npz", "--layer", "pool9"], 2, "'pool9' is not one of"),
        (["finetune", str(one_class_folder), *weights], 1, "only one class (digit_4); fine-tuning needs at least two"),
        (["finetune", str(small_digits_folder), "--output", str(existing), *weights], 1, "already holds a run"),
        (["finetune", str(small_digits_folder), "--output", str(finished), *weights], 1,
         f"{finished}: holds a finished run; choose another --output"),
        (["finetune", str(small_digits_folder), "--output", str(extended), *weights], 1,
         f"{extended}: already holds a run; pass --resume to continue it"),
        (["finetune", *weights], 2, "Missing argument 'DATA_DIR'"),
        (["finetune", str(small_digits_folder), "--skip", "fc9", *weights], 2,  # the option is named, and a guess
         "--skip: unknown layer(s) fc9 (did you mean fc8?); AlexNet has conv1, conv2, conv3, conv4, conv5, fc6, fc7, fc8"),
        (["finetune", str(small_digits_folder), "--train", "fc7,fc9", *weights], 2,
         "--train: unknown layer(s) fc9 (did you mean fc8?); AlexNet has"),
        (["finetune", str(small_digits_folder), "--train", " , ", *weights], 2,
         "--train names no layer; give layers such as fc8, fc7,fc8, conv5-fc8 or all"),
        (["finetune", str(small_digits_folder), "--skip", "", *weights], 2,  # it went on with the default fc8
         "--skip names no layer, and --train is not given"),
        (["finetune", str(small_digits_folder), "--train", "all,fc8", *weights], 2,
         "Invalid value for '--train': 'all' stands alone (every layer), not in a list (all,fc8)"),
        (["finetune", str(small_digits_folder), "--train", "fc8-conv5", *weights], 2,  # it was named an unknown layer
         "Invalid value for '--train': layer range 'fc8-conv5' runs backwards: ranges go from input to output, as in "
         "conv5-fc8"),
        (["finetune", str(small_digits_folder), "--train", "fc8-conv9", *weights], 2,
         "--train: unknown layer(s) fc8-conv9; AlexNet has conv1, conv2, conv3, conv4, conv5, fc6, fc7, fc8 (a range: conv5-fc8;"),
        (["finetune", str(small_digits_folder), "--skip", "fc7", "--train", "fc8", *weights], 2,
         "--skip fc7 starts fc7 afresh, and without training it would leave it random: train it too (--train fc7,fc8)"),
        (["finetune", str(small_digits_folder), "--train", "fc7", *weights], 2,
         "--skip fc8, the default, starts fc8 afresh"),
        (["finetune", "--resume", *weights], 2, "--resume needs --output, the run folder to continue"),
        (["finetune", "--resume", "--output", str(tmp_path / "empty")], 1, "nothing to resume (no config.json)"),
        (["finetune", "--resume", "--output", str(existing)], 1, "its config.json names no data folder; give DATA_DIR"),
        # Was "already holds a run; pass --resume", and --resume then asked for DATA_DIR, then refused its options.
        (["finetune", str(small_digits_folder), "--output", str(others), *weights], 1,
         f"{others}: config.json there is not from an alexft run, and a run would replace it; choose another --output"),
        (["finetune", "--resume", "--output", str(others)], 1,
         f"{others}: config.json there is not from an alexft run: nothing to resume; choose another --output"),
        (["finetune", str(small_digits_folder), "--resume", "--output", str(others), *weights], 1,
         f"{others}: config.json there is not from an alexft run: nothing to resume; choose another --output"),
        (["finetune", "--resume", "--output", str(moved)], 1, f"its data folder {tmp_path / 'gone'} is not there"),
        (["finetune", "--resume", "--output", str(weights_gone)], 1,
         f"{weights_gone}: the weights it began from, {tmp_path / 'mine.npy'}, are not there; give --weights: that file, "
         "or another holding the same weights"),
        (["finetune", "--resume", "--output", str(begun), "--batch-size", "64"], 1,
         f"{begun}: cannot resume with a different configuration (--batch-size: was 16, now 64); resume with the run's "
         "own options, or start a new run in another --output"),
        (["finetune", "--resume", "--output", str(begun), "--no-cache", "--seed", "0"], 1,
         "different configuration (--cache/--no-cache: was --cache, now --no-cache)"),
        (["finetune", str(small_digits_folder), "--output", str(logs), *weights], 1,
         f"{logs}: tensorboard there is not from an alexft run, and a run would replace it; choose another --output"),
        (["finetune", str(small_digits_folder), "--epochs", "0", *weights], 2, "expected a whole number of at least 1"),
        # A traceback from numpy (-1), or one from TensorFlow after its start-up (2**63).
        (["finetune", str(small_digits_folder), "--seed", "-1", *weights], 2,
         "Invalid value for '--seed': -1 is not in the range 0<=x<=2147483647."),
        (["finetune", str(small_digits_folder), "--seed", str(2**63), *weights], 2, "Invalid value for '--seed'"),
        # Was said after the listing and start-up, with exit 1.
        (["finetune", str(small_digits_folder), "--device", "tpu", *weights], 2,
         "Invalid value for '--device': device 'tpu': expected auto, cpu, gpu or gpu:N"),
        (["finetune", str(small_digits_folder), "--lr", "fast", *weights], 2, "expected a positive number or 'auto'"),
        (["evaluate", *weights], 2, "give either DATA (class folders) or --list FILE"),
        (["evaluate", str(small_digits_folder), "--root", str(tmp_path), *weights], 2,
         "--root is the folder --list paths are relative to; with DATA it has no meaning"),
        # A data folder of the wrong layout is the same input mistake (exit 1) in both commands.
        (["evaluate", str(tmp_path / "empty"), *weights], 1, "empty: no class sub-folders"),
        (["finetune", str(tmp_path / "empty"), *weights], 1, "empty: no class sub-folders"),
        # Class folders or labels that the weights' classes do not match, before the seconds of start-up.
        (["evaluate", str(small_digits_folder), *weights], 1, "folder(s) 'digit_0', 'digit_1', 'digit_2', 'digit_3', "
                                                              "'digit_4' and 5 more are not classes of this model"),
        (["evaluate", "--list", "labels.txt", *weights], 1,
         "labels.txt:1: expected 'path label' with a label in 0..999, got 'photo.png 1000'"),
        (["export", "out", "--format", "onnx", *weights], 2, "'onnx' is not one of"),
        (["export", "out", "--quantize", "int8", *weights], 2,
         "quantization needs the TF Lite format (--format tflite, or an OUTPUT ending in .tflite)"),
        (["export", "out.tflite", "--quantize", "int8", *weights], 2,  # the format follows the name
         "int8 quantization needs calibration images (--calibration DIR)"),
        (["export", "out.tflite", "--format", "tflite", "--quantize", "int8", "--calibration", str(tmp_path / "empty"),
          *weights], 2, "empty: no images to calibrate on"),
        # Calibration images none of which can be read (each named), before the start-up, not after it.
        (["export", "out.tflite", "--quantize", "int8", "--calibration", "unreadable", *weights], 1,
         "no calibration image could be read (2 tried, each named above)"),
        (["export", "out.tflite", "--format", "tflite", "--quantize", "float16", "--calibration", str(tmp_path / "empty"),
          *weights], 2, "calibration images are for int8 quantization only"),
        (["export", "out.tflite", "--format", "tflite", "--weights", "missing.npz"], 1, "missing.npz: weights file not found"),
        (["classify", str(photo_paths()["chelsea"]), "--runtime", "onnx", *weights], 2, "'onnx' is not one of"),
        (["classify", str(photo_paths()["chelsea"]), "--runtime", "litert", "--precision", "bfloat16", *weights], 2,
         "Invalid value for '--runtime': litert computes in float32; --precision bfloat16 runs on TensorFlow or"),
        (["export", "out.tflite", "--precision", "bfloat16", *weights], 2, "TF Lite has no bfloat16 kernels"),
        # Quantizing already: the advice was to quantize.
        (["export", "out.tflite", "--precision", "bfloat16", "--quantize", "float16", *weights], 2,
         "TF Lite has no bfloat16 kernels, and --quantize already sets the file's numbers: drop --precision bfloat16"),
        (["export", "out.TFLite", "--format", "savedmodel", "--quantize", "float16", *weights], 2,
         "quantization needs the TF Lite format"),  # a --format given wins over the name
        (["weights", "info", "missing.npz"], 1, "missing.npz"),
        # A broken weights file is said at once, not after TensorFlow's start-up.
        (["classify", str(photo_paths()["chelsea"]), "--weights", "cut.npy"], 1,
         "cut.npy: the file ends early ("),  # as weights info says it: "(N bytes; an interrupted download or copy?)"
        (["export", "out", "--weights", "cut.npz"], 1, "cut.npz: the file ends early ("),
        (["finetune", str(small_digits_folder), "--weights", "cut.npz"], 1, "cut.npz: the file ends early"),
        # A whole file of the wrong kind too, by every command that reads the weights.
        (["classify", str(photo_paths()["chelsea"]), "--weights", "fc7.npz"], 1,
         "fc7.npz: a feature file (alexft features), not weights"),
        (["classify", str(photo_paths()["chelsea"]), "--weights", "run/checkpoint.npz"], 1,
         "run/checkpoint.npz: a fine-tuning run's checkpoint, not weights; the run's model is run/model.npz"),
        (["weights", "info", "run/checkpoint.npz"], 1, "the run's model is run/model.npz"),
        (["weights", "info", "early/checkpoint.npz"], 1, "early/checkpoint.npz: a fine-tuning run's checkpoint, not "
         "weights; a run writes its model, model.npz, beside it when an epoch ends (early/model.npz is not there)"),
        (["classify", str(photo_paths()["chelsea"]), "--runtime", "tensorflow", "--weights", "cut.caffemodel"], 1,
         cut_caffemodel),
        (["features", str(photo_paths()["chelsea"]), "--output", "f.npz", "--weights", "fc7.npz"], 1,
         "fc7.npz: a feature file (alexft features), not weights"),
        # A file without the layers above --layer serves it (test_evaluate.py), not a layer above its own.
        (["features", str(photo_paths()["chelsea"]), "--output", "f.npz", "--layer", "fc8", "--weights", "headless.npz"],
         1, "Error: headless.npz: missing layer(s) fc8\n"),
        (["features", str(photo_paths()["chelsea"]), "--output", "f.npz", "--weights", "convolutions.npz"], 1,
         "Error: convolutions.npz: missing layer(s) fc6, fc7\n"),
        (["evaluate", str(small_digits_folder), "--weights", "cut.caffemodel"], 1, cut_caffemodel),
        (["export", "out", "--weights", "fc7.npz"], 1, "fc7.npz: a feature file (alexft features), not weights"),
        (["export", "out.tflite", "--format", "tflite", "--weights", "cut.caffemodel"], 1, cut_caffemodel),
        (["finetune", str(small_digits_folder), "--weights", "fc7.npz"], 1, "fc7.npz: a feature file (alexft features), not weights"),
        (["finetune", str(small_digits_folder), "--train", "all", "--weights", "cut.caffemodel"], 1, cut_caffemodel),
        (["clasify", "x.jpg"], 2, "No such command 'clasify'"),
        (["classify", str(photo_paths()["chelsea"]), "--mean", "nope.binaryproto", *weights], 2, "no such file"),
        (["features", str(photo_paths()["chelsea"]), "--output", "f.npz", "--mean", str(page), *weights], 1,
         "page.binaryproto: not a Caffe mean file"),
        # Where the results would go is checked first, not after minutes of work.
        (["features", str(photo_paths()["chelsea"]), "--output", "afile/f.npz", *weights], 1,
         f"afile/f.npz: cannot be written: {tmp_path / 'afile'} is not a folder"),
        # A user's photo named as the output by mistake, or earlier features, are not overwritten.
        (["features", str(photo_paths()["coffee"]), "--output", "photo.png", *weights], 2,
         "photo.png: features are written as .npz; name the output so (e.g. photo.npz)"),
        # A folder to write into: the file is named inside it (it suggested empty.npz beside it).
        (["features", str(photo_paths()["coffee"]), "--output", "empty", *weights], 2,
         "empty/: is a folder; features are written as one .npz file: name it (e.g. empty/features.npz)"),
        # One not made yet, typed as a folder (it suggested later.npz: a Path drops the slash).
        (["features", str(photo_paths()["coffee"]), "--output", "later/", *weights], 2,
         "later/: names a folder; features are written as one .npz file: name it (e.g. later/features.npz)"),
        (["features", str(photo_paths()["coffee"]), "--output", "earlier.npz", *weights], 1,
         "earlier.npz: exists; pass --force to replace it"),
        (["features", str(photo_paths()["coffee"]), "--output", "-", *weights], 2,
         "-: features are written to an .npz file, which cannot go to standard output; name one (e.g. features.npz)"),
        (["features", str(photo_paths()["coffee"]), "--output", "earlier.npz", "--force", "--mean", str(page), *weights],
         1, "page.binaryproto: not a Caffe mean file"),  # --force passes the output check
        (["features", str(photo_paths()["coffee"]), "--output", "small.npz", "--force", *weights], 1,
         "small.npz: exists and is not a feature file (it holds weights), so it is not replaced, even with --force; "
         "name another output, or remove it first"),  # weights are never replaced by features
        (["features", str(photo_paths()["coffee"]), "--output", "small.npz", *weights], 1,
         "small.npz: exists and is not a feature file (it holds weights), so it is not replaced, even "
         "with --force"),  # said at once, not "pass --force" first (a helper's)
        (["features", str(photo_paths()["coffee"]), "--output", "/proc/f.npz", *weights], 1,
         "/proc/f.npz: cannot be written"),  # os.access says yes to root there; trying says no
        (["finetune", str(small_digits_folder), "--output", "afile/run", *weights], 1,
         f"afile/run/config.json: cannot be written: {tmp_path / 'afile'} is not a folder"),
        (["finetune", str(small_digits_folder), "--output", "/proc/run", *weights], 1, "/proc/run/config.json: cannot be written"),
        (["weights", "fetch", "--url", "http://127.0.0.1:9/w.npz", "--output", "afile/w.npz"], 1,
         f"afile/w.npz: cannot be written: {tmp_path / 'afile'} is not a folder"),
        # An output of the wrong kind (a file for a folder, a folder for a file) is an output that cannot be
        # written (exit 1), as every other one, not click's usage error; said before the work, never after it.
        (["evaluate", str(small_digits_folder), "--report", "afile", *weights], 1,
         f"afile/metrics.json: cannot be written: {tmp_path / 'afile'} is not a folder"),
        (["finetune", str(small_digits_folder), "--output", "afile", *weights], 1,
         "afile: is a file, not a run folder; choose another --output"),
        # A folder named as a file is still a folder (it said "exists and is not a file"), as for convert.
        (["features", str(photo_paths()["coffee"]), "--output", "adir.npz", *weights], 2,
         "adir.npz/: is a folder; features are written as one .npz file: name it (e.g. adir.npz/features.npz)"),
        # (weights fetch takes a folder as --output, writing into it: test_weights_cli.py)
        (["weights", "convert", str(canonical_weights_file), "adir.npz", "--force"], 2,
         f"adir.npz/: is a folder; the converted file is one .npz: name it (e.g. adir.npz/{canonical_weights_file.stem}.npz)"),
        (["evaluate", str(small_digits_folder), "--report", "mine", *weights], 1, "mine: metrics.json there is not "
         "from an alexft report, and the report would replace it; choose another --report folder"),
        (["evaluate", str(small_digits_folder), "--report", "afile/report", *weights], 1,
         f"cannot be written: {tmp_path / 'afile'} is not a folder"),
        (["export", "afile/x.tflite", "--format", "tflite", *weights], 1, "afile/x.tflite: cannot be written"),
        (["export", str(precious), "--force", *weights], 1, "exists and is not an earlier export"),
        (["export", str(precious), "--format", "tflite", "--force", *weights], 1, "precious/: is a folder; the export is one "
         "TF Lite file: name it (e.g. "),
        # Typed as a folder, not made yet: it wrote a TF Lite file named `later` (a Path drops the slash).
        (["export", "later/", "--format", "tflite", *weights], 1, "later/: names a folder; the export is one TF Lite file: "
         "name it (e.g. later/alexnet.tflite)"),
        (["export", "m.keras/", *weights], 1, "m.keras/: names a folder; the export is one Keras file: name it "
         "(e.g. m.keras)"),  # the name meant, without its slash
        (["export", "afile/", "--format", "tflite", *weights], 1, "afile/: names a folder, but afile is a file; the export "
         "is one TF Lite file: name it (e.g. alexnet.tflite)"),
        (["export", "afile", "--format", "tflite", "--force", *weights], 1, "exists and is not an earlier export"),
        (["export", "afile", *weights], 1, "afile: exists and is not an earlier export (a SavedModel folder, a TF Lite "
                                           "or a Keras file); remove it yourself or choose another OUTPUT"),
        (["export", "y.tflite", "--format", "tflite", *weights], 1,
         "y.labels.txt: already exists, where the labels of y.tflite go; remove it yourself or choose another OUTPUT"),
        (["evaluate", str(small_digits_folder), "--report", str(small_digits_folder / "digit_0" / "report"), *weights],
         2, "digit_0/report is inside"),  # the report's figures would be read as digits next time
        # A malformed option of the weights commands is a usage error, as click's own are.
        (["weights", "fetch", "--url", "notaurl"], 2, "notaurl: not an http:// or https:// URL"),
        (["weights", "fetch", "--url", "http://127.0.0.1:9/w.npy", "--sha256", "xyz"], 2,
         "'xyz' is not a SHA-256: expected 64 hexadecimal digits"),
        (["weights", "fetch", "--url", "http://127.0.0.1:9/w.npy#sha1=abc"], 2, "'abc' is not a SHA-1"),
        # `--sha256 "$SHA256"` with the variable unset: the download had been trusted on first use, unsaid.
        (["weights", "fetch", "--url", "http://127.0.0.1:9/w.npy", "--sha256", ""], 2,
         "an empty SHA-256 (an unset variable?): give its 64 hexadecimal digits, or none at all"),
        (["weights", "fetch", "--url", "http://127.0.0.1:9/w.npy#sha1="], 2, "an empty SHA-1 (an unset variable?)"),
        (["weights", "convert", "missing.npy", "x.npy"], 2, "x.npy: the converted file must be an .npz (e.g. x.npz)"),
        # A folder, made or not yet (it said "newdir: the converted file must be an .npz").
        (["weights", "convert", "missing.npy", "newdir/"], 2, "newdir/: names a folder; the converted file is one .npz: "
         "name it (e.g. newdir/missing.npz)"),  # named after the source
        (["weights", "convert", "missing.npy", "empty"], 2, "empty/: is a folder; the converted file is one .npz: name it "
         "(e.g. empty/missing.npz)"),
        (["weights", "convert", "missing.npy", ".npz"], 2, "must be an .npz (e.g. missing.npz)"),  # it said .npz.npz
        (["weights", "convert", "missing.npy", "x.npz", "--rename", "fc8_b"], 2, "expected NAME=LAYER"),
        # A path that does not exist, with the name beside it that is near (a typo) when there is one:
        # `finetune digitz` got click's "Directory 'digitz' does not exist."
        (["finetune", "empyt", *weights], 2, "empyt: no such folder; did you mean 'empty'?"),
        (["evaluate", "nothing_like_it", *weights], 2, "nothing_like_it: no such folder\n"),  # no guess
        (["classify", "phot.png", *weights], 2, "phot.png: no such file or folder; did you mean 'photo.png'?"),
        (["classify", str(photo_paths()["chelsea"]), "--mean", "page.binaryprot", *weights], 2,
         "page.binaryprot: no such file; did you mean 'page.binaryproto'?"),
        (["weights", "info", "afil"], 1, "afil: weights file not found; did you mean 'afile'?"),
        # A URL where a weights file goes (it lost a slash as a path: "https:/example.com/w.npy: ... not found").
        (["classify", str(photo_paths()["chelsea"]), "--weights", "https://example.com/w.npy"], 2,
         "https://example.com/w.npy: a URL, and weights are read from a file: download it first (alexft weights fetch "
         "--url URL on the command line"),
        (["weights", "convert", "ftp://example.com/w.npy", "w.npz"], 2, "ftp://example.com/w.npy: weights are read "
         "from a file, not from a URL (ftp://): copy it to this machine"),  # (weights fetch takes http(s) only)
        (["weights", "info", f"file://{tmp_path}/a%20b.npy"], 2, f"a file URL: give the file's path itself ({tmp_path}/a b.npy)"),
        # What is there but no file to read, said as such (a guess had offered the very name typed; a
        # named pipe was waited on for ever).
        (["classify", str(photo_paths()["chelsea"]), "--weights", "dangling.npy"], 1,
         "dangling.npy: broken symbolic link (to nowhere.npy)\n"),
        (["weights", "info", "pipe.npy"], 1, "pipe.npy: not a regular file (a named pipe or a device); weights are read from a file"),
        (["weights", "convert", "pipe.npy", "p.npz"], 1, "pipe.npy: not a regular file"),
        # A file where a folder must be, and the other way round (click's "Directory 'afile' is a file.").
        (["evaluate", "afile", *weights], 2, "afile: is a file, not a folder"),
        (["classify", str(photo_paths()["chelsea"]), "--mean", "empty", *weights], 2, "empty: is a folder, not a file"),
        (["evaluate", "dangling.npy", *weights], 2, "dangling.npy: broken symbolic link (to nowhere.npy)"),
        (["evaluate", "afil", *weights], 2, "afil: no such folder\n"),  # afile is a file: no folder to guess
        (["evaluate", "afile/x", *weights], 2, "afile/x: afile is a file, not a folder"),  # (it said "not a directory")
        # Names as near as each other get no guess; case or Unicode form alone is a guess.
        (["classify", "img_5.png", *weights], 2, "img_5.png: no such file or folder\n"),
        (["classify", "PHOTO.PNG", *weights], 2, "PHOTO.PNG: no such file or folder; did you mean 'photo.png'?"),
        (["evaluate", "cafe\u0301", *weights], 2, "no such folder; did you mean 'caf\u00e9'?"),
        (["classify", str(photo_paths()["chelsea"]), "--weights", str(canonical_weights_file)[:-1]], 1,
         f"weights file not found; did you mean '{canonical_weights_file.parent}/"),
    ]
    # A mistyped setting in the environment, too.
    cases.append((["finetune", str(small_digits_folder), *weights], 1,
                  "ALEXFT_FEATURE_STORE_GB='ten': expected a number of gigabytes", dict(ALEXFT_FEATURE_STORE_GB="ten")))
    results = each_without_tensorflow([args for args, *_ in cases], tmp_path,
                                      [env[0] if env else {} for _, _, _, *env in cases])
    for (args, status, message, *_), done in zip(cases, results, strict=True):
        assert done.stderr.splitlines()[-1] == f"exit {status} False", (args, done.stderr)
        assert message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
    assert (precious / "thesis.txt").read_text() == "years of work" and (precious / "1").is_dir()
    assert (tmp_path / "afile").read_text() == "a file, not a folder"
    assert (tmp_path / "mine" / "metrics.json").read_text() == '{"accuracy": 0.93}'
    assert [path.name for path in others.iterdir()] == ["config.json"] and (others / "config.json").read_text() == "{}"
    assert (tmp_path / "photo.png").read_bytes() == photo_paths()["chelsea"].read_bytes()
    assert (tmp_path / "earlier.npz").read_bytes() == earlier
    assert (tmp_path / "small.npz").read_bytes() == small


def each_without_tensorflow(commands, cwd, environments=None):
    """What each command printed, as (stdout, stderr), run one after the other by EACH_WITHOUT_TENSORFLOW:
    each in a process of its own, in the environment given for it on top of this one's."""
    with tempfile.TemporaryDirectory() as folder:
        cases = [[[str(arg) for arg in args], env] for args, env in zip(commands, environments or [{}] * len(commands))]
        (Path(folder) / "cases.json").write_text(json.dumps(cases))
        done = subprocess.run([sys.executable, "-c", EACH_WITHOUT_TENSORFLOW, Path(folder) / "cases.json", folder],
                              capture_output=True, text=True, cwd=cwd, timeout=120 * len(commands))
        assert done.returncode == 0 and done.stdout == done.stderr == "", done.stderr
        return [SimpleNamespace(stdout=(Path(folder) / f"{number}.out").read_text(),
                                stderr=(Path(folder) / f"{number}.err").read_text()) for number in range(len(cases))]


def said_without_tensorflow(done):
    """(exit status, whether TensorFlow was imported, what was printed) of one of each_without_tensorflow's."""
    status, imported = done.stderr.splitlines()[-1].split()[1:]
    return int(status), imported == "True", done


def test_a_resume_the_run_refuses_or_has_nothing_to_do_for_is_said_before_tensorflow(fc8_run, digits_folder,
                                                                                       canonical_weights_file,
                                                                                       canonical_params, tmp_path):
    """Other layers, images or base weights than the run's are refused, and a finished run says
    so, without TensorFlow's start-up (a resume that goes on needs it, and is tested elsewhere)."""
    import hashlib

    from alexft import weights

    def sha256(path):
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()

    summary, finished_run = fc8_run
    run = tmp_path / "run"
    shutil.copytree(finished_run, run, ignore=shutil.ignore_patterns("model.npz", "last_layers.npz", "tensorboard"))
    changed_data = tmp_path / "digits"
    shutil.copytree(digits_folder, changed_data)
    extra = next((changed_data / "digit_3").iterdir())
    shutil.copy(extra, extra.with_name("another_" + extra.name))
    renamed_data = tmp_path / "renamed"
    shutil.copytree(digits_folder, renamed_data)
    renamed = next((renamed_data / "digit_3").iterdir())
    renamed.rename(renamed.with_name("renamed_" + renamed.name))
    other_weights = {name: (kernel.copy(), bias) for name, (kernel, bias) in canonical_params.items()}
    other_weights["conv1"][0][0, 0, 0, 0] += 1  # one value differs
    other = weights.save(weights.WeightSet(other_weights), tmp_path / "other.npz")
    refusals = [
        (["--train", "fc7,fc8"], '--train: was fc8, now fc7,fc8'),
        # Every change in one refusal: with layers given, the dropout's alone was named.
        (["--dropout", "0.3", "--train", "fc7,fc8"], '--train: was fc8, now fc7,fc8; --dropout: was 0.5, now 0.3)'),
        ([changed_data], f"images: was 240 training and 60 validation, now 241 and 60 (in {changed_data.absolute()})"),
        ([renamed_data], f"images: as many as before, but other files, classes or splits (in {renamed_data.absolute()}"),
        (["--weights", other], f"base weights: SHA-256 was {sha256(canonical_weights_file)[:12]}... "
                               f"({canonical_weights_file.absolute()}), now {sha256(other)[:12]}... ({other.absolute()})"),
    ]
    resumes = [["finetune", "--resume", "--output", run, *args]
               for args in [*(args for args, _ in refusals), ["--json"], ["--lr", "auto"], ["--epochs", "Auto"]]]
    results = iter(each_without_tensorflow(resumes, tmp_path))  # the commands in turn, as below
    # The way back is said for what changed: a resume given no option was told to give the run's own.
    remedies = ["resume with the run's own options"] * 2 + ["resume on the images it began with"] * 2 + [
        "give --weights the file it began with"]
    for (args, change), remedy, result in zip(refusals, remedies, results):
        status, imported, done = said_without_tensorflow(result)
        assert (status, imported) == (1, False), done.stderr
        assert f"Error: {run}: cannot resume with a different configuration ({change}" in done.stderr
        assert f"); {remedy}, or start a new run in another --output\n" in done.stderr, done.stderr
    status, imported, done = said_without_tensorflow(next(results))  # --json
    assert (status, imported) == (0, False), done.stderr
    count = summary["epochs"]
    assert f"{run}: already finished ({count} epoch{'' if count == 1 else 's'};" in done.stderr
    assert json.loads(done.stdout)["already_finished"] is True
    assert "--lr auto" not in done.stderr
    # --lr auto given on a resume was ignored in silence (a helper expected a new range test).
    status, imported, done = said_without_tensorflow(next(results))  # --lr auto
    assert (status, imported) == (0, False), done.stderr
    assert (f"alexft: note: --lr auto keeps a resumed run's rate ({summary['lr_found']:.3g}): the range test runs once, "
            "before a run's first epoch; give a number for a new rate") in done.stderr
    # --epochs auto on a resume was auto's count for a new run (67 here, on the feature cache), so
    # this finished run was refused as one asked to train longer without its checkpoint.
    status, imported, done = said_without_tensorflow(next(results))  # --epochs Auto
    assert (status, imported) == (0, False), done.stderr
    assert (f"alexft: note: --epochs auto keeps a resumed run's {count} epochs: give a number to change them\n"
            f"alexft: {run}: already finished ({count} epochs;") in done.stderr
    # A run begun before an option existed went by its default: resumed as such, not refused as
    # "ten_crop_val: was null, now false"; asked otherwise now, refused as a change from it.
    config = json.loads((run / "config.json").read_text())
    del config["ten_crop_val"]
    (run / "config.json").write_text(json.dumps(config))
    # The base weights in another file holding the same arrays (the .npy converted to .npz, as
    # commands.md shows) were refused as other weights; `other` above differs in one value.
    same = weights.save(weights.WeightSet(canonical_params), tmp_path / "same.npz")
    results = each_without_tensorflow([["finetune", "--resume", "--output", run],
                                       ["finetune", "--resume", "--output", run, "--ten-crop"],
                                       ["finetune", "--resume", "--output", run, "--weights", same]], tmp_path)
    status, imported, done = said_without_tensorflow(results[0])
    assert (status, imported) == (0, False) and f"{run}: already finished" in done.stderr, done.stderr
    status, imported, done = said_without_tensorflow(results[1])
    assert (status, imported) == (1, False)
    assert "cannot resume with a different configuration (--ten-crop: was off, now on)" in done.stderr
    status, imported, done = said_without_tensorflow(results[2])
    assert (status, imported) == (0, False) and f"{run}: already finished" in done.stderr, done.stderr
    assert (f"alexft: the base weights are read from {same.absolute()}, which holds the same arrays as "
            f"{canonical_weights_file.absolute()}, the file the run began with") in done.stderr


def test_a_finished_run_whose_weights_or_images_have_gone_is_still_said_to_be_finished(fc8_run, canonical_weights_file,
                                                                                         tmp_path):
    """Resuming a finished run needs neither its base weights nor its images: it has nothing left
    to do. Once its weights file was deleted, the resume was refused ("give --weights"), sending a
    user after a 233 MB file only to learn the run was done. A run that can still go on (its kept
    checkpoint, more epochs asked) still needs them, and still says so; without its checkpoint,
    more epochs get the way to train longer."""
    from alexft.train import finetune

    summary, finished_run = fc8_run
    count = summary["epochs"]
    gone_weights, gone_images = tmp_path / "gone.npz", tmp_path / "gone_digits"
    runs = {}
    for name, change in (("weights", {"weights": str(gone_weights)}), ("images", {"data_dir": str(gone_images)})):
        runs[name] = tmp_path / name
        shutil.copytree(finished_run, runs[name], ignore=shutil.ignore_patterns("tensorboard"))
        config = json.loads((runs[name] / "config.json").read_text())
        (runs[name] / "config.json").write_text(json.dumps({**config, **change}))
    no_checkpoint = tmp_path / "no_checkpoint"
    shutil.copytree(runs["weights"], no_checkpoint)
    (no_checkpoint / "checkpoint.npz").unlink()
    results = iter(each_without_tensorflow([["finetune", "--resume", "--output", runs["weights"]],
                                            ["finetune", "--resume", "--output", runs["images"], "--json"],
                                            ["finetune", "--resume", "--output", runs["weights"], "--epochs", count + 5],
                                            ["finetune", "--resume", "--output", no_checkpoint, "--epochs", count + 5]],
                                           tmp_path))
    for run in (runs["weights"], runs["images"]):
        status, imported, done = said_without_tensorflow(next(results))
        assert (status, imported) == (0, False), done.stderr
        assert done.stderr.splitlines()[0] + "\n" == (f"alexft: {run}: already finished ({count} epochs; model.npz holds epoch "
                               f"{summary['best_epoch']}); nothing to resume; its checkpoint is kept: --epochs N over "
                               f"{count} trains it further\n")
        assert str(run) in done.stdout  # where it is now: the run was copied (it said the first run's folder)
    assert json.loads(done.stdout)["already_finished"] is True  # (--json)
    status, imported, done = said_without_tensorflow(next(results))  # it could go on: the file is needed
    assert (status, imported) == (1, False)
    assert f"the weights it began from, {gone_weights}, are not there; give --weights" in done.stderr, done.stderr
    status, imported, done = said_without_tensorflow(next(results))
    assert (status, imported) == (1, False)
    assert (f"Error: {no_checkpoint}: finished after {count} epochs and its checkpoint was removed; to train longer, "
            f"start a new run from its model") in done.stderr, done.stderr
    heard = []
    returned = finetune(resume=True, output=runs["weights"], log=heard.append)
    assert returned["already_finished"] is True and returned["best_epoch"] == summary["best_epoch"]
    assert heard == [f"{runs['weights']}: already finished ({count} epochs; model.npz holds epoch {summary['best_epoch']}); "
                     f"nothing to resume; its checkpoint is kept: epochs=N over {count} trains it further"]
    from alexft.errors import TrainingError

    with pytest.raises(TrainingError, match="are not there; pass weights=PATH: that file, or another"):  # not --weights
        finetune(resume=True, output=runs["weights"], epochs=count + 5, log=heard.append)


def test_a_resume_on_the_same_weights_in_another_file_goes_on_and_says_so_once(fc8_run, canonical_weights_file,
                                                                               canonical_params, tmp_path):
    """The note was said twice: by the command's check before TensorFlow's start-up, and by the run."""
    _, finished_run = fc8_run
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)  # with its checkpoint (--keep-checkpoint): one epoch more goes on
    same = weights_io.save(weights_io.WeightSet(canonical_params), tmp_path / "same.npz")
    done = subprocess.run([sys.executable, "-m", "alexft", "finetune", "--resume", "--output", str(run), "--weights",
                           str(same), "--epochs", "31", "--no-progress"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count(f"alexft: the base weights are read from {same.absolute()}, which holds the same arrays "
                             f"as {canonical_weights_file.absolute()}, the file the run began with\n") == 1, done.stderr
    assert (run / "history.csv").read_text().splitlines()[-1].startswith("31,")


def test_the_command_starts_tensorflow_without_scikit_learn_and_the_library_leaves_it(canonical_weights_file):
    """Keras imports scikit-learn, when it is installed (as here, for the tests), as TensorFlow
    starts: 1.3 s of every command's start-up, for wrappers no command uses. The executable goes
    without it and answers the same; `import alexft` in a user's process changes nothing."""
    from importlib.metadata import entry_points

    assert entry_points(group="console_scripts")["alexft"].value == "alexft.__main__:run"  # (which runs alexft.cli's)
    photo = photo_paths()["chelsea"]
    args = ["classify", "--runtime", "tensorflow", "--json", str(photo), "--weights", str(canonical_weights_file)]
    script = ("import atexit, sys\nfrom alexft.cli import run\n"  # (run ends the process after the exit functions)
              "atexit.register(lambda: print('at exit', 'tensorflow' in sys.modules, sys.modules.get('sklearn', 'absent'),"
              " file=sys.stderr))\nrun()\n")
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stderr.splitlines()[-1] == "at exit True None", done.stderr
    assert json.loads(done.stdout) == json.loads(run(*args).stdout)  # this process has scikit-learn loaded
    library = subprocess.run([sys.executable, "-c", "import alexft, tensorflow, sys; print(sys.modules['sklearn'].__name__)"],
                             capture_output=True, text=True, timeout=300)
    assert library.stdout.strip() == "sklearn", library.stderr


def test_ctrl_c_while_the_commands_are_imported_is_a_stop_not_a_traceback():
    """A Ctrl-C in the first ~0.15 s of `alexft ...`, while Python imports click and the commands,
    printed Python's traceback of the import (7 of 10 tries at 0.05-0.17 s). The stop lands in
    that import here: a finder that raises it as click is looked for."""
    script = ("import sys\n"
              "class Stop:\n"
              "    def find_spec(self, name, path=None, target=None):\n"
              "        if name == 'click':\n"
              "            raise KeyboardInterrupt\n"
              "sys.meta_path.insert(0, Stop())\n"
              "from alexft.__main__ import run\n"  # what the executable runs (setup.cfg)
              "run()\n")
    done = subprocess.run([sys.executable, "-c", script, "classify", "photo.jpg"], capture_output=True, text=True,
                          timeout=120)
    assert (done.returncode, done.stderr) == (-signal.SIGINT, "alexft: interrupted\n")  # killed by it: a loop stops


def test_ctrl_c_during_classify_exits_130_and_keeps_the_lines_already_printed(canonical_weights_file, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for index in range(600):
        shutil.copy(photo_paths()["coffee"], folder / f"coffee_{index:03d}.png")
    output = tmp_path / "out.jsonl"
    with open(output, "w") as stdout:
        process = subprocess.Popen([ALEXFT, "classify", str(folder), "--json", "--batch-size", "8", "--weights",
                                    str(canonical_weights_file)], stdout=stdout, stderr=subprocess.PIPE, text=True,
                                   preexec_fn=as_at_a_terminal)
        deadline = time.monotonic() + 300
        while output.stat().st_size == 0:  # wait for the first results
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        stopped_at = time.monotonic()
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == stopped_by(signal.SIGINT), stderr
    assert time.monotonic() - stopped_at < 15
    assert stderr.strip().splitlines()[-1] == "alexft: interrupted" and "Aborted" not in stderr
    lines = output.read_text().splitlines()
    assert 0 < len(lines) < 600 and all(json.loads(line)["path"].endswith(".png") for line in lines)


def test_ctrl_c_while_the_arguments_are_read_stops_the_command_as_in_its_work(monkeypatch, tmp_path):
    """An argument's check imports and reads (convert's DESTINATION loads the weights tools): a
    Ctrl-C there got click's "Aborted!" and exit 1, so a shell's loop went on to the next call
    (a helper's, 3 of 3 tries at 0.25-0.3 s)."""
    from alexft.weights import tools

    def stopped(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(tools, "check_destination_name", stopped)
    result = run("weights", "convert", tmp_path / "any.npy", tmp_path / "out.npz")
    assert (result.exit_code, result.stdout) == (130, ""), result.output
    assert result.stderr.strip() == "alexft: interrupted"


def test_ctrl_c_in_a_shell_loop_of_commands_stops_the_loop(canonical_weights_file, tmp_path):
    """Ctrl-C reaches the shell and the command alike; bash waits for the command and goes on with
    its loop when the command merely exits 130, taking the stop as handled there. alexft did that,
    so a loop over photos or folders had to be stopped once per iteration. It now ends killed by
    the signal, as Python's own KeyboardInterrupt ends, and the shell stops with it."""
    many, one = tmp_path / "many", tmp_path / "one"
    for folder, count in ((many, 600), (one, 1)):
        folder.mkdir()
        for index in range(count):
            shutil.copy(photo_paths()["coffee"], folder / f"coffee_{index:03d}.png")
    output = tmp_path / "out.jsonl"
    output.touch()
    loop = (f'for folder in {shlex.quote(str(many))} {shlex.quote(str(one))}; do '
            f'{shlex.quote(ALEXFT)} classify "$folder" --json --batch-size 8 --weights '
            f'{shlex.quote(str(canonical_weights_file))} >> {shlex.quote(str(output))}; echo "after $folder: $?" >&2; '
            'done; echo "the loop went on to its end" >&2')
    shell = subprocess.Popen(["bash", "-c", loop], stderr=subprocess.PIPE, text=True, start_new_session=True,
                             preexec_fn=as_at_a_terminal)
    try:
        deadline = time.monotonic() + 300
        while output.stat().st_size == 0:  # the first command is classifying
            assert shell.poll() is None and time.monotonic() < deadline, shell.stderr.read()
            time.sleep(0.1)
        os.killpg(shell.pid, signal.SIGINT)  # what the terminal sends on Ctrl-C: the whole foreground group
        _, stderr = shell.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)
    assert shell.returncode == -signal.SIGINT, stderr
    assert stderr.strip().splitlines()[-1] == "alexft: interrupted", stderr
    assert "after" not in stderr and "the loop went on" not in stderr, stderr
    assert str(one) not in output.read_text()


@pytest.mark.parametrize("command", ["features", "classify", "evaluate"])
def test_sigterm_ends_a_command_as_ctrl_c_does_and_leaves_no_scratch_files(command, canonical_weights_file, tmp_path):
    """SIGTERM, what `kill`, `timeout`, systemd and container stops send, ends the command through
    Python: exit 143, `alexft: terminated`, the lines already printed kept whole, and the scratch
    file features writes into (sized for every image, beside the output) removed with its folder.
    The signal's default action would kill the process at once and leave them."""
    folder = tmp_path / "many"
    folder.mkdir()
    count = 1200 if command == "evaluate" else 600
    for index in range(count):
        shutil.copy(photo_paths()["coffee"], folder / f"coffee_{index:04d}.png")
    (tmp_path / "val.txt").write_text("".join(f"coffee_{index:04d}.png 504\n" for index in range(count)))
    results, printed = tmp_path / "results", tmp_path / "printed.jsonl"
    results.mkdir()
    arguments = {"features": ["features", str(folder), "--output", str(results / "fc7.npz")],
                 "classify": ["classify", str(folder), "--json"],
                 "evaluate": ["evaluate", "--list", str(tmp_path / "val.txt"), "--root", str(folder), "--json"]}[command]
    started = time.monotonic()
    # Under way: features' scratch file exists, classify has printed its first results; evaluate
    # prints only at the end, so it is stopped after a few seconds (its 1,200 images take longer).
    under_way = {"features": lambda: list(results.glob("*/features.npy")),
                 "classify": lambda: printed.stat().st_size,
                 "evaluate": lambda: time.monotonic() - started > 8}[command]
    with open(printed, "w") as stdout:
        process = subprocess.Popen([ALEXFT, *arguments, "--batch-size", "8", "--weights", str(canonical_weights_file)],
                                   stdout=stdout, stderr=subprocess.PIPE, text=True)
        while not under_way():
            assert process.poll() is None and time.monotonic() - started < 300, process.communicate()
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == stopped_by(signal.SIGTERM), stderr
    assert stderr.strip().splitlines()[-1] == "alexft: terminated"
    assert list(results.iterdir()) == []
    lines = printed.read_text().splitlines()
    if command == "classify":
        assert 0 < len(lines) < count and all(json.loads(line)["path"].endswith(".png") for line in lines)
    else:
        assert lines == []


@pytest.mark.parametrize("command", ["classify", "evaluate", "export", "finetune"])
def test_sigterm_during_tensorflows_start_up_is_said_and_shows_none_of_its_chatter(
        command, canonical_weights_file, small_digits_folder, tmp_path):
    """A SIGTERM in the seconds `import tensorflow` takes ends the command as at any other time
    (`alexft: terminated`, exit 143), and what TensorFlow's C++ start-up printed while stderr
    was held back stays held back: it is shown only for a start-up that fails."""
    weights = ["--weights", str(canonical_weights_file)]
    arguments = {"classify": ["classify", str(photo_paths()["coffee"]), "--runtime", "tensorflow"],
                 "evaluate": ["evaluate", "--list", str(tmp_path / "val.txt"), "--root", str(tmp_path)],
                 "export": ["export", str(tmp_path / "out")],
                 "finetune": ["finetune", str(small_digits_folder), "--output", str(tmp_path / "run"), "--json"]}[command]
    shutil.copy(photo_paths()["coffee"], tmp_path / "coffee.png")
    (tmp_path / "val.txt").write_text("coffee.png 504\n")
    environment = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}  # held back
    process = subprocess.Popen([ALEXFT, *arguments, *weights], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=environment)
    started, maps = time.monotonic(), Path(f"/proc/{process.pid}/maps")
    while "_pywrap_tensorflow_internal" not in maps.read_text():  # TensorFlow's library is being loaded
        assert process.poll() is None and time.monotonic() - started < 120, process.communicate()
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == stopped_by(signal.SIGTERM), stderr
    said = "terminated before training started; no run folder was kept" if command == "finetune" else "terminated"
    assert stderr.strip().splitlines()[-1] == f"alexft: {said}", stderr
    assert "Traceback" not in stderr and "oneDNN" not in stderr and "cpu_feature_guard" not in stderr, stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()
    if command == "finetune":  # --json: stdout was empty when the stop came before the run was entered
        assert json.loads(stdout) == {"stopped_by": "SIGTERM", "run": None, "model": None, "message": said, "finished": False}
    else:
        assert stdout == ""


@pytest.mark.parametrize("command", ["classify", "evaluate", "export", "finetune"])
def test_a_sigterm_swallowed_by_tensorflows_start_up_stops_the_command_before_any_work(
        command, canonical_weights_file, small_digits_folder, tmp_path, monkeypatch):
    """Under load in CI a SIGTERM sent while TensorFlow was being imported let classify print its
    answer and only then exit 143: the signal's exception had landed where TensorFlow's import
    code swallows it. Simulated here: the signal is recorded, its exception never arrives."""
    import alexft.quiet
    from alexft import interrupts

    real_import = alexft.quiet.import_tensorflow_quietly

    def import_while_a_sigterm_is_swallowed():
        interrupts.note(signal.SIGTERM)
        return real_import()

    monkeypatch.setattr(alexft.quiet, "import_tensorflow_quietly", import_while_a_sigterm_is_swallowed)
    shutil.copy(photo_paths()["coffee"], tmp_path / "coffee.png")
    (tmp_path / "val.txt").write_text("coffee.png 504\n")
    arguments = {"classify": ["classify", str(tmp_path / "coffee.png"), "--runtime", "tensorflow"],
                 "evaluate": ["evaluate", "--list", str(tmp_path / "val.txt"), "--root", str(tmp_path)],
                 "export": ["export", str(tmp_path / "out")],
                 "finetune": ["finetune", str(small_digits_folder), "--output", str(tmp_path / "run")]}[command]
    result = CliRunner().invoke(main, [*arguments, "--weights", str(canonical_weights_file)], catch_exceptions=False)
    said = "terminated before training started; no run folder was kept" if command == "finetune" else "terminated"
    assert result.exit_code == 143 and result.stderr.splitlines()[-1] == f"alexft: {said}", result.output
    assert result.stdout == ""
    assert sorted(path.name for path in tmp_path.iterdir()) == ["coffee.png", "val.txt"]


def test_finetune_json_says_a_ctrl_c_as_soon_as_the_command_has_begun(small_digits_folder, canonical_weights_file,
                                                                      tmp_path):
    """Ctrl-C in finetune's first seconds (TensorFlow's import) printed nothing on stdout with
    --json: a script found no `stopped_by` to read. Sent as soon as the first line is said."""
    process = subprocess.Popen([ALEXFT, "finetune", str(small_digits_folder), "--weights", str(canonical_weights_file),
                                "--output", str(tmp_path / "run"), "--json"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, preexec_fn=as_at_a_terminal)
    first = process.stderr.readline()
    assert " classes, " in first, first
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == stopped_by(signal.SIGINT), first + stderr
    said = "interrupted before training started; no run folder was kept"
    assert stderr.strip().splitlines()[-1] == f"alexft: {said}", stderr
    assert json.loads(stdout) == {"stopped_by": "SIGINT", "run": None, "model": None, "message": said, "finished": False}
    assert not (tmp_path / "run").exists()


def test_finetune_json_says_a_ctrl_c_that_surfaced_as_another_error_and_keeps_a_resumed_run(tmp_path, monkeypatch):
    """A Ctrl-C inside TensorFlow's import can come out as a RuntimeError (fail_cleanly): with
    --json still a stop, here of a resume, whose folder stays as it was."""
    import alexft.quiet
    from alexft import interrupts

    def import_stopped():
        interrupts.note(signal.SIGINT)
        raise RuntimeError("Could not import original test/binary location")  # what TensorFlow's import raised

    monkeypatch.setattr(alexft.quiet, "import_tensorflow_quietly", import_stopped)
    monkeypatch.setattr("alexft.cli.train._check_before_training", lambda *args: (SimpleNamespace(
        class_names=["a", "b"], train=[1], val=[]), SimpleNamespace(path="w.npz"), None))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(run_config(data_dir=str(tmp_path)))
    result = CliRunner().invoke(main, ["finetune", "--resume", "--output", str(run), "--json", "--lr", "0.01"],
                                catch_exceptions=False)
    said = "interrupted before training resumed; the run folder is as it was"
    assert result.exit_code == 130 and result.stderr.splitlines()[-1] == f"alexft: {said}", result.output
    assert json.loads(result.stdout) == {"stopped_by": "SIGINT", "run": str(run), "model": None, "message": said, "finished": False}


@pytest.mark.parametrize("command", ["classify", "finetune", "finetune's range test"])
def test_a_ctrl_c_swallowed_mid_run_stops_the_command_at_the_next_batch(
        command, canonical_weights_file, small_digits_folder, tmp_path, monkeypatch):
    """A user's Ctrl-C landed in a weakref callback while finetune cached features ("Exception
    ignored in: ... raise KeyboardInterrupt"), and the run went on through every epoch.
    Simulated: the signal is noted as the handler notes it, its exception never arrives."""
    from alexft import interrupts, predict, train_data, trainer

    def swallowing(function):
        def run(*args, **kwargs):
            interrupts.note(signal.SIGINT)
            return function(*args, **kwargs)
        return run

    if command == "classify":
        monkeypatch.setattr(predict.Predictor, "probabilities", swallowing(predict.Predictor.probabilities))
        arguments = ["classify", str(small_digits_folder), "--runtime", "tensorflow", "--batch-size", "2"]
    else:  # while the features are cached, or after, in the range test (no batch loop of images there)
        where = (train_data, "view_features") if command == "finetune" else (trainer.Trainer, "_find_rate")
        monkeypatch.setattr(*where, swallowing(getattr(*where)))
        arguments = ["finetune", str(small_digits_folder), "--output", str(tmp_path / "run"), "--epochs", "1"]
    result = CliRunner().invoke(main, [*arguments, "--weights", str(canonical_weights_file)], catch_exceptions=False)
    assert result.exit_code == 130, result.output
    last = result.stderr.splitlines()[-1]
    if command == "classify":  # the first batch's two answers, then the stop
        assert [line for line in result.stdout.splitlines() if not line.startswith(" ")] == \
               [str(path) for path in sorted(small_digits_folder.glob("*/*.png"))[:2]], result.stdout
        assert last == "alexft: interrupted", result.stderr
    elif command == "finetune":
        assert last == "alexft: interrupted before the first epoch ended; no run folder was kept", result.stderr
    else:  # the range test ends its steps first (no batch loop of images there), and its choice is said
        assert re.fullmatch(r"alexft: interrupted before the first epoch ended; no run folder was kept; the range test "
                            r"had chosen base rate (\S+): --lr \1 starts at it without the test \(with Caffe's weight "
                            r"decay and bias rates, which --lr auto scales to the rate it measures\)", last), result.stderr
    if command != "classify":
        assert not (tmp_path / "run").exists()


def test_features_stopped_by_ctrl_c_says_its_file_was_not_written_or_is_as_it_was(canonical_weights_file, tmp_path,
                                                                                   monkeypatch):
    """A helper's Ctrl-C in `features` printed only "alexft: interrupted": whether the output
    was half written, or an earlier one lost, was left to guess."""
    from alexft.model import InferenceFunction

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chelsea", "coffee"):
        shutil.copy(photo_paths()[name], folder / f"{name}.png")
    arguments = ["features", str(folder), "--layer", "fc8", "--weights", str(canonical_weights_file), "-o"]
    assert CliRunner().invoke(main, [*arguments, str(tmp_path / "earlier.npz")]).exit_code == 0
    kept = (tmp_path / "earlier.npz").read_bytes()

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(InferenceFunction, "__call__", stopped)
    for output, said in ((tmp_path / "new.npz", "not written"),
                         (tmp_path / "earlier.npz", "not replaced, the earlier file is as it was")):
        result = CliRunner().invoke(main, [*arguments, str(output), "--force"])
        assert result.exit_code == 130, result.output
        assert result.stderr.splitlines()[-2:] == [f"alexft: {output}: {said}", "alexft: interrupted"], result.stderr
    assert not (tmp_path / "new.npz").exists() and (tmp_path / "earlier.npz").read_bytes() == kept


def test_what_a_start_up_printed_is_shown_when_it_fails_not_when_it_is_stopped(capfd):
    """In CI a SIGTERM swallowed inside TensorFlow's import came out as another error, and the
    held-back start-up lines were shown as if the start-up had failed on its own."""
    from alexft import interrupts
    from alexft.quiet import stderr_held_back

    cases = ((ImportError("libcudart.so: cannot open"), None, True), (KeyboardInterrupt(), None, False),
             (ImportError("partially initialized module 'tensorflow'"), signal.SIGTERM, False))
    for stop, noted, shown in cases:
        interrupts.clear()
        if noted:
            interrupts.note(noted)
        with pytest.raises(type(stop)):
            with stderr_held_back():
                os.write(2, b"I0000 cpu_feature_guard.cc: oneDNN custom operations are on\n")
                raise stop
        interrupts.clear()
        assert ("oneDNN custom operations" in capfd.readouterr().err) is shown, stop


def test_what_alexft_shows_while_a_librarys_stderr_is_held_back_reaches_the_real_one():
    """The int8 converter's silent seconds: alexft's bar over its calibration images goes to the
    stream stderr_held_back yields, the library's lines on descriptor 2 are held back."""
    program = ("import os, sys\nfrom alexft.quiet import stderr_held_back\n"
               "with stderr_held_back() as shown:\n"
               "    os.write(2, b'a library line\\n')\n"
               "    shown.write('alexft: shown meanwhile\\n')\n"
               "    print('mine too', file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(__file__))))
    assert result.returncode == 0 and result.stderr.splitlines() == ["alexft: shown meanwhile"], result.stderr


def test_results_on_a_terminal_never_land_inside_the_progress_bar(canonical_weights_file, tmp_path):
    """stdout and stderr on one terminal, as a user runs classify: the bar is cleared before each
    result and drawn again after, so every result line reads as it would without a bar."""
    import os
    import pty

    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(24):
        shutil.copy(photo_paths()["coffee"], folder / f"coffee_{index:02d}.png")
    # A damaged JPEG's note, said from a decoding thread mid-bar, is a line of its own too
    from test_preprocess import damaged_jpeg
    (folder / "coffee_25.jpg").write_bytes(damaged_jpeg(3))
    controller, terminal = pty.openpty()
    process = subprocess.Popen([ALEXFT, "classify", str(folder), "--batch-size", "4", "--top-k", "1", "--weights",
                                str(canonical_weights_file)], stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal,
                               env=dict(os.environ, COLUMNS="120"))
    os.close(terminal)
    written = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the child closed the terminal (EIO)
            break
        if not chunk:
            break
        written += chunk
    os.close(controller)
    assert process.wait(timeout=120) == 0, written.decode(errors="replace")[-2000:]
    screen = _as_a_terminal_shows(written.decode("utf-8", errors="replace"))
    paths = [line for line in screen if "coffee_" in line and "warning" not in line]
    assert paths == [str(folder / f"coffee_{index:02d}.png") for index in range(24)] + [str(folder / "coffee_25.jpg")], \
        "\n".join(screen)
    assert any("img/s" in line for line in screen)  # a bar was drawn
    assert f"alexft: warning: {folder / 'coffee_25.jpg'}: damaged JPEG data, used as decoded (Corrupt JPEG data: " \
           "premature end of data segment)" in screen, "\n".join(screen)


def _as_a_terminal_shows(text):
    """The lines a terminal shows for `text`: a carriage return goes back to the line's start,
    and what follows overwrites what was there."""
    import re

    lines = []
    for raw in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).split("\n"):
        line, cursor = [], 0
        for char in raw:
            if char == "\r":
                cursor = 0
                continue
            if cursor < len(line):
                line[cursor] = char
            else:
                line.append(char)
            cursor += 1
        lines.append("".join(line).rstrip())
    return lines


def test_ctrl_c_that_surfaces_as_another_error_still_exits_130():
    """Ctrl-C during TensorFlow's import or graph building can come out as a RuntimeError or a
    TypeError (seen by hand in 2 of 25 early Ctrl-Cs): still an interruption, not a traceback.
    The same error without Ctrl-C stays an error."""
    import os

    from alexft.cli.common import fail_cleanly

    @click.command()
    @fail_cleanly
    def interrupted_inside_a_library():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler runs here
        except KeyboardInterrupt:
            raise RuntimeError("Could not import original test/binary location")  # what TensorFlow's import raised
        pytest.fail("no KeyboardInterrupt")

    @click.command()
    @fail_cleanly
    def failing():
        raise RuntimeError("a bug")

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as at a terminal, also under nohup
    try:
        result = CliRunner().invoke(interrupted_inside_a_library, [])
        assert result.exit_code == 130 and result.stderr.strip() == "alexft: interrupted", result.output
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back after the command
        result = CliRunner().invoke(failing, [])
        assert isinstance(result.exception, RuntimeError) and result.exit_code == 1
    finally:
        signal.signal(signal.SIGINT, previous)


def test_sigterm_that_surfaces_as_another_error_still_exits_143():
    """In CI a SIGTERM inside the TF Lite converter came out as a TypeError from the converter's
    fallback path, and export ended in a traceback, exit 1: a SIGTERM the command took is still
    a termination whatever error follows it. The same error without SIGTERM stays an error."""
    import os

    from alexft.cli.common import fail_cleanly, terminating_cleanly

    @click.command()
    @fail_cleanly
    @terminating_cleanly()
    def terminated_inside_a_library():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs here
        except BaseException:
            raise TypeError("'NoneType' object is not callable")  # what the converter's fallback raised
        pytest.fail("no Terminated")

    @click.command()
    @fail_cleanly
    @terminating_cleanly()
    def failing():
        raise TypeError("a bug")

    default = signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(terminated_inside_a_library, [])
    assert result.exit_code == 143 and result.stderr.strip() == "alexft: terminated", result.output
    assert signal.getsignal(signal.SIGTERM) == default  # put back after the command
    result = CliRunner().invoke(failing, [])  # a fresh command: the earlier SIGTERM is not counted
    assert isinstance(result.exception, TypeError) and result.exit_code == 1


def test_the_librarys_notes_are_the_commands_own_lines_even_when_warnings_are_errors(
        monkeypatch, canonical_weights_file, tmp_path):
    """A note the library gives Python callers as a warning came out of the command line in
    Python's form, naming a line of contextlib's, and as a traceback under PYTHONWARNINGS=error."""
    import warnings

    from alexft import data
    from alexft.preprocess import warn_user

    listed = data.images_with_labels

    def listing_with_a_note(*args, **kwargs):
        warn_user("a note for the user")
        return listed(*args, **kwargs)

    monkeypatch.setattr(data, "images_with_labels", listing_with_a_note)
    image = tmp_path / "one.png"
    shutil.copy(photo_paths()["chelsea"], image)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as PYTHONWARNINGS=error
        result = run("features", image, "--layer", "pool1", "-o", tmp_path / "f.npz", "--weights", canonical_weights_file)
        assert result.exit_code == 0, result.stderr
        assert "alexft: warning: a note for the user" in result.stderr.splitlines()
        assert "Warning" not in result.stderr and "contextlib" not in result.stderr
        with pytest.raises(UserWarning, match="a note"):  # the command's display ends with it
            warn_user("a note")


def test_features_leaves_no_folder_it_made_when_nothing_is_written(canonical_weights_file, tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    result = run("features", empty, "--layer", "pool1", "-o", tmp_path / "new" / "sub" / "f.npz", "--weights",
                 canonical_weights_file)
    assert result.exit_code == 1 and "no features written" in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["empty.jpg"]  # new/sub/ was made, then removed
    (tmp_path / "mine").mkdir()  # a folder that was there stays
    run("features", empty, "--layer", "pool1", "-o", tmp_path / "mine" / "f.npz", "--weights", canonical_weights_file)
    assert (tmp_path / "mine").is_dir()


def test_features_exits_1_naming_each_input_it_could_not_use(canonical_weights_file, tmp_path):
    good = tmp_path / "good.png"
    shutil.copy(photo_paths()["chelsea"], good)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    result = run("features", good, empty, "--layer", "pool1", "--output", tmp_path / "f.npz", "--weights",
                 canonical_weights_file)
    assert result.exit_code == 1
    assert f"error: {empty}: empty file" in result.stderr
    assert "1 of 2 inputs could not be used" in result.stderr
    with np.load(tmp_path / "f.npz") as stored:
        assert stored["features"].shape == (1, 27, 27, 96) and stored["paths"].tolist() == [str(good)]
    result = run("features", good, "--layer", "pool2", "--output", tmp_path / "p2.npz", "--weights", canonical_weights_file)
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "p2.npz") as stored:
        assert stored["features"].shape == (1, 13, 13, 256)
    # No usable input at all: nothing is written, and with --force an earlier file stays as it was.
    result = run("features", empty, "--layer", "pool1", "--output", tmp_path / "p2.npz", "--force", "--weights",
                 canonical_weights_file)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.splitlines()[-2:] == [  # each input's error, then what it means for the output
        f"error: {empty}: empty file", f"alexft: no features written to {tmp_path / 'p2.npz'}: its one input could not be used"]
    assert "Warning" not in result.stderr
    with np.load(tmp_path / "p2.npz") as stored:
        assert stored["features"].shape == (1, 13, 13, 256)
    # An existing output is replaced only when asked to (a refusal is in the pre-TensorFlow table).
    result = run("features", good, "--layer", "pool1", "--output", tmp_path / "p2.npz", "--force", "--weights",
                 canonical_weights_file)
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "p2.npz") as stored:
        assert stored["features"].shape == (1, 27, 27, 96)
    # Images beside sub-folders belong to no class: the folder is read as plain images, all of them.
    mixed = tmp_path / "mixed"
    (mixed / "old").mkdir(parents=True)
    shutil.copy(good, mixed / "top.png")
    shutil.copy(good, mixed / "old" / "below.png")
    result = run("features", mixed, "--layer", "pool1", "--output", tmp_path / "new" / "mixed.npz", "--weights",
                 canonical_weights_file)
    assert result.exit_code == 0, result.output
    assert f"alexft: note: {mixed} holds images beside its sub-folders, so it is read as plain images" in result.stderr
    with np.load(tmp_path / "new" / "mixed.npz") as stored:  # the missing folder "new" was made
        assert sorted(stored["paths"].tolist()) == [str(mixed / "old" / "below.png"), str(mixed / "top.png")]
        assert "labels" not in stored.files


def test_an_empty_folder_beside_an_image_is_named_in_a_warning(canonical_weights_file, tmp_path):
    (tmp_path / "nothing_here").mkdir()
    result = run("classify", photo_paths()["chelsea"], tmp_path / "nothing_here", "--weights", canonical_weights_file)
    assert result.exit_code == 0
    assert f"alexft: warning: {tmp_path / 'nothing_here'}: no images in this folder" in result.stderr
    result = run("classify", tmp_path / "nothing_here", "--weights", canonical_weights_file)  # alone: said once
    assert result.exit_code == 2 and result.stderr.splitlines()[-1] == f"Error: no images found in {tmp_path / 'nothing_here'}"
    assert "no images in this folder" not in result.stderr
    (tmp_path / "nothing_here" / "IMG_0001.HEIC").write_bytes(b"an iPhone photo")  # said, not skipped in silence
    result = run("classify", tmp_path / "nothing_here", "--weights", canonical_weights_file)
    assert result.exit_code == 2 and "no images found" in result.stderr
    assert (f"alexft: warning: {tmp_path / 'nothing_here'}: holds only photos in formats alexft does not read (e.g. "
            "IMG_0001.HEIC); convert them to JPEG or PNG") in result.stderr
    assert "no images in this folder" not in result.stderr  # one warning says it
    shutil.copy(photo_paths()["chelsea"], tmp_path / "nothing_here")
    result = run("classify", tmp_path / "nothing_here", "--weights", canonical_weights_file)
    assert result.exit_code == 0 and (f"alexft: warning: {tmp_path / 'nothing_here'}: 1 photo(s) in formats alexft "
                                      "does not read are left out (e.g. IMG_0001.HEIC); convert them to JPEG or PNG"
                                      ) in result.stderr


def test_images_beside_evaluates_class_folders_are_named_in_a_warning(canonical_weights_file, tmp_path):
    for name in ("n02123045", "n02124075"):  # tabby and Egyptian cat, by WordNet id
        (tmp_path / name).mkdir()
        shutil.copy(photo_paths()["chelsea"], tmp_path / name / "cat.png")
    shutil.copy(photo_paths()["coffee"], tmp_path / "loose.png")
    result = run("evaluate", tmp_path, "--json", "--weights", canonical_weights_file)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["images"] == 2
    assert (f"alexft: warning: {tmp_path}: 1 image(s) beside the class folders belong to no class and are left out "
            "(e.g. loose.png); evaluate reads <class>/<images>") in result.stderr


def test_an_image_on_standard_input_and_at_urls(canonical_weights_file, predictor):
    photo = photo_paths()["chelsea"].read_bytes()
    result = run("classify", "-", "--json", "--weights", canonical_weights_file, input=photo)
    assert result.exit_code == 0, result.output
    from_stdin = json.loads(result.stdout)
    assert from_stdin["path"] == "-"
    from_file = json.loads(run("classify", photo_paths()["chelsea"], "--json", "--weights", canonical_weights_file).stdout)
    assert from_stdin["predictions"] == from_file["predictions"]

    routes = {"/cat.png": ("ok", photo), "/page": ("ok", b"<!DOCTYPE html><html>cats</html>")}
    with serving(routes) as url:
        result = run("classify", f"{url}/cat.png", f"{url}/missing.png", f"{url}/page", "http://[broken", "--json",
                     "--weights", canonical_weights_file)
        big = UrlImage(f"{url}/cat.png", max_bytes=1000)
        with pytest.raises(Exception, match=rf"^{url}/cat.png: .*1,000-byte limit$"):
            big.read_bytes()
    with serving({"/slow.png": ("drip", photo)}) as slow:  # a byte every 0.2 s: each wait is short, the whole is not
        started = time.monotonic()
        with pytest.raises(Exception, match=rf"^{slow}/slow.png: no complete answer within 1.5 s \(\d bytes came\); "
                                            "the server is too slow$"):
            UrlImage(f"{slow}/slow.png", timeout=1.5).read_bytes()
        assert time.monotonic() - started < 3
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["path"] == f"{url}/cat.png" and lines[0]["predictions"] == from_file["predictions"]
    errors = [line["error"] for line in lines[1:]]
    assert errors[0] == f"{url}/missing.png: HTTP 404 Not Found"
    assert errors[1].startswith(f"{url}/page: ") and ("web page" in errors[1] or "HTML" in errors[1])
    assert errors[2].startswith("http://[broken: not a valid URL")
    assert all("\n" not in error for error in errors)
    assert "3 of 4 inputs could not be classified" in result.stderr


def test_urls_with_spaces_or_letters_a_browser_would_escape_are_fetched_and_a_bad_host_is_one_error(
        canonical_weights_file):
    """A URL pasted with a space ('my cat.png') crashed the whole run in http.client, every
    other input's result lost; it is sent escaped, as a browser sends it."""
    photo = photo_paths()["chelsea"].read_bytes()
    routes = {"/my%20cat.png": ("ok", photo), "/caf%C3%A9/x.png?size=big%20one": ("ok", photo)}
    with serving(routes) as url:
        given = [f"{url}/my cat.png", f"{url}/my%20cat.png", f"{url}/café/x.png?size=big one", "http://exa mple/x.png"]
        result = run("classify", *given, "--json", "--runtime", "tensorflow", "--weights", canonical_weights_file)
        assert [path for path, _ in url.requests] == ["/my%20cat.png", "/my%20cat.png", "/caf%C3%A9/x.png?size=big%20one"]
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["path"] for line in lines] == given  # named as given
    assert all("predictions" in line for line in lines[:3])
    assert lines[3]["error"] == "http://exa mple/x.png: not a valid URL (white space in the host name)"


def test_features_take_standard_input_and_urls_as_classify_does(canonical_weights_file, tmp_path):
    photo = photo_paths()["chelsea"].read_bytes()
    args = ["--layer", "pool5", "--weights", canonical_weights_file]
    result = run("features", photo_paths()["chelsea"], "--output", tmp_path / "file.npz", *args)
    assert result.exit_code == 0, result.output
    result = run("features", "-", "--output", tmp_path / "stdin.npz", *args, input=photo)
    assert result.exit_code == 0, result.output
    with serving({"/cat.png": ("ok", photo)}) as url:
        result = run("features", f"{url}/cat.png", f"{url}/missing.png", "--output", tmp_path / "url.npz", *args)
    assert result.exit_code == 1
    assert f"error: {url}/missing.png: HTTP 404 Not Found" in result.stderr.splitlines()
    with np.load(tmp_path / "file.npz") as file, np.load(tmp_path / "stdin.npz") as stdin, \
            np.load(tmp_path / "url.npz") as fetched:
        assert stdin["paths"].tolist() == ["-"] and fetched["paths"].tolist() == [f"{url}/cat.png"]
        assert file["features"].shape == (1, 6, 6, 256) and file["features"].any()
        np.testing.assert_array_equal(stdin["features"], file["features"])
        np.testing.assert_array_equal(fetched["features"], file["features"])


def test_every_option_is_described_and_layer_options_list_the_layers():
    def commands(group, prefix=""):
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                yield from commands(command, f"{prefix}{name} ")
            else:
                yield f"{prefix}{name}", command

    for name, command in commands(main):
        for param in command.params:
            if isinstance(param, click.Option) and param.name != "help":
                assert param.help, f"alexft {name} {param.opts[0]} has no description"
    finetune = main.commands["finetune"]
    for option in ("skip", "train"):
        help_text = next(param.help for param in finetune.params if param.name in (option, f"{option}_layers"))
        assert "conv1-conv5" in help_text and "fc6-fc8" in help_text
    layer = next(param for param in main.commands["features"].params if param.name == "layer")
    assert {"pool1", "pool2", "pool5", "fc7"} <= set(layer.type.choices)
    assert "pool1" in run("features", "--help").output


def test_every_commands_help_ends_with_examples_that_its_own_parser_accepts(tmp_path, monkeypatch):
    """Each example line is parsed by the command it names, in a folder holding the files it
    mentions: a misspelt option, a value outside a choice or a missing argument fails here."""
    from alexft.cli.examples import EXAMPLES

    monkeypatch.chdir(tmp_path)
    groups = [name for name, command in main.commands.items() if isinstance(command, click.Group)]
    shown = {name: run(*name.split(), "--help").output for name in EXAMPLES}
    assert set(EXAMPLES) >= {""} | {name for name in main.commands if name not in groups} | {
        f"{group} {name}" for group in groups for name in main.commands[group].commands}
    for name, examples in EXAMPLES.items():
        assert "Examples:" in shown[name], name
        for what, line in examples:
            assert f"    # {what}\n    {line}\n" in shown[name], (name, line)
            words = shlex.split(line)
            words = words[:next((i for i, word in enumerate(words) if word in "<>|"), len(words))]
            assert words[0] == "alexft"
            command, words, path = main, words[1:], []
            while isinstance(command, click.Group):
                path.append(words[0])
                command, words = command.commands[words[0]], words[1:]
            assert name in ("", " ".join(path)), f"'{line}' shown under alexft {name}"
            for word in words:  # the files and folders it names, so that exists=True checks pass
                if "://" in word or word.startswith("-") or "/" not in word and "." not in word[1:-1] \
                        or word.replace(".", "").isdigit():
                    continue
                target = tmp_path / word
                if target.exists():
                    continue
                if not Path(word).suffix:  # runs/flowers, photos/
                    target.mkdir(parents=True, exist_ok=True)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.touch()
            command.make_context(" ".join(path), words)  # raises click's UsageError on a mistake


def test_folders_that_are_not_imagenets_classes_are_said_before_the_default_weights_download(small_digits_folder,
                                                                                              tmp_path, monkeypatch):
    """`evaluate digits/` with no weights here tried the downloads (233 MB online) and only then
    said the folders are no ImageNet classes, which the default weights' classes always are."""
    monkeypatch.chdir(tmp_path)  # no bvlc_alexnet.* here, nor in the test's own cache
    with serving({"/bvlc_alexnet.npy": ("ok", b"\x93NUMPY" + bytes(1000))}) as url:
        monkeypatch.setenv("ALEXFT_WEIGHTS_URL", f"{url}/bvlc_alexnet.npy")
        result = run("evaluate", small_digits_folder)
        assert result.exit_code == 1, result.output
        assert f"{small_digits_folder}: folder(s) 'digit_0', " in result.stderr
        assert "none is an ImageNet class: evaluate a model fine-tuned on these folders" in result.stderr
        assert url.requests == []  # nothing asked of the server
        run("evaluate", tmp_path)  # (no class folders: refused before, as it was)
        assert url.requests == []


def test_wordnet_id_folders_are_imagenet_classes(canonical_weights_file, tmp_path):
    data = tmp_path / "imagenet_val"
    for wordnet_id, name in (("n02123045", "chelsea"), ("n07920052", "coffee")):  # tabby (281), espresso (967)
        (data / wordnet_id).mkdir(parents=True)
        shutil.copy(photo_paths()[name], data / wordnet_id / f"{name}.png")
    result = run("evaluate", data, "--json", "--weights", canonical_weights_file)
    assert result.exit_code == 0, result.output
    support = {row["name"]: row["support"] for row in json.loads(result.stdout)["centre"]["per_class"] if row["support"]}
    assert support == {"tabby, tabby cat": 1, "espresso": 1}
    (data / "kittens").mkdir()
    result = run("evaluate", data, "--weights", canonical_weights_file, "--json")  # empty: left out, said
    assert result.exit_code == 0 and json.loads(result.stdout)["images"] == 2, result.output
    assert (f"alexft: warning: {data}: 1 folder(s) with no images and named as no class of this model, left out: "
            "'kittens'") in result.stderr.splitlines()
    shutil.copy(photo_paths()["chelsea"], data / "kittens" / "tabby.png")
    result = run("evaluate", data, "--weights", canonical_weights_file)
    assert result.exit_code == 1
    assert ("folder(s) 'kittens' are not classes of this model (e.g. 'tench, Tinca tinca', 'goldfish, Carassius "
            "auratus', 'great white shark, white shark, man-eater, man-eating shark, Carcharodon carcharias', or "
            "WordNet ids such as 'n01440764')") in result.stderr
    assert "fine-tuned" not in result.stderr  # the others are ImageNet's: a typo, not another task
    shutil.move(data / "n02123045" / "chelsea.png", data / "kittens")
    for wordnet_id in ("n02123045", "n07920052"):  # the user's own classes only: another task
        shutil.rmtree(data / wordnet_id)
    result = run("evaluate", data, "--weights", canonical_weights_file)
    assert result.exit_code == 1
    assert ("none is an ImageNet class: evaluate a model fine-tuned on these folders (alexft finetune DATA_DIR, then "
            "its run's model.npz as the weights)\n") in result.stderr, result.stderr


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_interrupting_feature_caching_stops_soon_and_leaves_no_run_behind(signal_number, small_digits_folder,
                                                                          canonical_weights_file, tmp_path):
    """Ctrl-C, or SIGTERM alike, before the epochs (while the frozen layers' features are cached)."""
    run_folder = tmp_path / "run"
    command = [ALEXFT, "finetune", str(small_digits_folder), "--weights", str(canonical_weights_file), "--output",
               str(run_folder), "--epochs", "2", "--val-split", "0.2", "--progress"]
    empty_store = dict(os.environ, ALEXFT_FEATURE_STORE=str(tmp_path / "store"))  # the features are computed
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=as_at_a_terminal, env=empty_store)
    deadline, seen = time.monotonic() + 300, ""
    while "features" not in seen:  # the caching bar has started
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        seen += process.stderr.read(1)
    process.send_signal(signal_number)
    stopped_at = time.monotonic()
    _, stderr = process.communicate(timeout=120)
    waited = time.monotonic() - stopped_at
    assert process.returncode == stopped_by(signal_number), seen + stderr
    assert "no run folder was kept" in stderr.splitlines()[-1], stderr
    assert waited < 10, waited
    assert not run_folder.exists() or not any(run_folder.iterdir()), sorted(run_folder.iterdir())
    # A fresh start in the same folder is not refused (with the session's feature store, where the
    # features of these images are computed once for all the tests that train on them).
    result = run("finetune", small_digits_folder, "--weights", canonical_weights_file, "--output", run_folder,
                 "--epochs", "1", "--val-split", "0.2", "--lr", "0.001")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("terminal", [True, False], ids=["bar", "lines"])
def test_a_bar_interrupted_while_it_starts_is_collected_without_a_traceback(terminal, monkeypatch):
    """Ctrl-C can land in tqdm's own start-up (its first draw) before the bar's heartbeat exists.
    tqdm closes the half-made bar when it is collected; a failing close would print
    "Exception ignored in ... AttributeError" under the user's `alexft: interrupted`."""
    import gc

    from tqdm import tqdm

    from alexft import progress

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(progress, "_is_terminal", lambda stream: terminal)
    monkeypatch.setattr(tqdm, "refresh", interrupted)  # the first draw, inside tqdm.__init__
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    try:
        progress.progress_bar(40, desc="features")
    except KeyboardInterrupt:
        pass
    else:
        pytest.fail("the first draw was not reached")
    gc.collect()
    assert [str(item.exc_value) for item in unraisable] == []


def test_without_a_terminal_progress_is_a_line_every_interval(monkeypatch, capsys):
    from alexft import progress

    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.05)
    with progress.progress_bar(40, desc="features", unit="img") as bar:  # capsys: stderr is not a terminal
        for _ in range(40):
            time.sleep(0.005)
            bar.update(1)
    with progress.progress_bar(5, desc="quick", unit="img") as bar:  # done within the interval: silent
        bar.update(5)
    lines = capsys.readouterr().err.splitlines()
    assert 3 <= len(lines) <= 6, lines
    assert all(line.startswith("alexft: features: ") and "img/s]" in line for line in lines)
    assert lines[-1].startswith("alexft: features: 40/40 (100%)")
    counts = [int(line.split(": ")[2].split("/")[0]) for line in lines]
    assert counts == sorted(counts) and counts[-2] < counts[-1]  # the last line is not a repeat
    with progress.progress_bar(40, progress=False) as bar:
        bar.update(40)
    assert capsys.readouterr().err == ""


def test_a_task_that_ends_early_closes_with_one_line_and_no_time_left(monkeypatch, capsys):
    """The range test stops when the loss explodes (13 of 20 steps): its last line was printed
    twice when piped, the second still guessing the time left."""
    from alexft import progress

    class NoHeartbeat:  # lines only when the test asks for them
        def __init__(self, bar, interval):
            pass

        def stop(self):
            pass

    monkeypatch.setattr(progress, "_Heartbeat", NoHeartbeat)
    monkeypatch.setattr(progress, "LOG_INTERVAL", 0)  # a line at every update
    with progress.progress_bar(20, desc="range test", unit="step") as bar:
        bar.update(13)  # its line, then the task stops
    lines = capsys.readouterr().err.splitlines()[1:]  # (the first: 0/20 as it starts)
    assert len(lines) == 1 and lines[0].startswith("alexft: range test: 13/20 (65%) ["), lines
    with progress.progress_bar(20, desc="range test", unit="step") as bar:
        bar.update(5)
        monkeypatch.setattr(progress, "LOG_INTERVAL", 1000)
        bar.update(8)  # no line of its own: the closing line says where it stopped
    lines = capsys.readouterr().err.splitlines()[1:]
    assert [line.split(" [")[0] for line in lines] == ["alexft: range test: 5/20 (25%)", "alexft: range test: 13/20 (65%)"]
    assert "<" in lines[0] and "<" not in lines[1], lines  # the time left is guessed while it runs, not after


def test_progress_keeps_moving_while_one_slow_item_holds_the_count(monkeypatch, capsys):
    """The first batch of feature caching builds the model's graph, and under load one batch can
    take longer than the interval: lines (when piped) and redraws (on a terminal) go on."""
    from alexft import progress

    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.1)
    with progress.progress_bar(2, desc="caching", unit="img") as bar:  # stderr is not a terminal
        time.sleep(0.55)  # one item takes five intervals
        bar.update(2)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 4 and all(line.startswith("alexft: caching: 0/2 (0%) [") for line in lines[:-1]), lines
    assert lines[-1].startswith("alexft: caching: 2/2 (100%)")

    redraws = []
    monkeypatch.setattr(progress, "REDRAW_INTERVAL", 0.1)
    monkeypatch.setattr(progress, "_is_terminal", lambda stream: True)
    monkeypatch.setattr(progress._Bar, "refresh", lambda self, *args, **kwargs: redraws.append(self.n))
    with progress.progress_bar(2, desc="caching") as bar:
        time.sleep(0.55)
        assert len(redraws) >= 4 and set(redraws) == {0}
        bar.update(2)
    count = len(redraws)
    time.sleep(0.3)
    assert len(redraws) == count  # a closed bar is left alone


def test_learning_curves_mark_whole_epochs_only():
    from alexft.plots import curves_figure

    for epochs in (2, 3, 7, 30):
        history = [dict(epoch=epoch, train_loss=1 / epoch, train_accuracy=0.5, val_loss=2 / epoch, val_accuracy=0.4)
                   for epoch in range(1, epochs + 1)]
        for axes in curves_figure(history).axes:
            ticks = [tick for tick in axes.get_xticks() if 1 <= tick <= epochs]
            assert ticks and all(float(tick).is_integer() for tick in ticks), (epochs, ticks)


def test_the_install_adds_no_top_level_cli_module(tmp_path):
    """The command is alexft.cli (also `python -m alexft`); cli.py stays a shim in the checkout only."""
    done = subprocess.run([sys.executable, "-c", "import importlib.util, sys; print(importlib.util.find_spec('cli'))"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert done.stdout.strip() == "None", done.stdout
    done = subprocess.run([sys.executable, "-m", "alexft", "--help"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("Usage: alexft [OPTIONS] COMMAND")


def test_every_command_exits_1_naming_a_damaged_weights_file_or_a_dead_url(canonical_weights_file, small_digits_folder,
                                                                            tmp_path):
    """Status 1 and one `Error:` line naming the file (or URL) and the cause, for every command
    that reads weights, when the file is cut short, as an interrupted copy leaves it."""
    cut = tmp_path / "cut.npy"
    with open(canonical_weights_file, "rb") as whole:
        cut.write_bytes(whole.read(5_000_000))
    photo = photo_paths()["chelsea"]
    commands = [
        ["classify", photo, "--weights", cut],
        ["features", photo, "--output", tmp_path / "f.npz", "--weights", cut],
        ["evaluate", small_digits_folder, "--weights", cut],
        ["finetune", small_digits_folder, "--output", tmp_path / "run", "--weights", cut],
        ["export", tmp_path / "exported", "--weights", cut],
        ["weights", "info", cut],
        ["weights", "convert", cut, tmp_path / "converted.npz"],
    ]
    for args in commands:
        result = run(*args)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 1, (args, result.stderr)
        assert lines[-1].startswith(f"Error: {cut}: ") and "Traceback" not in result.stderr, (args, result.stderr)
    assert not (tmp_path / "run").exists() and not (tmp_path / "exported").exists()
    assert not (tmp_path / "f.npz").exists() and not (tmp_path / "converted.npz").exists()
    # With --json, one object on stdout says so too (a finetune --json gave a script nothing to parse)
    for args in commands:
        if args[0] in ("classify", "evaluate", "finetune") or args[:2] == ["weights", "info"]:
            result = run(*args, "--json")
            said = json.loads(result.stdout)
            assert result.exit_code == 1 and result.stdout.count("\n") == 1, (args, result.stdout)
            assert said.get("error", said.get("problem", "")).startswith(f"{cut}: "), (args, said)

    with serving({}) as url:  # every path answers 404
        missing = run("weights", "fetch", "--url", f"{url}/gone.npy", "--output", tmp_path / "w.npy")
    assert missing.exit_code == 1 and f"{url}/gone.npy" in missing.stderr and "404" in missing.stderr, missing.stderr
    assert not (tmp_path / "w.npy").exists()


def test_classify_evaluate_and_features_apply_a_mean_image_and_float_resizing(canonical_weights_file, tmp_path):
    """A mean image of the mean pixel everywhere gives the default results; a different one
    changes them: the file reaches each command's preprocessing. --resize float moves the
    probabilities a little, not at all with a 256x256 image (nothing to resize)."""
    from alexft.preprocess import MEAN_BGR
    from test_preprocess import write_binaryproto

    flat = write_binaryproto(tmp_path / "flat.binaryproto",
                             np.broadcast_to(MEAN_BGR[:, None, None], (3, 256, 256)).astype(np.float32))
    other = write_binaryproto(tmp_path / "other.binaryproto",
                              (np.random.default_rng(0).random((3, 256, 256)) * 255).astype(np.float32))
    photo, weights = photo_paths()["coffee"], ["--weights", canonical_weights_file]

    def probabilities(*mean):
        result = run("classify", photo, "--json", "--top-k", "1000", *weights, *mean)
        assert result.exit_code == 0, result.output
        return np.array([entry["probability"] for entry in sorted(json.loads(result.stdout)["predictions"],
                                                                  key=lambda entry: entry["label"])])

    default = probabilities()
    np.testing.assert_allclose(probabilities("--mean", flat), default, rtol=0, atol=1e-6)
    assert np.abs(probabilities("--mean", other) - default).max() > 1e-4
    assert 0 < np.abs(probabilities("--resize", "float") - default).max() < 1e-2
    square = tmp_path / "square.png"
    cv2.imwrite(str(square), cv2.resize(cv2.imread(str(photo)), (256, 256)))
    photo = square
    np.testing.assert_array_equal(probabilities("--resize", "float"), probabilities())
    photo = photo_paths()["coffee"]

    def fc7(name, *mean):
        assert run("features", photo, "--layer", "fc7", "--output", tmp_path / name, *weights, *mean).exit_code == 0
        return np.load(tmp_path / name)["features"]

    default_fc7 = fc7("default.npz")
    np.testing.assert_allclose(fc7("flat.npz", "--mean", flat), default_fc7, rtol=1e-5, atol=1e-5)
    assert not np.allclose(fc7("other.npz", "--mean", other), default_fc7, rtol=1e-3, atol=1e-3)
    listing = tmp_path / "val.txt"
    listing.write_text("".join(f"{photo_paths()[name]} {label}\n" for name, label in [("chelsea", 281), ("coffee", 967)]))
    reports = [json.loads(run("evaluate", "--list", listing, "--root", "/", "--json", *weights, *mean).stdout)
               for mean in ((), ("--mean", flat), ("--mean", other))]
    assert reports[0]["centre"]["log_loss"] == pytest.approx(reports[1]["centre"]["log_loss"], abs=1e-5)
    assert reports[0]["centre"]["log_loss"] != pytest.approx(reports[2]["centre"]["log_loss"], abs=1e-4)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full, a device whose writes fail as a full disk's do")
@pytest.mark.parametrize("arguments", [["weights", "info"], ["weights", "info", "--json"], ["--help"]],
                         ids=["text", "json", "help"])
def test_results_that_cannot_be_written_give_one_line_not_a_traceback(arguments, canonical_weights_file):
    """`alexft ... > results.json` on a full disk: one line saying standard output could not
    be written, exit 1; not a traceback, nor a second error when Python flushes at exit."""
    command = [ALEXFT, *arguments] + ([str(canonical_weights_file)] if arguments[0] == "weights" else [])
    with open("/dev/full", "w") as full:
        result = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        "alexft: error: the results could not be written to standard output: No space left on device"]


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("arguments, code", [(["--version"], 0), (["clasify"], 2)], ids=["done", "usage error"])
def test_a_stop_during_the_teardown_after_a_command_ended_keeps_its_exit_code(stop, arguments, code):
    """A user's Ctrl-C a moment after `export` printed its result gave exit 130 (the signal
    landed in TensorFlow's teardown). Simulated: the signal is sent from an exit handler, which
    then waits 20 s: a teardown that hangs. The process ends at once, with the command's code."""
    script = ("import atexit, os, signal, sys, time\n"
              "from alexft import cli\n"
              f"atexit.register(lambda: (os.kill(os.getpid(), signal.{stop}), time.sleep(20)))\n"
              f"sys.argv = ['alexft', *{arguments!r}]\n"
              "cli.run()\n")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == code and time.monotonic() - started < 15, done
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr, done.stderr
    assert done.stdout.startswith("alexft, version ") if code == 0 else "No such command 'clasify'" in done.stderr


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_just_after_the_result_is_printed_leaves_the_command_successful(stop, canonical_weights_file):
    """In TensorFlow's C++ teardown Python has restored the default actions: a Ctrl-C 0.05-0.5 s
    after classify printed its answer killed it (status -2; -15 for SIGTERM), and an export or a
    training run whose result was printed reported failure. The process now ends without it."""
    alexft = str(Path(sys.executable).parent / "alexft")
    command = [alexft, "classify", "--runtime", "tensorflow", "--json", str(photo_paths()["chelsea"]),
               "--weights", str(canonical_weights_file)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    answer = process.stdout.readline()
    time.sleep(0.2)
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0 and len(json.loads(answer)["predictions"]) == 5, (process.returncode, stderr)


def test_closed_standard_streams_are_said_or_tolerated_and_never_reused_for_files(canonical_weights_file, tmp_path):
    """`>&-` gave a double traceback ('NoneType' object has no attribute 'flush'); `2>&-` failed
    in silence. Either closed stream now loses only what was printed there (a closed stdout is
    said: features, finetune and export still write their files), and fd 1 and 2 stay off the
    files alexft opens, as TensorFlow's C++ logging writes to fd 2 whatever Python thinks."""
    photo = photo_paths()["chelsea"]
    command = f"'{ALEXFT}' classify '{photo}' --top-k 1 --weights '{canonical_weights_file}'"
    closed_stdout = subprocess.run(["bash", "-c", command + " >&-"], capture_output=True, text=True, timeout=300)
    assert closed_stdout.returncode == 0
    assert closed_stdout.stderr.strip() == ("alexft: warning: standard output is closed: what the command prints "
                                            "there is discarded")
    features = subprocess.run(["bash", "-c", f"'{ALEXFT}' features '{photo}' --output '{tmp_path / 'f.npz'}' "
                               f"--weights '{canonical_weights_file}' >&-"], capture_output=True, text=True, timeout=300)
    assert features.returncode == 0 and (tmp_path / "f.npz").is_file(), features.stderr
    closed_stderr = subprocess.run(["bash", "-c", command + " 2>&-"], capture_output=True, text=True, timeout=300)
    assert closed_stderr.returncode == 0 and closed_stderr.stdout.splitlines()[0] == str(photo), closed_stderr.stdout


def test_a_dangling_link_given_by_name_is_said_to_be_one(canonical_weights_file, tmp_path):
    """It was "no such file or folder" (exit 2), though `ls` lists it."""
    (tmp_path / "dangling.jpg").symlink_to("/nonexistent/x.jpg")
    photo = photo_paths()["chelsea"]
    result = run("classify", tmp_path / "dangling.jpg", photo, "--top-k", "1", "--runtime", "tensorflow", "--weights",
                 canonical_weights_file)
    assert result.exit_code == 1
    assert f"error: {tmp_path / 'dangling.jpg'}: broken symbolic link (to /nonexistent/x.jpg)" in result.stderr


def test_an_input_inside_a_folder_that_cannot_be_searched_is_one_error_line(canonical_weights_file, tmp_path,
                                                                          monkeypatch):
    """A user's file in a folder without search permission gave a traceback from the argument's
    check (Path.exists raised PermissionError). Simulated, as the tests may run as root."""
    locked = tmp_path / "locked" / "photo.png"
    real_exists = Path.exists

    real_is_dir = Path.is_dir

    def exists(self, *args, **kwargs):
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_exists(self, *args, **kwargs)

    def is_dir(self, *args, **kwargs):  # Python 3.11's is_dir raises it too (its review found)
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_is_dir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "exists", exists)
    monkeypatch.setattr(Path, "is_dir", is_dir)
    photo = photo_paths()["chelsea"]
    result = run("classify", locked, photo, "--top-k", "1", "--runtime", "tensorflow", "--weights",
                 canonical_weights_file)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stdout.splitlines()[0] == str(photo)
    assert f"error: {locked}: " in result.stderr and "alexft: 1 of 2 inputs could not be classified" in result.stderr


def _without_root_powers():
    """The command prefix that makes file permissions hold for this process's children: as
    root, setpriv drops the capabilities that bypass them."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: permissions cannot be made to hold")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]


# Runs alexft commands (a JSON list of argument lists) one after the other in this one process, as
# run() does in the tests' own, and prints what each gave as the last line: for commands that must
# run without root's powers, one process's start-up of TensorFlow rather than one each.
IN_ONE_PROCESS = """
import json, sys
from click.testing import CliRunner
from alexft.cli import main
said = []
for args in json.loads(sys.argv[1]):
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    said.append(dict(returncode=result.exit_code, stdout=result.stdout, stderr=result.stderr))
print(json.dumps(said))
"""


def run_without_root_powers(*commands):
    """What each command gave (returncode, stdout, stderr), run in one process whose file permissions hold."""
    done = subprocess.run([*_without_root_powers(), sys.executable, "-c", IN_ONE_PROCESS,
                           json.dumps([[str(arg) for arg in args] for args in commands])],
                          capture_output=True, text=True, timeout=300 * len(commands))
    assert done.returncode == 0, done.stderr
    return [SimpleNamespace(**said) for said in json.loads(done.stdout.splitlines()[-1])]


def test_folders_that_cannot_be_read_and_dangling_links_are_named_not_skipped(canonical_weights_file, tmp_path):
    """A user's classify of a folder skipped a sub-folder without read permission and a broken
    symbolic link in silence, and exited 0; given directly, the locked folder was said to hold
    no images."""
    folder = tmp_path / "photos"
    (folder / "ok").mkdir(parents=True)
    (folder / "locked").mkdir()
    shutil.copy(photo_paths()["chelsea"], folder / "ok" / "chelsea.png")
    shutil.copy(photo_paths()["coffee"], folder / "locked" / "coffee.png")
    (folder / "broken.jpg").symlink_to("nowhere.jpg")
    (folder / "notes").symlink_to(folder / "locked" / "inner")  # links whose targets cannot even be looked at
    (folder / "behind.png").symlink_to(folder / "locked" / "coffee.png")
    (tmp_path / "linked").symlink_to(folder / "locked")  # a link to the folder, given as the input
    (folder / "locked").chmod(0)
    try:
        command = ["classify", "--top-k", "1", "--runtime", "tensorflow", "--weights", canonical_weights_file]
        whole, alone, linked, as_json, features = run_without_root_powers(
            [*command, folder], [*command, folder / "locked"], [*command, tmp_path / "linked"],
            [*command, "--json", folder / "ok", folder / "locked"],
            ["features", "--weights", canonical_weights_file, "-o", tmp_path / "f.npz", folder / "locked"])
    finally:
        (folder / "locked").chmod(0o755)
    assert whole.returncode == 1, whole.stderr
    assert [line for line in whole.stdout.splitlines() if not line.startswith(" ")] == [str(folder / "ok" / "chelsea.png")]
    lines = whole.stderr.splitlines()
    # An input that could not be used, as a file that cannot be read is (a helper's classify of a
    # tree whose one unreadable folder had been a warning and exit 0, and no --json record).
    assert f"error: {folder / 'locked'}: cannot read this folder (permission denied); its images are left out" in lines
    assert f"error: {folder / 'broken.jpg'}: broken symbolic link (to nowhere.jpg)" in lines
    assert f"error: {folder / 'behind.png'}: cannot read: Permission denied" in lines
    assert lines[-1] == "alexft: 3 of 4 inputs could not be classified"
    for given, done in ((folder / "locked", alone), (tmp_path / "linked", linked)):
        assert done.returncode == 1 and "no images in this folder" not in done.stderr and "Usage:" not in done.stderr
        assert done.stderr.splitlines() == [f"error: {given}: cannot read this folder (permission denied); its images "
                                             "are left out", "alexft: the input could not be classified"], done.stderr
    assert json.loads(as_json.stdout.splitlines()[-1]) == {
        "path": str(folder / "locked"), "error": f"{folder / 'locked'}: cannot read this folder (permission denied); its "
                                                 "images are left out"}
    assert as_json.returncode == 1
    assert features.returncode == 1 and "Traceback" not in features.stderr, features.stderr  # (was a PermissionError)
    assert f"{folder / 'locked'}: cannot read this folder (permission denied)" in features.stderr


def test_a_folder_below_the_classes_that_cannot_be_listed_fails_evaluate_and_features_as_an_input(
        canonical_weights_file, tmp_path):
    """A helper's evaluate and features of class folders, one holding a locked sub-folder, warned
    and exited 0, and evaluate's figures left those images out unsaid ("14 used, 0 skipped"),
    while classify of the same tree exited 1. Now each names it as an input that could not be
    used, counts it as skipped and exits 1."""
    data = tmp_path / "data"
    for wordnet_id, photo in (("n01440764", "chelsea"), ("n01443537", "coffee")):
        (data / wordnet_id / "more").mkdir(parents=True)
        shutil.copy(photo_paths()[photo], data / wordnet_id / f"{photo}.png")
        shutil.copy(photo_paths()[photo], data / wordnet_id / "more" / f"{photo}.png")
    locked = data / "n01443537" / "more"
    locked.chmod(0)
    try:
        common = ["--weights", canonical_weights_file, data]
        evaluated, features = run_without_root_powers(["evaluate", "--json", *common],
                                                      ["features", "-o", tmp_path / "f.npz", *common])
    finally:
        locked.chmod(0o755)
    said = f"error: {locked}: cannot read this folder (permission denied); its images are left out"
    assert evaluated.returncode == 1 and said in evaluated.stderr.splitlines(), evaluated.stderr
    assert evaluated.stderr.splitlines()[-1] == "alexft: 1 of 4 inputs could not be used"  # a folder is no image
    figures = json.loads(evaluated.stdout)
    assert (figures["images"], figures["skipped"]) == (3, 1)
    assert figures["skipped_files"] == {str(locked): said.removeprefix("error: ")}
    assert features.returncode == 1 and said in features.stderr.splitlines(), features.stderr
    assert "warning" not in evaluated.stderr + features.stderr
    with np.load(tmp_path / "f.npz") as saved:
        assert len(saved["paths"]) == 3 and sorted(saved["labels"].tolist()) == [0, 0, 1]


def test_json_lines_stay_utf_8_for_file_names_that_are_not(canonical_weights_file, tmp_path):
    """A file name's raw bytes (b'bad\\xff\\xfe.png') went into --json output, which then failed to
    read as UTF-8. Such a name is escaped, and reads back as the name Python holds for it."""
    folder = tmp_path / "names"
    folder.mkdir()
    odd = os.fsdecode(bytes(folder) + b"/bad\xff\xfe.png")
    shutil.copy(photo_paths()["chelsea"], odd)
    shutil.copy(photo_paths()["coffee"], folder / "café.png")
    done = subprocess.run([ALEXFT, "classify", str(folder), "--json", "--top-k", "1", "--runtime", "tensorflow",
                           "--weights", str(canonical_weights_file)], capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode("utf-8").splitlines()  # strict: raises on any byte that is not UTF-8
    assert [json.loads(line)["path"] for line in lines] == sorted([odd, str(folder / "café.png")])
    assert "café" in lines[0] or "café" in lines[1]  # valid UTF-8 names stay as they are, not escaped
    # Without --json the name is printed as its bytes, as ls does (it was a UnicodeEncodeError),
    # and a report's files take it too.
    text = subprocess.run([ALEXFT, "classify", os.fsencode(odd), "--top-k", "1", "--runtime", "tensorflow",
                           "--weights", str(canonical_weights_file)], capture_output=True, timeout=300)
    assert text.returncode == 0 and text.stdout.splitlines()[0] == os.fsencode(odd), text.stderr
    # Messages on stderr name it by its bytes too (they showed '\\udcff', which finds no file).
    broken = os.fsdecode(bytes(folder) + b"/not\xfd.jpg")
    Path(broken).write_bytes(b"not an image")
    said = subprocess.run([ALEXFT, "classify", os.fsencode(broken), "--weights", str(canonical_weights_file)],
                          capture_output=True, timeout=300)
    assert said.returncode == 1 and b"error: " + os.fsencode(broken) + b": not an image" in said.stderr, said.stderr
    from alexft.atomic import json_text

    assert json.loads(json_text({"path": odd, "name": "café"}, indent=1)) == {"path": odd, "name": "café"}
    assert json_text({"name": "café"}) == '{"name": "café"}'


def test_an_image_on_standard_input_from_a_terminal_is_refused_not_waited_for(canonical_weights_file):
    """`alexft classify -` typed at a terminal waited in silence for an image to be typed."""
    import pty

    controller, terminal = pty.openpty()
    try:
        done = subprocess.run([ALEXFT, "classify", "-", "--weights", str(canonical_weights_file)], stdin=terminal,
                              capture_output=True, text=True, timeout=120)
    finally:
        os.close(controller)
        os.close(terminal)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "Error: '-' reads one image from standard input, which is a terminal here; send the image in "
        "(alexft classify - < photo.jpg, or curl ... | alexft classify -)")


def test_a_run_folder_inside_a_folder_that_cannot_be_searched_is_one_line(small_digits_folder, canonical_weights_file,
                                                                          tmp_path):
    """finetune -o locked/run ended in a PermissionError traceback from Path.exists (Python 3.11
    raises there), fresh and with --resume."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        done = [subprocess.run([*_without_root_powers(), ALEXFT, "finetune", str(small_digits_folder), "--skip", "fc8",
                                "-o", str(locked / "run"), *resume, "--weights", str(canonical_weights_file)],
                               capture_output=True, text=True, timeout=300) for resume in ([], ["--resume"])]
    finally:
        locked.chmod(0o755)
    for result in done:
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.splitlines()[-1] == (f"Error: {locked / 'run'}: cannot be looked into (Permission denied); "
                                                  "choose another --output")


def test_the_closing_count_of_failed_inputs_is_said_in_words_for_one_input_and_for_all(canonical_weights_file,
                                                                                      tmp_path):
    broken = [tmp_path / "a.jpg", tmp_path / "b.png"]
    for path in broken:
        path.write_bytes(b"not an image")
    for inputs, closing in (([broken[0]], "alexft: the input could not be classified"),
                            (broken, "alexft: none of the 2 inputs could be classified")):
        result = run("classify", "--runtime", "tensorflow", "--weights", canonical_weights_file, *inputs)
        assert result.exit_code == 1 and result.output.splitlines()[-1] == closing, result.output
        assert all(f"error: {path}: not an image" in result.output for path in inputs)


def test_a_note_naming_a_file_with_a_line_break_is_still_one_line(canonical_weights_file, tmp_path):
    """'each image is read once: ... (e.g. img/new<newline>line.jpg, inside img)' broke the
    one-line rule of what alexft says on stderr."""
    folder = tmp_path / "img"
    folder.mkdir()
    odd = folder / "new\nline.png"
    shutil.copy(photo_paths()["chelsea"], odd)
    result = run("classify", "--runtime", "tensorflow", "--weights", canonical_weights_file, folder, odd)
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if line.startswith("alexft: warning:")]
    assert len(notes) == 1 and f"{folder}/new line.png" in notes[0], result.stderr
    assert all(line.startswith(("alexft:", "error:")) for line in result.stderr.splitlines()), result.stderr


def test_a_long_label_leaves_a_terminal_bar_room_for_its_counts_rate_and_eta(monkeypatch):
    """At 80 columns, 'caching train features (72 of 270 from the feature store):' left a bar of
    one column and cut off the rate and the time left."""
    import io

    from alexft import progress

    monkeypatch.setattr(progress, "_is_terminal", lambda stream: True)
    for columns in (80, 120):
        monkeypatch.setattr(progress, "_columns", lambda stream, columns=columns: columns)
        screen = io.StringIO()
        label = "caching train features (72 of 270 stored, and a label longer than a terminal's line could hold)"
        with progress.progress_bar(198, desc=label, unit="img", stream=screen, ncols=columns) as bar:
            bar.start_t -= 7.5  # a rate and time left of a real run's width
            bar.update(32)
            bar.refresh()
        last = screen.getvalue().split("\r")[-2].rstrip()
        assert last.startswith(f"{bar.desc}: ") and bar.desc.startswith("caching train features"), last
        assert not any(character.isdigit() for character in bar.desc), last  # no count cut in half: "(72 of 2…"
        # What tqdm must fit beside the label on a terminal (the bar itself shrinks to fit)
        meter = last.split(": ", 1)[1]
        assert len(bar.desc) + 2 + len(meter.replace("#6        ", "")) <= columns, last
    with progress.progress_bar(10, desc="features", stream=io.StringIO(), ncols=80) as bar:
        assert bar.desc.startswith("features")  # a short one stays whole


def test_a_home_where_nothing_can_be_written_leaves_no_matplotlib_lines(canonical_weights_file, tmp_path):
    """TensorFlow imports Matplotlib, which said through alexft's log "alexft: mkdir -p failed for path
    …/.config/matplotlib" and "alexft: Matplotlib created a temporary cache directory …" where HOME
    cannot be written (a helper's trial on a cluster-like setup). Its config goes to alexft's cache then.
    (A HOME below a file: not even root can create folders there.)"""
    blocker = tmp_path / "file"
    blocker.write_text("")
    photo = photo_paths()["chelsea"]
    env = dict(os.environ, HOME=str(blocker / "home"), ALEXFT_CACHE=str(tmp_path / "cache"), TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("MPLCONFIGDIR", None)
    env.pop("XDG_CONFIG_HOME", None)
    done = subprocess.run([sys.executable, "-m", "alexft", "classify", "--runtime", "tensorflow", "--top-k", "1",
                           "--weights", str(canonical_weights_file), str(photo)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "atplotlib" not in done.stderr and done.stderr.strip() == "", done.stderr
    assert (tmp_path / "cache" / "matplotlib").is_dir()
    assert done.stdout.splitlines()[0] == str(photo)
    # A cache that cannot be written either (a read-only container, a re-trial): a folder of the run's own, removed after.
    env["ALEXFT_CACHE"] = str(blocker / "cache")
    env["TMPDIR"] = str(tmp_path / "tmp")
    (tmp_path / "tmp").mkdir()
    done = subprocess.run([sys.executable, "-m", "alexft", "classify", "--runtime", "tensorflow", "--top-k", "1",
                           "--weights", str(canonical_weights_file), str(photo)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0 and "atplotlib" not in done.stderr, done.stderr
    assert not list((tmp_path / "tmp").glob("*matplotlib*"))
