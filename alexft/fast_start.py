"""Short classify calls in about a second: the network on LiteRT, TensorFlow not imported.

`import tensorflow` takes 5-7 s on a laptop-class CPU; LiteRT (`ai-edge-litert`, the TensorFlow
family's inference engine) imports in 0.2 s and maps a TF Lite file instead of building a model.
So the first short call with a weights file also writes a TF Lite copy of it into the cache
(with TensorFlow, once, announced), and later short calls run on that copy. TensorFlow stays
the reference: the copy is the same network, checked against it to 1e-5 in probability in
tests/test_fast_start.py. Long runs stay on TensorFlow, which is faster once started.

A copy belongs to one weights file, recognised by its resolved path, size and modification
time: replacing the file makes a new copy; the old one is overwritten, never used. A file
that only looks replaced (touched, restored or copied over with the same bytes) is hashed
once (about 0.3 s for 233 MB) against the digest the copy records, and keeps its copy.
Each build removes the copies of weights files that are gone and, beyond the MAX_COPIES most
recently used, the least recently used (a copy is 217-233 MB: comparing thirty fine-tuned runs
would otherwise leave 7 GB in the cache).
"""
import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from . import __version__
from .architecture import parameter_count
from .atomic import remove_stale_temporaries, write_atomic, write_text
from .converter_space import check_converter_space, converter_scratch_bytes
from .errors import AlexftError
from .quiet import stderr_held_back
from .weights.download import file_sha256
from .weights.sources import cache_dir

log = logging.getLogger(__name__)

# `auto` takes LiteRT up to this many views (images, or 10 per image with --ten-crop). LiteRT
# costs more per view than TensorFlow's batched path but saves its start-up: on a 2-core
# AVX2 EPYC (measured by hand, under load: LiteRT about 22 img/s at batch 32, TensorFlow
# about 65 after 7 s of start-up) the two break even near 230 views; this leaves a margin
# for machines where TensorFlow's batches are faster still.
MAX_VIEWS = 128
# Raised whenever the copy's graph changes, so older copies are rebuilt rather than used.
COPY_FORMAT = 1
MAX_COPIES = 8  # about 1.8 GB of the cache


class FastStartError(AlexftError):
    """The LiteRT path cannot be used as asked."""


def litert_installed():
    return importlib.util.find_spec("ai_edge_litert") is not None


def suits(runtime, views):
    """Whether a classify call of `views` views runs on LiteRT under `runtime`."""
    if runtime == "litert":
        if not litert_installed():
            raise FastStartError("--runtime litert needs LiteRT: pip install ai-edge-litert")
        return True
    return runtime == "auto" and views <= MAX_VIEWS and litert_installed()


def copy_paths(weights):
    """(model, record) paths of the TF Lite copy of `weights` in the cache, one pair per weights path."""
    weights = Path(weights).resolve()
    key = hashlib.sha1(str(weights).encode("utf-8")).hexdigest()[:12]
    folder = cache_dir() / "litert"
    return folder / f"{weights.name}-{key}.tflite", folder / f"{weights.name}-{key}.json"


def current_copy(weights):
    """(model path, class names) of an up-to-date copy of `weights`, or None."""
    model, record = copy_paths(weights)
    try:
        saved = json.loads(record.read_text(encoding="utf-8"))
        if model.stat().st_size != saved["model_size"]:
            return None
        now = _identity(weights)
        if saved["source"] == now:
            _mark_used(model)
            return model, saved["class_names"]
        if _same_bytes_touched(saved, now, weights):
            with contextlib.suppress(FastStartError):  # a cache we may not write: hashed again next time
                write_text(record, json.dumps(dict(saved, source=now)), FastStartError)
            return model, saved["class_names"]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent, half-gone or from another version: built again
    return None


def _same_bytes_touched(saved, now, weights):
    """Only the file's times changed, and the bytes are those the copy was built from."""
    earlier = dict(saved["source"], mtime_ns=now["mtime_ns"], ctime_ns=now["ctime_ns"])
    return earlier == now and saved.get("sha256") == file_sha256(weights)


# What answers without the copy, as the caller's user asks for it (the command line's by default).
SKIPPED_BY_COMMAND, SKIPPED_BY_PYTHON = "--runtime tensorflow", "alexft.load_predictor (TensorFlow)"


def build_copy(weights, skipped_by=SKIPPED_BY_COMMAND):
    """Write the TF Lite copy of `weights` into the cache (imports TensorFlow); return its path.
    `skipped_by`: what the announcement names as the way to go without it."""
    from .quiet import import_tensorflow_quietly

    model, record = copy_paths(weights)
    try:  # before the announcement and TensorFlow: a cache that cannot be written builds nothing
        model.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=model.parent):
            pass  # a folder that exists but only reads (a cache shared read-only) is found here, by trying
        remove_stale_temporaries(model.parent, shared=True)  # two first calls may build at once
    except OSError as error:
        raise FastStartError(f"{model.parent}: cannot be written ({error.strerror or error})") from None
    # Before the announcement too: on a disk too full for the converter, every short call would
    # otherwise announce the build, spend seconds and fail again. (float32 with 1000 classes: an
    # upper bound for any fc8.)
    check_converter_space(model.parent, converter_scratch_bytes(4 * parameter_count()), model, FastStartError)
    import_tensorflow_quietly()
    from .export import serving_module, tflite_flatbuffer

    start = time.perf_counter()
    log.warning("building a LiteRT copy of %s in %s, once, so that short classify calls start without "
                "TensorFlow (about half a minute; %s skips it)", weights, model.parent, skipped_by)
    source = _identity(weights)  # taken first: a file replaced while it is read is not mistaken for this one
    digest = file_sha256(weights)  # before the build too: bytes replaced meanwhile never match it
    module = serving_module(weights)
    flatbuffer = tflite_flatbuffer(module, beside=model)
    write_atomic(model, lambda handle: handle.write(flatbuffer), FastStartError)
    write_text(record, json.dumps({"source": source, "sha256": digest, "model_size": len(flatbuffer),
                                   "class_names": module.class_names}), FastStartError)
    log.warning("built %s (%d MiB) in %.0f s", model.name, len(flatbuffer) // 2**20, time.perf_counter() - start)
    tidy_copies(model.parent, MAX_COPIES)
    return model


def _mark_used(model):
    """A copy's last use is its model's modification time, which `tidy_copies` goes by (not its
    record's, whose stamp says whether another process has built a copy meanwhile)."""
    with contextlib.suppress(OSError):  # a cache we may only read
        os.utime(model)


def tidy_copies(folder, keep):
    """Remove the copies whose weights file is gone (a deleted run's model.npz, say: nothing can
    use them again), then all but the `keep` most recently used."""
    kept = []
    for record in folder.glob("*.json"):
        try:
            source = Path(json.loads(record.read_text(encoding="utf-8"))["source"]["path"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a record of ours, or being written
        try:
            used = record.with_suffix(".tflite").stat().st_mtime_ns
        except OSError:
            used = 0  # no model: the first to go
        if _gone(source):
            _remove_copy(record)
        else:
            kept.append((used, record))
    for _, record in sorted(kept, reverse=True)[keep:]:
        log.info("removed the LiteRT copy %s, the least recently used of %d", record.with_suffix(".tflite").name,
                 len(kept))
        _remove_copy(record)


def _remove_copy(record):
    try:
        record.with_suffix(".tflite").unlink(missing_ok=True)
        record.with_suffix(".lock").unlink(missing_ok=True)
        record.unlink(missing_ok=True)
    except OSError:
        pass  # another user's, in a shared cache: theirs to clear


def _gone(path):
    """True only when `path` is known not to exist; a path this user may not look at is kept."""
    try:
        path.stat()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False


def load_litert_predictor(weights, preprocessing=None, build=True, skipped_by=SKIPPED_BY_PYTHON):
    """A predictor on LiteRT for `weights`, building its copy first if needed (with `build`,
    else None when there is none). Same interface as predict.Predictor. `skipped_by`: see
    build_copy."""
    copy = current_copy(weights)
    if copy is None and build:
        with _build_lock(weights, wait=True):  # two first calls at once (xargs -P): one builds, the other waits
            copy = current_copy(weights)
            if copy is None:
                build_copy(weights, skipped_by)
                copy = current_copy(weights)
    if copy is None:
        return None
    return LitePredictor(*copy, preprocessing=preprocessing)


def copy_stamp(weights):
    """How the record of `weights`' copy looks now (None when there is none): a build changes it."""
    try:
        stat = copy_paths(weights)[1].stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


def build_copy_unless_another_is(weights, seen):
    """The build a call does after its results, the copy having been missing or refused when
    its record looked as `seen` (`copy_stamp`): skipped when another process is building it or
    has built a new one since (two first calls at once built it twice, 11 s each)."""
    with _build_lock(weights, wait=False) as ours:
        if ours and (copy_stamp(weights) == seen or current_copy(weights) is None):
            build_copy(weights)


@contextlib.contextmanager
def _build_lock(weights, wait):
    """Hold the lock on building `weights`' copy; yield True when this process may build. While
    another process holds it: wait (said) with `wait`, else yield False at once. Where no lock
    can be taken (no fcntl, a cache we may not write), every process may build."""
    try:
        import fcntl

        lock_path = copy_paths(weights)[0].with_suffix(".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except (ImportError, OSError):
        yield True
        return
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                yield False
                return
            log.warning("waiting for another process building the LiteRT copy of %s", weights)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(handle)  # (closing releases the lock)


class LitePredictor:
    """`predict.Predictor`'s interface (`probabilities`, `class_names`, `preprocessing`) on LiteRT."""

    def __init__(self, model_path, class_names, preprocessing=None, threads=None):
        from ai_edge_litert.interpreter import Interpreter

        self.class_names = list(class_names)
        self.preprocessing = preprocessing
        try:
            interpreter = Interpreter(model_path=str(model_path), num_threads=threads or _usable_cores())
            self._run = interpreter.get_signature_runner()
        except (ValueError, RuntimeError) as error:
            raise FastStartError(f"{model_path}: LiteRT cannot load it ({error})") from None
        self._started = False

    def probabilities(self, views, fused_lrn=False):
        """(N, 227, 227, 3) float32 views -> (N, classes) softmax probabilities. `fused_lrn` is
        TensorFlow's choice and ignored here."""
        from .predict import check_views

        if check_views(views) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        # The first run sets up LiteRT's CPU delegate, which announces itself on stderr.
        with contextlib.nullcontext() if self._started else stderr_held_back(brief=True):
            # Copied out at once: LiteRT refuses to resize while its output buffers are referenced.
            probabilities = np.array(self._run(views=np.ascontiguousarray(views, np.float32))["probabilities"])
        self._started = True
        return probabilities


def _identity(weights):
    weights = Path(weights).resolve()
    stat = weights.stat()
    # The change time too: bytes replaced in place with the modification time kept (cp -p,
    # rsync -a, tar) change it, and only the system sets it.
    return {"path": str(weights), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns,
            "alexft": __version__, "format": COPY_FORMAT}


def _usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
