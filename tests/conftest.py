"""Session-wide fixtures: the expensive things are built once per test session."""
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from filelock import FileLock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))

from fixtures import random_params  # noqa: E402
from py2pickle import write_python2_npy  # noqa: E402

# Two logical CPU devices, so multi-device code (MirroredStrategy) runs without GPUs.
# TensorFlow only accepts this before it initialises its devices, i.e. at collection.
from alexft.devices import split_cpu  # noqa: E402

split_cpu(2)

# Read before any test isolates the environment.
REAL_WEIGHTS = os.environ.get("ALEXFT_WEIGHTS")


def built_once(tmp_path_factory, worker_id, name, build):
    """The folder where `build(folder)` ran, once per test session even across pytest-xdist's workers.

    The first process to ask builds under a lock; the others wait, then reuse the files
    (xdist's documented recipe). Workers share their parent folder, the controller's, which
    it deletes when the run passes; without xdist the session's own folder serves.
    """
    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        root = root.parent
    folder = root / name
    with FileLock(root / f"{name}.lock"):
        if not (root / f"{name}.done").exists():
            shutil.rmtree(folder, ignore_errors=True)  # left by a worker that died mid-build
            folder.mkdir()
            build(folder)
            (root / f"{name}.done").touch()
    return folder


@pytest.fixture(scope="session")
def canonical_params():
    """Random weights with the exact shapes of bvlc_alexnet.npy."""
    return random_params(seed=0)


@pytest.fixture(scope="session")
def canonical_weights_file(tmp_path_factory, worker_id, canonical_params):
    """A full-size (233 MB) bvlc_alexnet.npy written as Python 2's numpy wrote it."""
    folder = built_once(tmp_path_factory, worker_id, "weights",
                        lambda folder: write_python2_npy(folder / "bvlc_alexnet.npy", canonical_params))
    return folder / "bvlc_alexnet.npy"


@pytest.fixture(scope="session")
def canonical_caffemodel(tmp_path_factory, worker_id, canonical_params):
    """The same weights as Caffe's bvlc_alexnet.caffemodel would hold them (new `layer` form)."""
    from caffemodel import write_canonical_caffemodel

    folder = built_once(tmp_path_factory, worker_id, "caffe",
                        lambda folder: write_canonical_caffemodel(folder / "bvlc_alexnet.caffemodel", canonical_params))
    return folder / "bvlc_alexnet.caffemodel"


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory, worker_id):
    """scikit-learn's digits as class folders: 30 images per digit."""
    from fixtures import write_digits_folder

    return built_once(tmp_path_factory, worker_id, "digits", lambda folder: write_digits_folder(folder, per_class=30))


@pytest.fixture(scope="session")
def small_digits_folder(tmp_path_factory, worker_id):
    """6 images per digit: enough for runs that test mechanics rather than accuracy."""
    from fixtures import write_digits_folder

    return built_once(tmp_path_factory, worker_id, "digits_small",
                      lambda folder: write_digits_folder(folder, per_class=6, seed=1))


@pytest.fixture(scope="session")
def fc8_run(digits_folder, canonical_weights_file, tmp_path_factory, worker_id):
    """The common case, run once: fc8 retrained on the digits from cached fc7 features."""
    from alexft.train import finetune

    def train(folder):
        # Default options (lr auto) but for what is kept, so the tests can compare best and last.
        summary = finetune(digits_folder, weights=canonical_weights_file, epochs=30, batch_size=16, val_split=0.2,
                           keep_last=True, keep_checkpoint=True, output=folder / "fc8", progress=False,
                           log=lambda message: None)
        (folder / "summary.json").write_text(json.dumps(summary))

    folder = built_once(tmp_path_factory, worker_id, "runs", train)
    return json.loads((folder / "summary.json").read_text()), folder / "fc8"


@pytest.fixture(scope="session")
def predictor(canonical_weights_file):
    from alexft.predict import load_predictor

    return load_predictor(canonical_weights_file, download=False)


@pytest.fixture(scope="session")
def shared_feature_store(tmp_path_factory, worker_id):
    """One feature store for the whole session, both workers: its entries are named by content,
    so a test reads only features of its own weights and images, and the dozens of short runs on
    the same digits compute them once. tests/test_feature_store.py tests the store itself on
    stores of its own, as does every test that needs the features computed."""
    root = tmp_path_factory.getbasetemp()
    return (root.parent if worker_id != "master" else root) / "feature_store"


@pytest.fixture(scope="session", autouse=True)
def isolated_session(shared_feature_store, tmp_path_factory):
    """Session- and module-wide fixtures (fc8_run...) run before any test's own isolation
    below: they too must never write into the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ALEXFT_CACHE", str(tmp_path_factory.mktemp("session_cache")))
        patch.setenv("ALEXFT_FEATURE_STORE", str(shared_feature_store))
        patch.delenv("ALEXFT_FEATURE_STORE_GB", raising=False)
        yield


@pytest.fixture(autouse=True)
def isolated_weight_sources(tmp_path, monkeypatch):
    """No test may find or download weights from the user's real places by accident."""
    monkeypatch.delenv("ALEXFT_WEIGHTS", raising=False)
    monkeypatch.setenv("ALEXFT_CACHE", str(tmp_path / "cache"))  # the feature store stays the session's
    monkeypatch.setenv("ALEXFT_WEIGHTS_URL", "http://127.0.0.1:9/unreachable.npy")
    # classify's default would build a LiteRT copy (~25 s) in every test's fresh cache;
    # tests/test_fast_start.py is where that path is tested.
    monkeypatch.setenv("ALEXFT_RUNTIME", "tensorflow")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("alexft.weights.download.RETRY_DELAY", 0)  # retries of a dropped download, without the pause


@pytest.fixture(scope="session")
def real_weights_file():
    """The real bvlc_alexnet.npy, when ALEXFT_WEIGHTS points at it."""
    if not REAL_WEIGHTS or not Path(REAL_WEIGHTS).is_file():
        pytest.skip("needs the real bvlc_alexnet.npy: set ALEXFT_WEIGHTS to its path")
    return Path(REAL_WEIGHTS)


def _release_memory():
    """What a test module leaves (models, traced functions, freed TensorFlow buffers) goes back
    to the system: two workers each holding several GB of freed heap exhausted a 24 GB machine."""
    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session(free_memory=True)
    _return_freed_memory()


def _return_freed_memory():
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


@pytest.fixture(scope="module", autouse=True)
def release_memory_after_each_module():
    yield
    _release_memory()


TRIM_AFTER_GROWTH_MIB = 1024
# Above this, Keras' session is cleared too, when the worker has grown as much again: with
# trimming alone a worker grew to 12-15 GB (beside 8 GB in the other: 22.7 of the machine's
# 24 GB; once killed for memory). Cleared after every test above it, the run's peak was 19.1 GB,
# but each small test paid for it (+330 test-seconds, 26 to 29 minutes on a Zen 4). Most of
# that growth was finetune's, since freed (alexft/traced_gradients.py): the peak is 15.7 GB.
CLEAR_ABOVE_MIB = 3072
_resident_after_last_trim = [0]


@pytest.fixture(autouse=True)
def release_freed_memory_after_each_test():
    """The cheap part, once a worker has grown by TRIM_AFTER_GROWTH_MIB since it last did it: a
    worker running one long module (test_train.py) grew to 7 GB without it. Not after every
    test: collecting and trimming cost about 0.5 s each time, 3 worker-minutes a run."""
    yield
    resident = _resident_mib()
    if resident is None or resident > _resident_after_last_trim[0] + TRIM_AFTER_GROWTH_MIB:
        if resident is not None and resident > CLEAR_ABOVE_MIB:  # what trimming cannot return: Keras' caches
            _release_memory()
        else:
            _return_freed_memory()
        _resident_after_last_trim[0] = _resident_mib() or 0


def _resident_mib():
    import resource

    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize() >> 20
    except OSError:  # not Linux: unknown (so trimmed after every test)
        return None


MEMORY_LOG = os.environ.get("ALEXFT_TEST_MEMORY_LOG")


def pytest_runtest_logfinish(nodeid, location):
    """ALEXFT_TEST_MEMORY_LOG=FILE: each test's end and its process' resident memory, for
    finding the tests that make a worker grow."""
    if MEMORY_LOG:
        with open(MEMORY_LOG, "a") as log:
            log.write(f"{os.getpid()} {_resident_mib()} {nodeid}\n")


# The longest files first (seconds per file from `pytest --durations=0`, 2026-12-02; 722 s for
# test_train.py down to 93 s). pytest-xdist hands out whole files (--dist loadfile) to whichever
# worker is free, so a long file started late keeps one worker busy while the other idles;
# longest-first ends both about together (22 against 23-26 minutes, simulated on those times).
# A file not listed keeps its place after these; only the order changes, never what runs.
LONGEST_FIRST = ["test_train.py", "test_docs.py", "test_multiworker.py", "test_convergence.py", "test_notebooks.py",
                 "test_faults.py", "test_winograd.py", "test_fast_start.py", "test_keras_app.py"]


def pytest_collection_modifyitems(items):
    rank = {name: place for place, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's own order stays
