"""`--precision bfloat16` (classify, evaluate, features, export): the weights are held in
bfloat16, inputs and outputs stay float32, and the answers stay close to float32's."""
import json

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from alexft.cli import main
from alexft.cpu_features import cpu_has_bfloat16
from alexft.predict import load_predictor
from alexft.preprocess import image_views
from fixtures import photo_paths

# bfloat16 keeps 8 significant bits: each weight and activation is rounded by up to 2^-9
# relatively. Over eight layers the logits move by about 1% of their size, which moves a
# softmax probability by at most about that much; 0.02 leaves room for the rounding adding up.
PROBABILITY_TOLERANCE = 0.02


@pytest.fixture(scope="module")
def photos():
    return sorted(photo_paths().values())


@pytest.fixture(scope="module")
def views(photos):
    return np.concatenate([image_views(path) for path in photos])


@pytest.fixture(scope="module")
def bfloat16_predictor(canonical_weights_file):
    return load_predictor(canonical_weights_file, download=False, precision="bfloat16")


def test_the_weights_are_held_in_bfloat16_and_the_answers_stay_close(bfloat16_predictor, predictor, views):
    assert {weight.dtype for weight in bfloat16_predictor.model.weights} == {"bfloat16"}
    expected = predictor.probabilities(views)
    for fused_lrn in (False, True):
        got = bfloat16_predictor.probabilities(views, fused_lrn=fused_lrn)
        assert got.dtype == np.float32 and got.shape == expected.shape
        assert np.abs(got - expected).max() <= PROBABILITY_TOLERANCE
        assert (got.argmax(1) == expected.argmax(1)).all()
        assert np.abs(got.sum(1) - 1).max() < 1e-5
    # Not float32 in disguise: rounding to bfloat16 leaves a trace.
    assert np.abs(bfloat16_predictor.probabilities(views) - expected).max() > 1e-6


def test_classify_and_features_take_bfloat16(canonical_weights_file, photos, tmp_path, caplog):
    runner = CliRunner()
    weights = ["--weights", str(canonical_weights_file)]
    result = runner.invoke(main, ["classify", "--json", "--precision", "bfloat16", *weights, *map(str, photos)])
    assert result.exit_code == 0, result.output
    float32 = runner.invoke(main, ["classify", "--json", *weights, *map(str, photos)])
    assert _top1(result.stdout) == _top1(float32.stdout) and len(_top1(result.stdout)) == len(photos)
    lacks = cpu_has_bfloat16() is False and not tf.config.list_physical_devices("GPU")
    assert ("no bfloat16 instructions" in caplog.text) == lacks

    for precision in ("float32", "bfloat16"):
        result = runner.invoke(main, ["features", *map(str, photos), "--layer", "fc7", "--precision", precision,
                                      "--output", str(tmp_path / f"{precision}.npz"), *weights])
        assert result.exit_code == 0, result.output
    with np.load(tmp_path / "float32.npz") as exact, np.load(tmp_path / "bfloat16.npz") as rounded:
        assert rounded["features"].dtype == np.float32
        scale = np.abs(exact["features"]).max()
        assert np.abs(rounded["features"] - exact["features"]).max() <= 0.05 * scale


def _top1(json_lines):
    return [json.loads(line)["predictions"][0]["label"] for line in json_lines.splitlines()]


def test_a_bfloat16_saved_model_serves_float32_answers(canonical_weights_file, predictor, views, tmp_path, caplog):
    output = tmp_path / "bf16_model"
    result = CliRunner().invoke(main, ["export", str(output), "--precision", "bfloat16",
                                       "--weights", str(canonical_weights_file)])
    assert result.exit_code == 0, result.output
    assert "savedmodel, bfloat16" in result.stdout
    said = [message for message in caplog.messages if not message.startswith("this CPU has no bfloat16 instructions")]
    assert said == [f"{output}: writing a SavedModel folder (bfloat16 weights)"]  # (seconds without a word before; an AVX2 CPU also warns)
    served = tf.saved_model.load(str(output)).signatures["preprocessed"](views=tf.constant(views))
    probabilities = served["probabilities"].numpy()
    assert probabilities.dtype == np.float32
    assert np.abs(probabilities - predictor.probabilities(views)).max() <= PROBABILITY_TOLERANCE
