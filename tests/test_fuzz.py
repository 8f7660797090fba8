"""Fuzzing: random and mutated bytes never crash or hang the image reader or the weights
loader; they give the documented one-line errors (ImageError, WeightsError).

Bounded in time: a fixed number of examples each, and a deadline per example that would
catch a hang. The seeds are derandomised so CI runs the same cases every time; run with
`pytest tests/test_fuzz.py --hypothesis-seed=N -p no:randomly` and a higher
`ALEXFT_FUZZ_EXAMPLES` to search further.
"""
import os
from datetime import timedelta

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alexft import weights
from alexft.errors import ImageError, WeightsError
from alexft.preprocess import decode_image
from caffemodel import tiny_params, to_caffe_layout, write_caffemodel
from fixtures import photo_paths
from py2pickle import python2_npy_bytes

EXAMPLES = int(os.environ.get("ALEXFT_FUZZ_EXAMPLES", "300"))
# A hang, not a slow case: the examples take milliseconds (300 in 1.4 s alone), but one stalled for
# 6.9 s beside the other CI worker's TensorFlow on a 2-core machine.
FUZZ = settings(max_examples=EXAMPLES, deadline=timedelta(seconds=30), derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _encoded_images():
    """A small real photo in every format the reader accepts."""
    image = cv2.resize(cv2.imread(str(photo_paths()["chelsea"])), (48, 32))
    encoded = {}
    for suffix in (".png", ".jpg", ".bmp", ".webp", ".tif", ".ppm", ".jp2"):
        ok, data = cv2.imencode(suffix, image)
        assert ok
        encoded[suffix] = data.tobytes()
    from PIL import Image
    import io

    buffer = io.BytesIO()
    Image.fromarray(image[:, :, ::-1]).save(buffer, format="GIF")
    encoded[".gif"] = buffer.getvalue()
    return encoded


ENCODED = _encoded_images()


@st.composite
def mutated(draw, originals):
    """One of `originals` with a few bytes flipped, a slice cut out or repeated, or truncated."""
    data = bytearray(draw(st.sampled_from(sorted(originals.values(), key=len))))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "cut", "repeat", "zero_run"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "cut":
            del data[at:at + draw(st.integers(1, 64))]
        elif kind == "repeat":
            data[at:at] = data[at:at + draw(st.integers(1, 64))] * draw(st.integers(1, 8))
        else:
            data[at:at + draw(st.integers(1, 64))] = bytes(draw(st.integers(1, 64)))
    return bytes(data)


def _decodes_or_says_why(data):
    try:
        image = decode_image(data, "fuzz.bin")
    except ImageError as error:
        assert str(error).startswith("fuzz.bin: ") and "\n" not in str(error)
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes_to_the_image_reader(data):
    _decodes_or_says_why(data)


@FUZZ
@given(mutated(ENCODED))
def test_mutated_images_to_the_image_reader(data):
    _decodes_or_says_why(data)


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """A tiny network (the parsers' work without 233 MB per example) in the three formats."""
    folder = tmp_path_factory.mktemp("fuzz_weights")
    params = tiny_params(seed=1)
    weights.save(weights.WeightSet(params), folder / "tiny.npz")
    write_caffemodel(folder / "tiny.caffemodel", to_caffe_layout(params))
    return _Originals(npy=python2_npy_bytes(params), npz=(folder / "tiny.npz").read_bytes(),
                      caffemodel=(folder / "tiny.caffemodel").read_bytes())


class _Originals(dict):
    def __repr__(self):  # keeps hypothesis's report of a failing case readable
        return f"<weight files: {', '.join(self)}>"


def _loads_or_says_why(path, data):
    path.write_bytes(data)
    for reader in (weights.read, weights.load):
        try:
            reader(path)
        except WeightsError as error:
            assert str(error).startswith(str(path)) and "\n" not in str(error), str(error)


@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes_to_the_weights_loader(tmp_path, data):
    _loads_or_says_why(tmp_path / "fuzz.npy", data)


@FUZZ
@given(data=st.data())
def test_mutated_weight_files_to_the_weights_loader(tmp_path, weight_files, data):
    _loads_or_says_why(tmp_path / "fuzz.weights", data.draw(mutated(weight_files)))


def test_error_messages_are_folded_to_one_line():
    error = WeightsError("model.npy: corrupt .npy header: Header info length (10054) is large\nand may not be safe")
    assert str(error) == "model.npy: corrupt .npy header: Header info length (10054) is large and may not be safe"
