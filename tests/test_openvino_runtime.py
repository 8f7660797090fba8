"""`--runtime openvino` (alexft/openvino_runtime.py): the network on OpenVINO's CPU plugin gives
the float64 reference's answers (tests/reference.py, written from Caffe's definition) and
TensorFlow's, on real photos, for ImageNet's 1000 classes and a fine-tuned model's ten."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from alexft import weights as weights_io
from alexft.cli import main
from alexft.demo import sample_photos
from alexft.errors import AlexftError
from alexft.openvino_runtime import OpenVinoPredictor, openvino_installed
from alexft.predict import load_predictor
from alexft.preprocess import image_views

import reference

pytestmark = pytest.mark.skipif(not openvino_installed(), reason="needs openvino (pip install 'alexft[openvino]')")

PHOTOS = sorted(sample_photos().values())


def _sharp(params, classes=None, scale=40.0, seed=0):
    """Generated weights give a flat softmax (top class ~3%); a scaled fc8 makes it confident, where
    a difference in the logits shows in the probabilities. `classes`: a new fc8 of that many."""
    params = {name: [array.copy() for array in arrays] for name, arrays in params.items()}
    if classes is not None:
        rng = np.random.default_rng(seed)
        params["fc8"] = [rng.normal(0, 0.01, (4096, classes)).astype(np.float32), rng.normal(0, 1, classes).astype(np.float32)]
    params["fc8"] = [params["fc8"][0] * scale, params["fc8"][1]]
    return params


def _loud(params, views, classes=None):
    """Weights under which the LRN matters as in the real network: generated conv1 weights give
    activations up to about 11, which Caffe's LRN leaves within 0.3%; 30 times that, as the real
    conv1's hundreds, it divides them by up to 3. fc8 is then scaled to logits with a spread of 3
    (from the reference's fc7), so the softmax is confident but not saturated.
    Returns (params, the reference's probabilities)."""
    params = _sharp(params, classes, scale=1.0)
    params["conv1"] = [params["conv1"][0] * 30, params["conv1"][1]]
    fc7 = reference.forward(params, views, until="fc7")
    weights, biases = params["fc8"]
    params["fc8"] = [weights * np.float32(3 / (fc7 @ weights).std(axis=1).mean()), biases]
    return params, reference.softmax(fc7 @ params["fc8"][0].astype(np.float64) + biases)


def _assert_same_top5(got, expected):
    """The same five classes in the same order, but for classes within 1e-5 of each other (a
    confident softmax leaves its runners-up near zero, where their order is noise)."""
    chosen = np.take_along_axis(expected, np.argsort(-got, axis=1)[:, :5], axis=1)
    assert np.abs(chosen - -np.sort(-expected, axis=1)[:, :5]).max() <= 1e-5
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()


@pytest.mark.parametrize("classes", [None, 10])
def test_float32_gives_the_reference_answers_on_real_photos(canonical_params, classes):
    names = [f"class {index}" for index in range(classes or 1000)]
    views = np.concatenate([image_views(photo) for photo in PHOTOS[:3]])
    params, expected = _loud(canonical_params, views, classes)
    assert 0.3 < expected.max(axis=1).min() and expected.max(axis=1).max() < 0.999  # confident, not saturated
    predictor = OpenVinoPredictor(params, names)
    got = predictor.probabilities(views)
    assert got.shape == expected.shape and got.dtype == np.float32
    assert np.abs(got - expected).max() <= 1e-5
    _assert_same_top5(got, expected)
    # One view, then the three again: each batch size has its own compiled network.
    assert np.abs(predictor.probabilities(views[1:2]) - expected[1:2]).max() <= 1e-5
    assert np.array_equal(predictor.probabilities(views), got)
    assert predictor.class_names == names


def test_agrees_with_tensorflow_on_ten_crops_through_load_predictor(canonical_weights_file, predictor):
    views = np.concatenate([image_views(photo, ten_crop=True) for photo in PHOTOS])
    openvino = load_predictor(canonical_weights_file, download=False, runtime="openvino")
    assert openvino.class_names == predictor.class_names
    expected = predictor.probabilities(views)
    got = openvino.probabilities(views)
    assert got.shape == (10 * len(PHOTOS), 1000)
    assert np.abs(got - expected).max() <= 1e-5
    assert openvino.probabilities(np.zeros((0, 227, 227, 3), np.float32)).shape == (0, 1000)  # as TensorFlow's
    with pytest.raises(ValueError, match="the network takes preprocessed views"):
        openvino.probabilities(np.zeros((1, 300, 300, 3), np.uint8))


def test_compiled_networks_are_kept_for_a_few_batch_sizes(canonical_params):
    from alexft.openvino_runtime import MAX_COMPILED

    predictor = OpenVinoPredictor(canonical_params, weights_io.imagenet_class_names())
    views = np.random.default_rng(1).normal(0, 50, (MAX_COMPILED + 2, 227, 227, 3)).astype(np.float32)
    first = predictor.probabilities(views[:1])
    for size in range(2, MAX_COMPILED + 3):
        predictor.probabilities(views[:size])
    assert len(predictor._requests) == MAX_COMPILED
    assert 1 not in predictor._requests  # the oldest went
    assert np.array_equal(predictor.probabilities(views[:1]), first)  # and is compiled again when met


def test_bfloat16_is_near_float32_and_computed_in_bfloat16_where_the_cpu_has_it(canonical_params):
    from alexft.cpu_features import cpu_has_bfloat16

    params = _sharp(canonical_params, scale=4.0)  # top probabilities 0.65-1: not saturated, not flat
    views = np.concatenate([image_views(photo) for photo in PHOTOS])
    exact = OpenVinoPredictor(params, weights_io.imagenet_class_names()).probabilities(views)
    half = OpenVinoPredictor(params, weights_io.imagenet_class_names(), precision="bfloat16").probabilities(views)
    difference = np.abs(half - exact).max()
    assert difference < 0.1
    assert (half.argmax(axis=1) == exact.argmax(axis=1)).all()
    if cpu_has_bfloat16():  # float32 would agree to 1e-6: bfloat16 was really used
        assert difference > 1e-4


def test_unknown_runtime_and_precision_are_refused(canonical_weights_file, canonical_params):
    with pytest.raises(AlexftError, match="unknown runtime 'openvno'; choose one of tensorflow, openvino"):
        load_predictor(canonical_weights_file, download=False, runtime="openvno")
    with pytest.raises(AlexftError, match="unknown precision 'float16'"):
        OpenVinoPredictor(canonical_params, weights_io.imagenet_class_names(), precision="float16")


def _alexft(*args, env=None):
    """The command in a process of its own, telling whether TensorFlow was imported."""
    script = ("import sys\nfrom alexft.cli import main\ntry:\n    main()\nfinally:\n"
              "    print('tensorflow imported:', 'tensorflow' in sys.modules, file=sys.stderr)\n")
    environment = dict(os.environ, **(env or {}))
    environment.pop("ALEXFT_RUNTIME", None)
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                          env=environment, timeout=600)


def test_classify_answers_as_tensorflow_does_without_importing_it(canonical_weights_file, tmp_path):
    common = ["classify", "--weights", canonical_weights_file, "--json", *PHOTOS[:2]]
    openvino = _alexft(*common, "--runtime", "openvino")
    tensorflow = _alexft(*common, "--runtime", "tensorflow")
    assert openvino.returncode == tensorflow.returncode == 0, openvino.stderr + tensorflow.stderr
    assert "tensorflow imported: False" in openvino.stderr
    assert "tensorflow imported: True" in tensorflow.stderr
    got, expected = ([json.loads(line) for line in run.stdout.splitlines()] for run in (openvino, tensorflow))
    assert [row["path"] for row in got] == [row["path"] for row in expected] == [str(photo) for photo in PHOTOS[:2]]
    for ours, theirs in zip(got, expected):
        assert [p["index"] for p in ours["predictions"]] == [p["index"] for p in theirs["predictions"]]
        assert np.allclose([p["probability"] for p in ours["predictions"]],
                           [p["probability"] for p in theirs["predictions"]], atol=1e-5)


def test_evaluate_measures_what_tensorflow_measures(fc8_run, small_digits_folder):
    model = fc8_run[1] / "model.npz"  # (trained on other images of the same digits)
    summaries = {}
    for runtime in ("openvino", "tensorflow"):
        result = CliRunner().invoke(main, ["evaluate", str(small_digits_folder), "--weights", str(model), "--ten-crop",
                                           "--json", "--runtime", runtime, "--no-progress"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        summaries[runtime] = json.loads(result.stdout)
    ours, theirs = summaries["openvino"], summaries["tensorflow"]
    assert ours["images"] == theirs["images"] > 0
    for protocol in ("centre", "ten_crop"):
        assert ours[protocol]["top1"] == theirs[protocol]["top1"]
        assert ours[protocol]["log_loss"] == pytest.approx(theirs[protocol]["log_loss"], abs=1e-4)


def test_runtime_openvino_without_openvino_is_a_usage_error_before_any_work(monkeypatch, tmp_path):
    from alexft import openvino_runtime

    monkeypatch.setattr(openvino_runtime, "openvino_installed", lambda: False)
    for command in (["classify", str(PHOTOS[0])], ["evaluate", str(tmp_path)]):
        result = CliRunner().invoke(main, [*command, "--weights", str(tmp_path / "missing.npz"), "--runtime", "openvino"])
        assert result.exit_code == 2, result.output
        assert "Invalid value for '--runtime': OpenVINO is not installed: pip install openvino" in result.output
    with pytest.raises(openvino_runtime.OpenVinoError, match=r"^OpenVINO is not installed: pip install openvino"):
        OpenVinoPredictor({}, ["a", "b"])  # (load_predictor(runtime="openvino") from Python)


def test_a_runtime_from_the_environment_is_named_as_such_in_its_errors(monkeypatch, tmp_path):
    """A helper's trial: with ALEXFT_RUNTIME set, the errors blamed a --runtime never typed."""
    from alexft import openvino_runtime

    monkeypatch.setattr(openvino_runtime, "openvino_installed", lambda: False)
    photo = ["classify", str(PHOTOS[0]), "--weights", str(tmp_path / "missing.npz")]
    cases = [("openvino", [], "OpenVINO is not installed: pip install openvino"),
             ("litert", ["--precision", "bfloat16"], "litert computes in float32; --precision bfloat16 runs on ")]
    for runtime, more, why in cases:
        from_environment = CliRunner().invoke(main, [*photo, *more], env={"ALEXFT_RUNTIME": runtime})
        assert from_environment.exit_code == 2, from_environment.output
        assert f"Invalid value for '--runtime' (from $ALEXFT_RUNTIME): {why}" in from_environment.output
        typed = CliRunner().invoke(main, [*photo, *more, "--runtime", runtime], env={"ALEXFT_RUNTIME": "auto"})
        assert typed.exit_code == 2 and f"Invalid value for '--runtime': {why}" in typed.output, typed.output


def test_openvino_is_imported_without_its_usage_telemetry(tmp_path):
    """OpenVINO's package sends an event to Google Analytics on import unless opted out, and
    writes ~/intel/stats and ~/intel/openvino_ga_cid when it does. alexft's import sends none,
    and leaves the environment as it was."""
    script = ("import os, sys\n"
              "from alexft.openvino_runtime import OpenVinoPredictor\n"
              "from alexft.weights import imagenet_class_names\n"
              "assert 'openvino' not in sys.modules\n"
              "OpenVinoPredictor({}, imagenet_class_names())\n"
              "assert 'openvino' in sys.modules\n"
              "print(os.environ.get('CI'))\n")
    environment = {key: value for key, value in os.environ.items() if key not in ("CI", "TF_BUILD", "JENKINS_URL")}
    done = subprocess.run([sys.executable, "-c", script], env=dict(environment, HOME=str(tmp_path)),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "None"
    assert not (tmp_path / "intel").exists(), sorted(path.name for path in (tmp_path / "intel").iterdir())
