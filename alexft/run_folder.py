"""The run folder of a fine-tuning run: what is in it, when it is written, what stays at the end.

    config.json      the options record and the run's facts (data, weights, classes, versions)
    classes.json     the class names, in the order of the model's outputs
    val.txt          the images a --val-split held out for validation, in Caffe's list format
                     (relative to the data folder), for `alexft evaluate --list`
    history.csv      one row per epoch (rate, losses, accuracies, recoveries and resumes)
    curves.png       the learning curves; lr_find.png the range test's curve (--lr auto)
    model.npz        the best epoch so far: written when epoch 1 ends and whenever it improves
    checkpoint.npz   the trainable layers and the optimizer: what --resume needs; removed when
                     the run finishes unless --keep-checkpoint
    summary.json     written when the run finishes; marks it as finished

Only the chief of a multi-worker run writes here. Every write is atomic.
"""
import csv
import datetime
import io
import json
import os
import shutil
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: runs into one folder are not guarded against each other
    fcntl = None

from . import checkpoint as checkpoints
from .atomic import check_writable, json_text, remove_stale_temporaries, write_atomic, write_text
from .errors import TrainingError

HISTORY_COLUMNS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds", "note"]
CURVES_EVERY = 30  # seconds between redraws of curves.png during a run
# model.npz rewrites, and checkpoints, may each take at most this share of the run's time: a run
# of quick epochs training fc6-fc8 rewrote a 655 MB checkpoint after each 0.2 s epoch (25 s of 27)
WRITE_SHARE = 0.1
# What a run writes, replaces or removes in its folder: a folder holding any of them that is not a
# run's (no config.json alexft wrote) is refused, so that nothing of the user's is overwritten or deleted.
RUN_FILES = ("config.json", "classes.json", "val.txt", "checkpoint.npz", "model.npz", "last_layers.npz", "history.csv",
             "curves.png", "summary.json", "lr_find.png", "broken_files.json", "tensorboard", "feature_cache")


def _history_cell(key, value):
    """A history.csv cell: a rate to 12 digits, as the schedule meant it (1e-05 x 0.1 is
    1.0000000000000002e-06 in binary floats, a row a reader would squint at)."""
    if value is None:
        return ""
    return float(f"{value:.12g}") if key == "lr" and isinstance(value, float) else value


class RunFolderError(TrainingError):
    """The run folder cannot be used as asked (exists, nothing to resume, other options)."""


class RunFolder:
    def __init__(self, path, chief=True):
        self.path, self.chief = Path(path), chief
        self._made_here = False  # the folder did not exist before `start`: discarding may remove it
        self._claim = None  # the open folder this process holds (`claim`)
        self.claimed = False  # this process may write and discard here: no other run holds the folder
        self._curves_drawn = -float("inf")
        self._model_allowed_at = self._checkpoint_allowed_at = -float("inf")

    @classmethod
    def default_path(cls):
        return Path("runs") / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")

    @property
    def checkpoint(self):
        return self.path / "checkpoint.npz"

    @property
    def model(self):
        return self.path / "model.npz"

    # --- starting and resuming ----------------------------------------------------------

    def earlier_config(self):
        """config.json of the run being resumed."""
        saved = self.path / "config.json"
        if not self._holds("config.json") or not saved.is_file():
            raise RunFolderError(f"{self.path}: nothing to resume (no config.json); run without --resume first")
        try:
            config = json.loads(saved.read_text())
        except ValueError as error:
            raise RunFolderError(f"{saved}: unreadable ({error}); the run cannot be resumed") from None
        if not written_by_alexft(config):
            raise RunFolderError(f"{self.path}: config.json there is not from an alexft run: nothing to resume; "
                                 "choose another --output")
        return config

    def finished_summary(self):
        """The summary of a run that finished, or None."""
        try:
            return json.loads((self.path / "summary.json").read_text())
        except (OSError, ValueError):
            return None

    def _finished_and_not_extended(self):
        """Finished, and not since resumed with more epochs (that leaves a newer checkpoint)."""
        try:
            finished = (self.path / "summary.json").stat().st_mtime_ns
        except OSError:
            return False
        try:
            return self.checkpoint.stat().st_mtime_ns <= finished
        except OSError:
            return True

    def refuse_existing(self):
        # A finished epoch leaves a checkpoint, which every worker can see before the cluster forms
        # (the chief's fresh config.json cannot tell them apart): all refuse together, none waits.
        if self._holds("checkpoint.npz") or (self.chief and self._holds_runs_config()):
            if self.chief and not self.claimed:
                self.claim()  # refused here, as in use, while another run trains there ("pass --resume" would be)
                self.release()
            if self.chief and self._finished_and_not_extended():  # --resume would only say it is finished
                more = " (or --resume with more --epochs: its checkpoint was kept)" if self.checkpoint.exists() else ""
                raise RunFolderError(f"{self.path}: holds a finished run; choose another --output{more}")
            raise RunFolderError(f"{self.path}: already holds a run; pass --resume to continue it or choose another --output")
        if self.chief and self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"{self.path}: is a file, not a run folder; choose another --output")
        if self.chief:  # a file where a folder should be, a read-only disk: said now, not after the start-up
            check_writable(self.path / "config.json", RunFolderError)
        taken = [name for name in RUN_FILES if self._holds(name)] if self.chief else []
        if taken:
            one = len(taken) == 1
            raise RunFolderError(f"{self.path}: {', '.join(taken)} there {'is' if one else 'are'} not from an alexft run, "
                                 f"and a run would replace {'it' if one else 'them'}; choose another --output")

    def _holds_runs_config(self):
        """A config.json an alexft run wrote: the user's own of that name (a model's, a tool's)
        is no run to resume, and is refused with the other files a run would replace."""
        if not self._holds("config.json"):
            return False
        try:
            return written_by_alexft(json.loads((self.path / "config.json").read_text()))
        except (OSError, ValueError):  # (written atomically: one alexft wrote is whole JSON)
            return False

    def _holds(self, name):
        try:
            return (self.path / name).exists()
        except OSError as problem:  # (Python 3.11: a folder on the way that cannot be searched)
            raise RunFolderError(f"{self.path}: cannot be looked into ({problem.strerror or problem}); "
                                 "choose another --output") from None

    def refuse_inside(self, *data_folders):
        """A new run folder inside the data (`-o photos/run1`, or the default runs/ when run from
        the data folder) would be read as a class by the next run: its curves are images."""
        from .preprocess import is_within

        for folder in data_folders:
            if folder is not None and is_within(self.path, folder):
                raise RunFolderError(f"{self.path}: is inside the data folder {folder}, where the next run would read "
                                     "it as a class (its curves are images); give an --output outside it")

    def claim(self):
        """Hold the folder until `release`, so that a second run into it (another terminal, a
        repeated cron job) is refused instead of mixing its checkpoints with this one's. An
        advisory lock on the folder itself: no file is added, and the kernel drops it when the
        process ends, however it ends. A folder that does not exist yet is claimed by `start`."""
        if not self.chief or self.claimed or not self.path.is_dir():
            return
        try:
            handle = None if fcntl is None else os.open(self.path, os.O_RDONLY)
        except OSError:  # a folder that cannot be read: the writes that follow say so
            handle = None
        if handle is None:
            self.claimed = True
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise RunFolderError(f"{self.path}: another alexft run is training in this folder; wait for it to end "
                                 "(then --resume it for more epochs) or choose another --output") from None
        except OSError:  # a file system without locks (some network shares): unguarded, as on Windows
            os.close(handle)
            handle = None
        self._claim, self.claimed = handle, True

    def release(self):
        if self._claim is not None:
            os.close(self._claim)
        self._claim, self.claimed = None, False

    def start(self, config):
        if not self.chief:
            return
        self._made_here = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as problem:  # made unwritable since the check
            raise RunFolderError(f"{self.path}: the run folder cannot be made ({problem.strerror or problem})") from None
        self.claim()
        try:
            self.refuse_existing()  # again, held now: a run started at the same moment may have written first
        except RunFolderError:
            self.release()  # what is there is the other run's: not this one's to discard
            raise
        self.write_config(config)
        write_json(self.path / "classes.json", config["class_names"])

    def write_val_list(self, dataset, data_dir, broken=()):
        """val.txt: the images a --val-split held out, `relative/path label` a line, relative to
        the data folder: `alexft evaluate --list RUN/val.txt --root DATA` measures the model on
        them again (they were in no folder of their own). A separate validation folder is
        evaluated as itself: none is written then. `broken`: the files found unreadable (their
        str paths), left out, so that the list holds what the validation measured."""
        if not self.chief or dataset.val_split is None or not len(dataset.val):
            return
        lines = [f"{os.path.relpath(path, data_dir)} {label}\n" for path, label in zip(dataset.val.paths, dataset.val.labels)
                 if str(path) not in broken]
        # (a name that is not UTF-8 as its own bytes, as the list is read; one with a line break cannot be listed)
        data = "".join(line for line in lines if line.count("\n") == 1 and "\r" not in line).encode("utf-8", "surrogateescape")
        write_atomic(self.path / "val.txt", lambda handle: handle.write(data), RunFolderError)

    def write_config(self, config):
        if self.chief:
            write_json(self.path / "config.json", config)

    def discard_fresh(self):
        """Remove what a run that never finished an epoch wrote."""
        for name in ("config.json", "classes.json", "val.txt", "lr_find.png", "broken_files.json"):
            (self.path / name).unlink(missing_ok=True)
        for folder in ("tensorboard", "feature_cache"):
            shutil.rmtree(self.path / folder, ignore_errors=True)
        if self._made_here:  # a folder the user made for the run stays, empty
            try:
                self.path.rmdir()  # only if nothing else is there
            except OSError:
                pass

    def remove_stale(self, log):
        if self.chief:
            for name in remove_stale_temporaries(self.path):
                log(f"removed {name}, left by an interrupted write")

    # --- during the run -------------------------------------------------------------------

    def checkpoint_due(self):
        """Whether the time since the last checkpoint allows another (see WRITE_SHARE)."""
        return time.monotonic() >= self._checkpoint_allowed_at

    def save_checkpoint(self, record, arrays):
        if self.chief:
            started = time.monotonic()
            checkpoints.save(self.checkpoint, record, arrays)
            self._checkpoint_allowed_at = _next_write_allowed(started)

    def write_history(self, history, final=False):
        if not self.chief:
            return
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, HISTORY_COLUMNS)
        writer.writeheader()
        writer.writerows({key: _history_cell(key, row.get(key)) for key in HISTORY_COLUMNS} for row in history)
        write_text(self.path / "history.csv", text.getvalue(), RunFolderError)
        # Drawing the curves takes most of a second, longer than a cached epoch: redraw at
        # most every CURVES_EVERY seconds, and always at the end or on interruption.
        if history and (final or time.monotonic() - self._curves_drawn >= CURVES_EVERY):
            from .plots import learning_curves  # matplotlib: not for a command that only checks its folder

            learning_curves(history, self.path / "curves.png")
            self._curves_drawn = time.monotonic()

    def model_write_due(self):
        """Rewriting model.npz (233 MB, about a second) after every improving epoch would
        dominate a cached run whose epochs take milliseconds (see WRITE_SHARE)."""
        return time.monotonic() >= self._model_allowed_at

    def write_model(self, weight_set):
        if not self.chief:
            return
        from . import weights as weights_io

        started = time.monotonic()
        weights_io.save(weight_set, self.model)
        self._model_allowed_at = _next_write_allowed(started)

    # --- the end --------------------------------------------------------------------------

    def finish(self, summary, keep_checkpoint):
        if not self.chief:
            return
        write_json(self.path / "summary.json", summary)
        if not keep_checkpoint:
            self.checkpoint.unlink(missing_ok=True)
        shutil.rmtree(self.path / "feature_cache", ignore_errors=True)  # a resumed run rebuilds it


def written_by_alexft(config):
    """Whether a config.json's contents are a run's: every run's records the alexft that wrote it
    (`versions`, since the first), which a config.json of the user's own does not."""
    versions = config.get("versions") if isinstance(config, dict) else None
    return isinstance(versions, dict) and "alexft" in versions


def write_json(path, value):
    write_text(path, json_text(value, indent=1) + "\n", RunFolderError)


def size_mb(path):
    """Total size of the files below `path`, in MB (10^6 bytes)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 1e6


def refuse_changes(saved, config, run, keys, describe=None, remedies=None):
    """Refuse to resume `run` when any of `keys` differs between its saved config and this one.
    `describe(key, saved, config)` may say a change in words (None: "KEY: was X, now Y");
    `remedies` ({key: what undoes its change}) the way back for keys that are no option (the
    rest: the run's own options)."""
    changed = [key for key in keys if saved.get(key) != config.get(key)]
    if changed:
        details = "; ".join((describe and describe(key, saved, config))
                            or f"{key}: was {_short(saved.get(key))}, now {_short(config.get(key))}" for key in changed)
        remedies = remedies or {}
        ways = list(dict.fromkeys(remedies.get(key, "resume with the run's own options") for key in changed))
        raise RunFolderError(f"{run}: cannot resume with a different configuration ({details}); {', '.join(ways)}, "
                             "or start a new run in another --output")


def _short(value):
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _next_write_allowed(started):
    """When the next write of a kind begun at `started` may come: after waiting nine times as
    long as this one took, so that such writes take at most WRITE_SHARE of the run."""
    now = time.monotonic()
    return now + (now - started) * (1 / WRITE_SHARE - 1)
