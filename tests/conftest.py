"""Session-wide fixtures: the expensive things are built once per test session."""
import os
import sys
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def canonical_params():
    """Random weights with the exact shapes of bvlc_alexnet.npy."""
    return random_params(seed=0)


@pytest.fixture(scope="session")
def canonical_weights_file(tmp_path_factory, canonical_params):
    """A full-size (233 MB) bvlc_alexnet.npy written as Python 2's numpy wrote it."""
    return write_python2_npy(tmp_path_factory.mktemp("weights") / "bvlc_alexnet.npy", canonical_params)


@pytest.fixture(scope="session")
def canonical_caffemodel(tmp_path_factory, canonical_params):
    """The same weights as Caffe's bvlc_alexnet.caffemodel would hold them (new `layer` form)."""
    from caffemodel import write_canonical_caffemodel

    return write_canonical_caffemodel(tmp_path_factory.mktemp("caffe") / "bvlc_alexnet.caffemodel", canonical_params)


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory):
    """scikit-learn's digits as class folders: 30 images per digit."""
    from fixtures import write_digits_folder

    return write_digits_folder(tmp_path_factory.mktemp("digits") / "data", per_class=30)


@pytest.fixture(scope="session")
def small_digits_folder(tmp_path_factory):
    """6 images per digit: enough for runs that test mechanics rather than accuracy."""
    from fixtures import write_digits_folder

    return write_digits_folder(tmp_path_factory.mktemp("digits_small") / "data", per_class=6, seed=1)


@pytest.fixture(scope="session")
def fc8_run(digits_folder, canonical_weights_file, tmp_path_factory):
    """The common case, run once: fc8 retrained on the digits from cached fc7 features."""
    from alexft.train import finetune

    output = tmp_path_factory.mktemp("runs") / "fc8"
    summary = finetune(digits_folder, weights=canonical_weights_file, epochs=30, batch_size=16, val_split=0.2,
                       output=output, progress=False, log=lambda message: None)
    return summary, output


@pytest.fixture(scope="session")
def predictor(canonical_weights_file):
    from alexft.predict import load_predictor

    return load_predictor(canonical_weights_file, download=False)


@pytest.fixture(autouse=True)
def isolated_weight_sources(tmp_path, monkeypatch):
    """No test may find or download weights from the user's real places by accident."""
    monkeypatch.delenv("ALEXFT_WEIGHTS", raising=False)
    monkeypatch.setenv("ALEXFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ALEXFT_WEIGHTS_URL", "http://127.0.0.1:9/unreachable.npy")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("alexft.download.RETRY_DELAY", 0)  # retries of a dropped download, without the pause


@pytest.fixture(scope="session")
def real_weights_file():
    """The real bvlc_alexnet.npy, when ALEXFT_WEIGHTS points at it."""
    if not REAL_WEIGHTS or not Path(REAL_WEIGHTS).is_file():
        pytest.skip("needs the real bvlc_alexnet.npy: set ALEXFT_WEIGHTS to its path")
    return Path(REAL_WEIGHTS)
