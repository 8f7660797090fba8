"""Images to probabilities, end to end, against the reference pipeline written in the test."""
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import alexft
import reference
from alexft import weights
from alexft import model as network
from alexft.predict import classify, load_predictor, predict_files, predict_views, top_k
from fixtures import photo_paths

PHOTOS = ["chelsea", "coffee", "camera", "china", "flower"]


def reference_probabilities(params, path, ten_crop):
    """Caffe's recipe spelled out: decode, resize 256, float, subtract mean, crop(s), softmax, mean."""
    image = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
    image = cv2.resize(image, (256, 256), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    image -= np.array([104.00698793, 116.66876762, 122.67891434], np.float32)
    if not ten_crop:
        views = image[None, 14:241, 14:241]
    else:
        corners = [image[r:r + 227, c:c + 227] for r, c in [(0, 0), (0, 29), (29, 0), (29, 29), (14, 14)]]
        views = np.stack(corners + [crop[:, ::-1] for crop in corners])
    return reference.softmax(reference.forward(params, views)).mean(axis=0)


@pytest.mark.parametrize("ten_crop", [False, True], ids=["centre", "ten-crop"])
def test_probabilities_match_reference_on_real_photos(predictor, canonical_params, ten_crop):
    paths = [photo_paths()[name] for name in PHOTOS]
    results = list(predict_files(predictor, paths, ten_crop=ten_crop, batch_size=2))
    assert [path for path, _, _ in results] == paths
    for path, probabilities, error in results:
        assert error is None
        expected = reference_probabilities(canonical_params, path, ten_crop)
        np.testing.assert_allclose(probabilities, expected, rtol=1e-3, atol=1e-6)
        assert np.argmax(probabilities) == np.argmax(expected)


def test_bad_file_in_a_batch_is_reported_and_others_unaffected(predictor, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really")
    paths = [photo_paths()["chelsea"], broken, photo_paths()["coffee"]]
    results = list(predict_files(predictor, paths, batch_size=2))
    assert [path for path, _, _ in results] == paths
    assert results[1][1] is None and str(broken) in results[1][2]
    alone = list(predict_files(predictor, [paths[2]]))[0][1]
    np.testing.assert_allclose(results[2][1], alone, rtol=1e-5)


def test_the_bar_counts_a_batch_before_its_results_are_handed_out(predictor, monkeypatch):
    """On a terminal, classify's bar read 0% while a whole batch's lines printed, then jumped:
    it counted each batch after its results were printed."""
    import contextlib

    import alexft.predict as predict_module

    class Bar:
        n = 0

        def update(self, count):
            self.n += count

    bar = Bar()
    monkeypatch.setattr(predict_module, "progress_bar", lambda *args, **kwargs: contextlib.nullcontext(bar))
    paths = list(photo_paths().values())[:3]
    assert [bar.n for _ in predict_views(predictor, paths, batch_size=2, progress=False)] == [2, 2, 3]


def test_fused_lrn_path_matches_reference_on_real_photos(predictor, canonical_params):
    paths = [photo_paths()[name] for name in PHOTOS]
    for path, views, error in predict_views(predictor, paths, ten_crop=True, batch_size=2, fused_lrn=True):
        assert error is None
        np.testing.assert_allclose(views.mean(axis=0), reference_probabilities(canonical_params, path, True),
                                   rtol=1e-3, atol=1e-6)


def test_long_runs_use_the_fused_lrn_on_full_batches_only(predictor, monkeypatch, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    calls = []
    probabilities = predictor.probabilities
    monkeypatch.setattr(predictor, "probabilities",
                        lambda views, fused_lrn=False: calls.append((len(views), fused_lrn)) or probabilities(views, fused_lrn))

    def batches(paths, threshold, **options):
        monkeypatch.setattr(network, "FUSED_LRN_MIN_VIEWS", threshold)
        calls.clear()
        list(predict_views(predictor, paths, batch_size=2, **options))
        return calls.copy()

    photos = [photo_paths()[name] for name in PHOTOS]
    assert batches(photos, 5) == [(2, True), (2, True), (1, False)]  # the short last batch: no new compile
    assert batches(photos, 6) == [(2, False), (2, False), (1, False)]
    assert batches(photos[:2], 20, ten_crop=True) == [(20, True)]  # views count, not images
    assert batches([photos[0], broken, *photos[1:3]], 4) == [(1, False), (2, True)]
    assert batches(photos[:3], 100, fused_lrn=True) == [(2, True), (1, False)]


def test_top_k_is_sorted_and_labelled():
    probabilities = np.array([0.1, 0.5, 0.05, 0.35])
    assert top_k(probabilities, ["a", "b", "c", "d"], k=3) == [
        {"index": 1, "label": "b", "probability": 0.5},
        {"index": 3, "label": "d", "probability": 0.35},
        {"index": 0, "label": "a", "probability": 0.1},
    ]
    assert len(top_k(probabilities, list("abcd"), k=10)) == 4
    with pytest.raises(ValueError, match=r"top_k takes one image's probabilities, shaped \(classes,\); got \(2, 4\)"):
        top_k(np.stack([probabilities] * 2), list("abcd"), 3)
    for wrong in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=f"k must be a whole number of at least 1; got {wrong!r}"):
            top_k(probabilities, list("abcd"), wrong)
    with pytest.raises(ValueError, match=r"top_k got 4 probabilities and 2 class names; give the names of the "
                                         r"model's own classes \(predictor.class_names\)"):
        top_k(probabilities, ["a", "b"], 3)  # was an IndexError from inside


def test_the_api_refuses_a_top_of_no_classes_and_answers_an_empty_batch(predictor):
    photo = photo_paths()["chelsea"]
    for wrong in (0, -1):  # -1 once gave 999 classes, 0 an empty list
        with pytest.raises(ValueError, match=f"top must be a whole number of at least 1; got {wrong}"):
            classify(predictor, photo, top=wrong)  # at the call, before any result is asked for
    for wrong in ("3", 2.0, True):  # a wrong type: a TypeError, as documented, and a ValueError, as before
        with pytest.raises(TypeError, match=f"top must be a whole number of at least 1; got {wrong!r}") as raised:
            classify(predictor, photo, top=wrong)
        assert isinstance(raised.value, ValueError)
    from alexft.train_options import OptionsError

    for wrong in ({"precision": "fp16"}, {"runtime": "openvno"}):  # a mistaken option: an OptionsError, a ValueError
        with pytest.raises(OptionsError, match=f"unknown {next(iter(wrong))} '{next(iter(wrong.values()))}'; choose"):
            alexft.load_predictor(photo_paths()["chelsea"], **wrong)
    # LiteRT, which classify's --runtime takes, has a function of its own in Python: named.
    with pytest.raises(OptionsError, match=r"^unknown runtime 'litert'; choose one of tensorflow, openvino \(LiteRT's copy: "
                                           r"alexft.load_litert_predictor\)$"):
        alexft.load_predictor(photo_paths()["chelsea"], runtime="litert")
    assert len(next(classify(predictor, photo, top=2))["predictions"]) == 2
    # A batch size of 0 or less put every image into one batch (4.4 GB for 600 digits).
    for wrong in (0, -3, 2.0):
        with pytest.raises(ValueError, match=f"^batch_size must be a whole number of at least 1; got {wrong!r}$"):
            classify(predictor, photo, batch_size=wrong)
        with pytest.raises(ValueError, match="^batch_size must be"):
            next(predict_files(predictor, photo, batch_size=wrong))
        for call in (lambda: alexft.extract_features(predictor, photo, "fc7", "never.npz", batch_size=wrong),
                     lambda: alexft.evaluate(predictor, photo.parent, batch_size=wrong)):
            with pytest.raises(ValueError, match="^batch_size must be"):
                call()
    # ten_crop="no" is truthy, and classify ran ten crops on it (a helper's trial): refused as a wrong type.
    for call in (lambda: classify(predictor, photo, ten_crop="no"), lambda: next(predict_files(predictor, photo, "no")),
                 lambda: alexft.evaluate(predictor, photo.parent, ten_crop="no"),
                 lambda: alexft.extract_features(predictor, photo, "fc7", "never.npz", ten_crop="no")):
        with pytest.raises(TypeError, match="^ten_crop is True or False, not str 'no'$"):
            call()
    assert not Path("never.npz").exists()
    # preprocess_input gives one image's view (227, 227, 3); the advice was to call preprocess_input.
    with pytest.raises(ValueError, match=r"got one view, \(227, 227, 3\): add the batch axis \(views\[np.newaxis\]\)"):
        predictor.probabilities(np.zeros((227, 227, 3), np.float32))
    # A list of views was "got list ()"; encoded bytes and None were "... shaped (H, W, 3) ...; got ()".
    with pytest.raises(TypeError, match=r"one array of views, .*; got a list of 2: np.stack\(views\) makes one$"):
        predictor.probabilities([np.zeros((227, 227, 3), np.float32)] * 2)
    with pytest.raises(TypeError, match=r"not an image file's encoded bytes: decode them first .*alexft.image_views\(path\)$"):
        alexft.preprocess_input(photo.read_bytes())
    with pytest.raises(TypeError, match=r"takes pixels \(arrays, tensors, PIL images\), not None$"):
        alexft.preprocess_input(None)
    # Images of different sizes as numpy holds them, an object array: each prepared, as a list is.
    images = [np.full((40, 60, 3), 200, np.uint8), np.zeros((30, 30, 3), np.uint8)]
    held = np.empty(2, object)
    held[:] = images
    np.testing.assert_array_equal(alexft.preprocess_input(held), np.stack([alexft.preprocess_input(i) for i in images]))
    empty = predictor.probabilities(np.zeros((0, 227, 227, 3), np.float32))
    assert empty.shape == (0, 1000) and empty.dtype == np.float32


def test_fine_tuned_weights_classify_with_their_own_labels(canonical_params, tmp_path):
    params = {name: tuple(pair) for name, pair in canonical_params.items()}
    params["fc8"] = (params["fc8"][0][:, :3].copy(), params["fc8"][1][:3].copy())
    path = weights.save(weights.WeightSet(params, ["cat", "cup", "rocket"]), tmp_path / "mine.npz")
    predictor = load_predictor(path, download=False)
    [result] = classify(predictor, [photo_paths()["chelsea"]], top=5)
    assert {p["label"] for p in result["predictions"]} == {"cat", "cup", "rocket"}
    assert abs(sum(p["probability"] for p in result["predictions"]) - 1) < 1e-5


def test_golden_photos_with_the_real_weights(real_weights_file):
    predictor = load_predictor(real_weights_file, download=False)
    cat, coffee = classify(predictor, [photo_paths()["chelsea"], photo_paths()["coffee"]], top=5)
    cat_labels = " | ".join(p["label"] for p in cat["predictions"])
    coffee_labels = " | ".join(p["label"] for p in coffee["predictions"])
    assert any(name in cat_labels for name in ("tabby", "tiger cat", "Egyptian cat", "Persian cat", "lynx")), cat_labels
    assert any(name in coffee_labels for name in ("espresso", "cup", "coffee mug")), coffee_labels


def test_a_stopped_decoding_run_does_not_wait_for_a_worker_stuck_on_its_input():
    """A user's Ctrl-C (and SIGTERM) did nothing while a decoding thread waited on a named pipe or
    on standard input from a pipe: the thread pool's exit joined the blocked worker. Work not yet
    started is dropped too."""
    from alexft.pipeline import map_ahead

    release, started = threading.Event(), []

    def decode(item):
        started.append(item)
        if item == 0:
            release.wait(60)  # a FIFO nobody writes to
        else:
            time.sleep(0.05)  # a photo's decoding
        return item

    def items():
        yield 0
        yield from range(1, 50)
        raise KeyboardInterrupt  # Ctrl-C while the listing goes on

    begun = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            list(map_ahead(decode, items(), workers=2, ahead=64))
        assert time.monotonic() - begun < 30  # the stuck worker would hold it 60 s
        assert len(started) < 50  # queued work was cancelled, not run to the end
    finally:
        release.set()
    assert list(map_ahead(decode, range(5), workers=2, ahead=2)) == list(range(5))  # a run to its end is as before


def test_a_python_process_ends_though_a_stopped_run_left_a_worker_stuck_on_its_input(tmp_path):
    """From Python, a classify stopped by Ctrl-C while a decoding thread waited on a named pipe
    returned, but the interpreter then hung at exit: it joined the thread pool's workers. Errors
    from the function still reach the caller, and a worker's other items go on after one."""
    script = tmp_path / "stuck.py"
    script.write_text("""
import threading
from alexft.pipeline import map_ahead

def decode(item):
    if item == 0:
        threading.Event().wait()  # a FIFO nobody writes to, for ever
    if item == 3:
        raise ValueError("broken 3")
    return item

results = map_ahead(decode, range(1, 6), workers=2, ahead=2)
try:
    list(results)
except ValueError as error:
    print("raised", error)
stopped = map_ahead(decode, [1, 2, 0, 4, 5], workers=2, ahead=3)
print("got", next(stopped), next(stopped))
stopped.close()  # the caller gone while one worker waits for ever
print("returned")
""")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["raised broken 3", "got 1 2", "returned"]
