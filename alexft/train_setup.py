"""What fine-tuning checks and decides before its first step: the machine's role in a cluster,
what validation will measure, which layers start fresh and learn, how many epochs, and whether
a run folder may be resumed (alexft/train.py runs what this decides)."""
import dataclasses
import hashlib
import sys
from pathlib import Path

import numpy as np

from . import weights as weights_io
from .errors import TrainingError
from .overlap import overlap_warnings
from .run_folder import RunFolder, refuse_changes
from .train_options import OptionsError, TrainOptions, cache_matters, cache_point, check_layers, option_change
from .weights.download import file_sha256
from .weights.sources import LOOKED_FOR, found_locally


def check_multiworker_options(options, output):
    """Options a multi-worker run cannot take: mistakes of the command line, said before TF_CONFIG is read."""
    if options.strategy != "multiworker":
        return
    if output is None:
        raise OptionsError("--strategy multiworker needs --output: a run folder every worker can reach (shared storage)")
    if options.device != "auto":
        raise OptionsError("--device cannot be combined with --strategy multiworker: each worker uses all its local "
                           "devices (choose them with CUDA_VISIBLE_DEVICES on each machine)")


def check_cluster(options, output, log):
    """Whether this process is the chief (always, outside multi-worker training)."""
    if options.strategy != "multiworker":
        return True
    from .cluster_config import cluster_role

    check_multiworker_options(options, output)
    chief, task = cluster_role()
    log(f"multi-worker training as {task}" + (" (chief: writes the run folder)" if chief else ""))
    return chief


# Not taken from a resumed run: the rate ("auto" keeps the run's own, recoveries included) and
# where and how it computes (a run begun on a GPU may end on a CPU).
NOT_RESUMED = frozenset({"lr", "device", "strategy", "heartbeat_timeout", "mixed_precision"})


class RunAlreadyFinished(Exception):
    """--resume of a run with nothing left to do (see resume_point) whose data folder or base
    weights have gone since: nothing it could do needs them, so it is said to be finished, as
    when they are there, not refused for their absence. `summary`: what finetune returns."""

    def __init__(self, summary):
        super().__init__(summary.get("run"))
        self.summary = summary


def resumed_settings(output, data_dir, weights, given, log):
    """A resume continues the run as it was begun: what the caller leaves out is the run's own,
    from its config.json. `given`: the TrainOptions fields the caller set (the rest, but for
    NOT_RESUMED, are the run's); `data_dir` and `weights` None: the run's (weights only while
    that file is still there; else the default weights, when they are here or the file was a
    bvlc_alexnet.* to download, and their digest must match; else the gone file is said). Returns
    (data_dir, weights, the options' fields, config.json's contents); raises RunAlreadyFinished
    for a run with nothing left to do whose folder or weights are gone (`log` says so)."""
    if output is None:
        raise OptionsError("--resume needs --output, the run folder to continue")
    saved = RunFolder(output).earlier_config()
    if given.get("epochs") == "auto":  # what "auto" chose is the run's number: asked again, it keeps it
        given = {key: value for key, value in given.items() if key != "epochs"}
    names = {field.name for field in dataclasses.fields(TrainOptions)} - NOT_RESUMED - set(given)
    fields = {key: saved[key] for key in names if key in saved}
    fields.update(given)
    if data_dir is None:
        recorded = saved.get("data_dir")
        if recorded is None:
            raise TrainingError(f"{output}: its config.json names no data folder; give DATA_DIR")
        if not Path(recorded).is_dir():
            _said_if_finished(output, fields, log)
            raise TrainingError(f"{output}: its data folder {recorded} is not there; give DATA_DIR")
        data_dir = Path(recorded)
    if weights is None and saved.get("weights"):
        recorded = Path(saved["weights"])
        if recorded.is_file():
            weights = recorded
        elif recorded.name not in LOOKED_FOR and found_locally() is None:
            # A file of the user's own, and no default weights here: the search would download 233 MB
            # of others, then refuse them by their digest. (Defaults found here are taken and checked.)
            _said_if_finished(output, fields, log)
            raise TrainingError(f"{output}: the weights it began from, {recorded}, are not there; give --weights: "
                                "that file, or another holding the same weights")
    return data_dir, weights, fields, saved


def _said_if_finished(output, fields, log):
    """Raise RunAlreadyFinished, saying so, if the run has nothing left to do with `fields`."""
    run = RunFolder(output)
    finished = run.finished_summary()
    if finished is None:
        return
    try:
        options = TrainOptions(**{key: value for key, value in fields.items() if key in TrainOptions.__dataclass_fields__})
    except (TypeError, ValueError):  # a config.json of another version: what is gone is said instead
        return
    if _nothing_left(run, finished, options):
        raise RunAlreadyFinished(already_finished(run, finished, options, log))


def as_listed(dataset, data_dir, options, fields):
    """(data_dir, fields) for a run on a `load_dataset` result: its folder and its listing
    options (val_dir, val_split, seed) are the run's, so that config.json, and a resume,
    describe what is trained; ones given that differ are refused (a listing at val_split=0.25
    had been recorded as the default 0.1, under another folder's name)."""
    from .data import Dataset

    if not isinstance(dataset, Dataset) or dataset.listed_with is None:
        raise TypeError(f"dataset is what alexft.load_dataset returns, not {type(dataset).__name__}")
    listed = dict(dataset.listed_with)
    folder = listed.pop("data_dir")
    if data_dir is not None and Path(data_dir).resolve() != Path(folder).resolve():
        raise OptionsError(f"data_dir={str(data_dir)!r}, but the dataset was listed from {str(folder)!r}; give one of them")
    defaults, fields = TrainOptions(), dict(fields)
    as_text = lambda value: value if value is None else str(value)  # noqa: E731  (a val_dir as str or Path)
    for key, value in listed.items():
        given = fields.get(key, getattr(options, key) if options is not None else getattr(defaults, key))
        chosen = key in fields or (options is not None and given != getattr(defaults, key))
        same = as_text(given) == as_text(value) if key == "val_dir" else given == value
        if chosen and not same:
            raise OptionsError(f"{key}={given!r}, but the dataset was listed with {key}={value!r}; list it again "
                               f"with load_dataset(..., {key}={given!r}), or leave {key} out")
        fields[key] = value
    return folder, fields


def report_split(dataset, options, log):
    """Say at the start what validation will and will not measure."""
    if dataset.val_split is None and options.val_split != TrainOptions.val_split:
        log(f"note: --val-split {options.val_split:g} is not used: the validation images come from a folder of their "
            "own (a val/ part, or --val-dir)")
    if len(dataset.val) == 0:
        reason = "--val-split 0" if options.val_split == 0 else f"--val-split {options.val_split} holds out no image"
        log(f"no validation images ({reason}): model.npz will be the epoch with the lowest training loss")
        for said in overlap_warnings(dataset):  # (training images filed under two classes)
            log(said)
        return
    classes = len(dataset.class_names)
    in_train = np.bincount(dataset.train.labels, minlength=classes)
    in_val = np.bincount(dataset.val.labels, minlength=classes)
    unmeasured = [dataset.class_names[label] for label in np.flatnonzero(in_val == 0)]
    single = [dataset.class_names[label] for label in np.flatnonzero((in_val > 0) & (in_train == 1))]
    if unmeasured:
        if dataset.val_split is None:  # a folder of its own: nothing was split
            why = " (none in the validation folder)"
        else:
            why = " (a class of one image cannot be split)" if (in_train[in_val == 0] == 1).any() else ""
        log(f"warning: {_some_classes(unmeasured)} no image for validation: accuracy is not measured there{why}")
    if single:
        log(f"warning: {_some_classes(single)} a single training image")
    _report_a_larger_share(dataset, log)
    largest = int(in_train.argmax())
    scarce = [dataset.class_names[label] for label in np.flatnonzero((in_train > 1) & (in_train * LOPSIDED <= in_train.max()))]
    if scarce:  # a model answering the largest class everywhere then scores its share, and stops there
        counts = sorted({int(in_train[dataset.class_names.index(name)]) for name in scarce})
        log(f"warning: {_some_classes(scarce)} {counts[0]}{'' if len(counts) == 1 else f'-{counts[-1]}'} training images "
            f"against {in_train[largest]} for {dataset.class_names[largest]!r}: the model may learn to answer "
            f"{dataset.class_names[largest]!r} everywhere; more images of the few (or fewer of the many) balance it")
    for said in overlap_warnings(dataset):
        log(said)


LOPSIDED = 10  # a class with this many times fewer training images than the largest is said
LARGER_SHARE = 1.5  # a share held out this many times the --val-split asked is said


def _report_a_larger_share(dataset, log):
    """Small classes give at least one image each to validation: on a few images a class,
    --val-split 0.1 held out a third of them, unsaid."""
    held_out = len(dataset.val) / (len(dataset.val) + len(dataset.train))
    if dataset.val_split and held_out > LARGER_SHARE * dataset.val_split:
        log(f"note: --val-split {dataset.val_split:g} holds out {len(dataset.val):,} of "
            f"{len(dataset.val) + len(dataset.train):,} images ({held_out:.0%}): every class of two or more images "
            "gives at least one to validation")


def _some_classes(names, shown=5):
    """'class 'a' has' or '1,234 classes have' with the first few named, for one warning line."""
    if len(names) == 1:
        return f"class {names[0]!r} has"
    listed = ", ".join(repr(name) for name in names[:shown]) + (", ..." if len(names) > shown else "")
    return f"{len(names):,} classes ({listed}) have"


def planned_run(data_dir, options, dataset, weights, log):
    """The layers and epochs this run takes, its weights (a file, or a WeightSet the command
    line read), and what config.json records of it; without TensorFlow, so that the command
    line can check a resume before its start-up. Returns (options, weight set, config)."""
    weight_set = weights_io.as_weight_set(weights, skip=options.skip)
    weights_path = weight_set.path
    options = layer_choice(options, weight_set, dataset.class_names, log)
    options = plan_epochs(options, len(dataset.train), log)
    # Absolute paths: `--resume` from another folder takes the data and weights from here.
    config = dict(options.as_dict(), data_dir=str(Path(data_dir).absolute()), data=data_identity(dataset),
                  weights=str(Path(weights_path).absolute()),
                  val_dir=options.val_dir and str(Path(options.val_dir).absolute()),
                  base_weights_sha256=file_sha256(weights_path), base_weights_arrays_sha256=arrays_sha256(weight_set),
                  class_names=dataset.class_names, lr_found=None)
    return options, weight_set, config


def arrays_sha256(weight_set):
    """A digest of the weights' arrays (layer, dtype, shape, values), not of the file holding
    them: the .npz `weights convert` makes of the .npy holds the same ones (0.14 s for AlexNet's)."""
    digest = hashlib.sha256()
    for name in sorted(weight_set.params):
        for array in weight_set.params[name]:
            value = np.ascontiguousarray(array)
            digest.update(f"{name}{value.dtype.str}{value.shape}".encode())
            digest.update(value.reshape(-1).view(np.uint8))
    return digest.hexdigest()


def resume_point(run, config, options, log):
    """--resume: (the run's saved config, its summary if it has already finished all it was
    asked for, else None). Refused when this run differs where it matters, or when it finished
    without a checkpoint to train longer from."""
    earlier = run.earlier_config()
    check_same_run(earlier, config, run.path)
    finished = run.finished_summary()
    if _nothing_left(run, finished, options):
        say_other_weights_file(earlier, config, log)  # (a run that goes on says it once it has started)
        return earlier, already_finished(run, finished, options, log)
    if not finished and run.checkpoint.exists():
        _refuse_cutting_back(run, options)
    return earlier, None


def _nothing_left(run, finished, options):
    """Finished, and either asked for no more epochs or without the checkpoint more would go on from."""
    return finished is not None and (finished["epochs"] >= options.epochs or not run.checkpoint.exists())


def say_other_weights_file(earlier, config, log):
    """A resume whose weights are another file holding the same arrays (check_same_run) says so."""
    if earlier.get("base_weights_sha256") != config.get("base_weights_sha256"):
        log(f"the base weights are read from {config['weights']}, which holds the same arrays as {earlier.get('weights')}, "
            "the file the run began with")


def _epochs(count):
    return f"{count} epoch{'' if count == 1 else 's'}"


def _refuse_cutting_back(run, options):
    """--resume --epochs N below the epochs a stopped run has done: it ended the run there, and
    removed its checkpoint, so the run could never go on."""
    from .checkpoint import CheckpointError, load

    try:
        done = load(run.checkpoint, arrays=False)[0]["epoch"]
    except (CheckpointError, KeyError, TypeError):
        return  # (the resume itself says what is wrong with the checkpoint)
    if options.epochs < done:
        raise TrainingError(f"{run.path}: --epochs {options.epochs} is fewer than the {_epochs(done)} it has done, and a "
                            f"run is never cut back; --epochs {done} ends it now (model.npz: the best of them), more "
                            "go on")


def layer_choice(options, weight_set, class_names, log):
    num_classes = len(class_names)
    skip = list(options.skip)
    if weight_set.num_classes != num_classes and "fc8" not in skip:
        log(f"{num_classes} classes but the weights have {weight_set.num_classes}: fc8 starts fresh")
        skip.append("fc8")
    skip_sorted, train = check_layers(skip, options.train, default_skip=options.skip == ["fc8"])  # OptionsError
    if "fc8" in skip and weight_set.class_names is not None and list(weight_set.class_names) == list(class_names):
        log(f"warning: the weights' fc8 was trained for these very classes ({len(class_names)}), and --skip fc8 "
            "starts it afresh; to go on training it instead: --skip '' --train fc8")
    return options.replace(skip=skip_sorted, train=train)


def plan_epochs(options, train_count, log):
    epochs, why = options.planned_epochs(train_count, cache_point(options) is not None)
    if why:
        log(f"{epochs} epochs ({why}; --epochs N to choose)")
    return options.replace(epochs=epochs)


def versions():
    import cv2
    import keras
    import tensorflow as tf

    from . import __version__

    return dict(alexft=__version__, tensorflow=tf.__version__, keras=keras.__version__, numpy=np.__version__,
                opencv=cv2.__version__, python=sys.version.split()[0])


def data_identity(dataset):
    """What a run trains and validates on, independent of where the folder lies now: the image
    counts and a digest of each image's split, label and file name."""
    import hashlib

    digest = hashlib.sha256()
    for split, files in (("train", dataset.train), ("val", dataset.val)):
        for path, label in zip(files.paths, files.labels):
            digest.update(f"{split}\t{int(label)}\t{Path(path).name}\n".encode("utf-8", "surrogateescape"))
    return dict(train_images=len(dataset.train), val_images=len(dataset.val), files_sha256=digest.hexdigest()[:16])


def check_same_run(saved, config, run):
    keys = TrainOptions.IDENTITY + ("class_names", "base_weights_sha256")
    saved = as_recorded_now(saved)
    # The images' digest holds each one's split: a new seed or val_split changes it, said as itself.
    resplit = any(saved.get(key) != config.get(key) for key in ("seed", "val_split"))
    keys += ("data",) if "data" in saved and not resplit else ()  # (runs begun before it was recorded: none)
    if not cache_matters(saved, config):
        keys = tuple(key for key in keys if key != "cache")
    arrays = saved.get("base_weights_arrays_sha256")
    if arrays and arrays == config.get("base_weights_arrays_sha256"):  # another file, the same weights
        keys = tuple(key for key in keys if key != "base_weights_sha256")  # (e.g. the .npy converted to .npz)
    refuse_changes(saved, config, run, keys, describe=_change_in_words, remedies=REMEDIES)


# What undoes a change that no option made: a resume given no option was told to give the run's own.
REMEDIES = {"data": "resume on the images it began with", "class_names": "resume on the class folders it began with",
            "base_weights_sha256": "give --weights the file it began with"}


def as_recorded_now(saved):
    """A run's config.json as this version records it: an option added since the run began
    (e.g. ten_crop_val) is missing, and the run went by its default then."""
    defaults = TrainOptions().as_dict()
    return {**{key: defaults[key] for key in TrainOptions.IDENTITY if key not in saved}, **saved}


def _change_in_words(key, saved, config):
    """The weights' and the images' changes, which digests alone would not explain; the
    options' as the command line names them (`option_change`)."""
    was, now = saved.get(key), config.get(key)
    if key == "base_weights_sha256" and was and now:
        return (f"base weights: SHA-256 was {was[:12]}... ({saved.get('weights', 'file not recorded')}), "
                f"now {now[:12]}... ({config['weights']})")
    if key == "data" and isinstance(was, dict) and isinstance(now, dict):
        if saved.get("val_dir") != config.get("val_dir"):  # (another validation folder: said as the option)
            return f"--val-dir: was {saved.get('val_dir') or 'none'}, now {config.get('val_dir') or 'none'}"
        counts = [(part.get("train_images"), part.get("val_images")) for part in (was, now)]
        if counts[0] != counts[1]:
            return (f"images: was {counts[0][0]} training and {counts[0][1]} validation, now {counts[1][0]} and "
                    f"{counts[1][1]} (in {config['data_dir']})")
        return (f"images: as many as before, but other files, classes or splits (in {config['data_dir']}; "
                "a file's name, class and split make the digest)")
    return option_change(key, saved, config)


def already_finished(run, summary, options, log):
    if summary["epochs"] < options.epochs:
        raise TrainingError(
            f"{run.path}: finished after {_epochs(summary['epochs'])} and its checkpoint was removed; to train longer, "
            f"start a new run from its model, keeping what it learned (--weights {run.model} --skip '' "
            f"--train {','.join(options.train)}); a run given --keep-checkpoint may be resumed for more epochs once it has "
            "finished")
    fewer = (f"; --epochs {options.epochs} is fewer than it ran, and a run is never cut back: model.npz is the best "
             "epoch of all" if options.epochs < summary["epochs"] else "")
    if not fewer and run.checkpoint.exists():  # (--keep-checkpoint): it may go on, said how
        fewer = f"; its checkpoint is kept: --epochs N over {summary['epochs']} trains it further"
    if not options.auto_lr and options.lr != summary.get("lr"):  # given with the resume: said, not ignored unsaid
        fewer += f"; --lr {options.lr:g} is not used: nothing is left to train"
    log(f"{run.path}: already finished ({_epochs(summary['epochs'])}; model.npz holds epoch {summary['best_epoch']}); "
        f"nothing to resume{fewer}")
    return dict(summary, run=str(run.path), already_finished=True)  # (a folder moved since: where it is now)
