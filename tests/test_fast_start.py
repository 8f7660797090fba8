"""Short classify calls on LiteRT (alexft/fast_start.py): the same answers as TensorFlow, the
reference, without importing it; the copy is built once per weights file and rebuilt when the
file changes."""
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from alexft import fast_start
from alexft.demo import sample_photos
from alexft.preprocess import image_views
from fixtures import as_at_a_terminal, mount_namespace
from test_preprocess import damaged_jpeg, encode, random_image

pytestmark = pytest.mark.skipif(not fast_start.litert_installed(), reason="needs ai-edge-litert")

PHOTOS = sorted(sample_photos().values())


def _views(ten_crop):
    return np.concatenate([image_views(photo, ten_crop) for photo in PHOTOS])


def _tensorflow_probabilities(weights, views):
    from alexft.predict import load_predictor

    return load_predictor(weights, download=False).probabilities(views)


def test_the_litert_copy_of_the_canonical_npy_agrees_with_tensorflow(canonical_weights_file, predictor):
    """The pickled bvlc_alexnet.npy as users hold it; six real photos, centre and ten crops."""
    lite = fast_start.load_litert_predictor(canonical_weights_file)
    assert lite.class_names == predictor.class_names
    for ten_crop in (False, True):
        views = _views(ten_crop)
        expected = predictor.probabilities(views)
        got = lite.probabilities(views)
        assert got.shape == expected.shape == (len(views), 1000)
        assert np.abs(got - expected).max() <= 1e-5
        assert (np.argsort(-got, axis=1)[:, :5] == np.argsort(-expected, axis=1)[:, :5]).all()
    assert lite.probabilities(np.zeros((0, 227, 227, 3), np.float32)).shape == (0, 1000)  # as TensorFlow's predictor
    with pytest.raises(ValueError, match="the network takes preprocessed views"):
        lite.probabilities(np.zeros((1, 300, 300, 3), np.uint8))


def test_the_copy_agrees_where_the_softmax_is_sharp(canonical_params, tmp_path, caplog):
    """Generated weights give a flat softmax (top class ~3%); fc8 x 40 makes it confident, where
    a difference in the logits shows in the probabilities. The build is announced in Python's
    words (it named --runtime tensorflow to a Python caller)."""
    from alexft import weights as weights_io

    params = {name: [array.copy() for array in arrays] for name, arrays in canonical_params.items()}
    params["fc8"] = [params["fc8"][0] * 40, params["fc8"][1]]
    # Class names that are not all ASCII (a model fine-tuned on folders named in any language).
    names = [f"{name} · n°{index} é" if index % 7 == 0 else name for index, name in enumerate(weights_io.imagenet_class_names())]
    sharp = weights_io.save(weights_io.WeightSet(params, names), tmp_path / "sharp.npz")
    views = _views(ten_crop=False)
    expected = _tensorflow_probabilities(sharp, views)
    assert expected.max(axis=1).min() > 0.5  # the case this test is about
    with caplog.at_level(logging.WARNING, logger="alexft.fast_start"):
        lite = fast_start.load_litert_predictor(sharp)
    assert "building a LiteRT copy" in caplog.text and "alexft.load_predictor (TensorFlow) skips it" in caplog.text
    assert "--runtime" not in caplog.text
    assert lite.class_names == names
    got = lite.probabilities(views)
    assert np.abs(got - expected).max() <= 1e-5
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()


def _classify(*args, cache):
    env = dict(os.environ, ALEXFT_CACHE=str(cache))
    env.pop("ALEXFT_RUNTIME", None)
    script = ("import sys\nfrom alexft.cli import main\ntry:\n    main()\nfinally:\n"
              "    print('tensorflow imported:', 'tensorflow' in sys.modules, file=sys.stderr)\n")
    return subprocess.run([sys.executable, "-c", script, "classify", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=600)


def test_auto_answers_on_tensorflow_builds_once_then_starts_without_it(canonical_weights_file, tmp_path):
    cache = tmp_path / "cache"
    photos = PHOTOS[:2]
    first = _classify("--weights", canonical_weights_file, "--json", *photos, cache=cache)
    assert first.returncode == 0, first.stderr
    assert "building a LiteRT copy" in first.stderr and "tensorflow imported: True" in first.stderr
    assert "--runtime tensorflow skips it" in first.stderr
    # The results came before the build, whose converter worked beside the copy and left nothing.
    assert first.stdout.count("\n") == 2
    assert not list(cache.rglob(".*.tmp-*")) and list(cache.rglob("*.tflite"))

    second = _classify("--weights", canonical_weights_file, "--json", *photos, cache=cache)
    assert second.returncode == 0, second.stderr
    assert "tensorflow imported: False" in second.stderr
    assert "building" not in second.stderr and "XNNPACK" not in second.stderr
    reference = _classify("--weights", canonical_weights_file, "--json", "--runtime", "tensorflow", *photos, cache=cache)
    assert "building" not in reference.stderr
    for lite, tensorflow in zip(_predictions(second), _predictions(reference), strict=True):
        assert [p["label"] for p in lite] == [p["label"] for p in tensorflow]
        assert np.allclose([p["probability"] for p in lite], [p["probability"] for p in tensorflow], rtol=0, atol=1e-5)

    # Damaged images, piped, on either runtime: the decoders' own lines are said naming the file
    # (LiteRT's first call holds descriptor 2 back briefly: the decodes meanwhile, of the images
    # after the first batch, wait for it).
    damaged = [tmp_path / f"damaged {index}.jpg" for index in range(6)]
    for index, path in enumerate(damaged):
        path.write_bytes(damaged_jpeg(index))
    cut = tmp_path / "cut.png"
    png = encode(random_image(), ".png")
    cut.write_bytes(png[: len(png) // 2])
    alexft = Path(sys.executable).parent / "alexft"
    for runtime in ("auto", "tensorflow"):
        result = subprocess.run([alexft, "classify", "--runtime", runtime, "--batch-size", "2", "--weights",
                                 canonical_weights_file, *damaged,
                                 photos[0], cut], capture_output=True, text=True, timeout=600,
                                env=dict(os.environ, ALEXFT_CACHE=str(cache)))
        assert result.returncode == 1, result.stderr
        assert [line for line in result.stdout.splitlines() if not line.startswith(" ")] == [*map(str, damaged), str(photos[0])]
        assert sorted(result.stderr.splitlines()) == sorted(
            [f"alexft: warning: {path}: damaged JPEG data, used as decoded (Corrupt JPEG data: premature end of data "
             "segment)" for path in damaged]
            + [f"error: {cut}: truncated PNG (no end chunk; libpng error: PNG input buffer is incomplete)",
               "alexft: 1 of 8 inputs could not be classified"]), result.stderr
    # --json: a damaged image's line says so too (only stderr had, which a program reading the
    # lines does not see).
    result = subprocess.run([alexft, "classify", "--json", "--weights", canonical_weights_file, damaged[0], photos[0]],
                            capture_output=True, text=True, timeout=600, env=dict(os.environ, ALEXFT_CACHE=str(cache)))
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(line["path"], line.get("warning"), len(line["predictions"])) for line in lines] == [
        (str(damaged[0]), "damaged JPEG data, used as decoded (Corrupt JPEG data: premature end of data segment)", 5),
        (str(photos[0]), None, 5)], result.stderr


def _predictions(completed):
    return [json.loads(line)["predictions"] for line in completed.stdout.splitlines()]


def test_a_changed_or_damaged_weights_copy_is_not_used(canonical_weights_file, tmp_path, monkeypatch):
    weights = tmp_path / "bvlc_alexnet.npy"
    shutil.copyfile(canonical_weights_file, weights)
    fast_start.build_copy(weights)
    model, record = fast_start.copy_paths(weights)
    os.utime(model, (1, 1))
    assert fast_start.current_copy(weights)[0] == model
    assert model.stat().st_mtime > time.time() - 60  # its use is recorded, for the cache's limit

    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # touched: the same bytes
    hashed, real_sha256 = [], fast_start.file_sha256
    monkeypatch.setattr(fast_start, "file_sha256", lambda path: hashed.append(path) or real_sha256(path))
    assert fast_start.current_copy(weights)[0] == model and len(hashed) == 1
    assert fast_start.current_copy(weights)[0] == model and len(hashed) == 1  # hashed once, then known
    contents = bytearray(weights.read_bytes())
    contents[-1] ^= 1  # replaced by other bytes of the same size
    weights.write_bytes(bytes(contents))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    assert fast_start.current_copy(weights) is None and len(hashed) == 2
    # Replaced in place keeping the time the copy knows (`cp -p`, rsync -a, tar: a fine-tuned
    # model.npz of the same class count has the same size): the old network answered.
    shutil.copyfile(canonical_weights_file, weights)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert fast_start.current_copy(weights)[0] == model and len(hashed) == 3  # the bytes the copy was built from
    weights.write_bytes(bytes(contents))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert fast_start.current_copy(weights) is None and len(hashed) == 4
    shutil.copyfile(canonical_weights_file, weights)

    # The copy of a weights file since deleted goes with the next build; another file's stays.
    # That build's conversion is the first's again (the same bytes): its ~10 s are spared.
    flatbuffer = model.read_bytes()
    monkeypatch.setattr("alexft.export.tflite_flatbuffer", lambda module, **options: flatbuffer)
    for name, source in (("gone", tmp_path / "gone.npz"), ("other", canonical_weights_file)):
        (model.parent / f"{name}.tflite").write_bytes(b"a copy")
        (model.parent / f"{name}.json").write_text(json.dumps({"source": {"path": str(source)}}))
    fast_start.build_copy(weights)
    assert fast_start.current_copy(weights) is not None
    assert sorted(path.name for path in model.parent.iterdir()) == sorted(
        [model.name, record.name, "other.tflite", "other.json"])  # overwritten, and the orphan removed
    for name in ("other.tflite", "other.json"):
        (model.parent / name).unlink()
    with open(model, "r+b") as handle:  # an interrupted copy of the cache, say
        handle.truncate(1000)
    assert fast_start.current_copy(weights) is None


def test_the_cache_keeps_the_most_recently_used_copies_only(tmp_path):
    """A helper compared four fine-tuned runs: 870 MB of copies, and nothing ever removed them
    while the runs' model.npz files were there."""
    folder = tmp_path / "litert"
    folder.mkdir()
    for index, name in enumerate(["a", "b", "c", "d", "e", "gone"]):
        source = tmp_path / f"{name}.npz"
        if name != "gone":
            source.write_bytes(b"weights")
        (folder / f"{name}.tflite").write_bytes(b"a copy")
        (folder / f"{name}.lock").write_bytes(b"")
        (folder / f"{name}.json").write_text(json.dumps({"source": {"path": str(source)}}))
        os.utime(folder / f"{name}.tflite", (1000 + index, 1000 + index))  # used in this order, "gone" last
    os.utime(folder / "a.tflite", (2000, 2000))  # then "a" again
    (folder / "notes.json").write_text("not a record")  # left alone
    fast_start.tidy_copies(folder, keep=3)
    assert sorted(path.name for path in folder.iterdir()) == sorted(
        [f"{name}.{suffix}" for name in "ade" for suffix in ("tflite", "lock", "json")] + ["notes.json"])


def test_auto_takes_litert_for_short_calls_only():
    assert fast_start.suits("auto", 1) and fast_start.suits("auto", fast_start.MAX_VIEWS)
    assert not fast_start.suits("auto", fast_start.MAX_VIEWS + 1)
    assert not fast_start.suits("tensorflow", 1)
    assert fast_start.suits("litert", 10_000)


def test_two_first_calls_do_not_delete_each_others_half_written_copy(tmp_path):
    from alexft.atomic import remove_stale_temporaries

    live = tmp_path / f".bvlc_alexnet.npy-abc.tflite.tmp-{os.getpid()}"
    dead = tmp_path / ".bvlc_alexnet.npy-abc.tflite.tmp-99999999"  # above any Linux pid_max
    for path in (live, dead):
        path.write_bytes(b"half")
    assert remove_stale_temporaries(tmp_path, shared=True) == [dead.name]
    assert live.exists() and not dead.exists()


def test_a_copy_litert_refuses_is_answered_on_tensorflow_then_rebuilt(canonical_weights_file, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from alexft.cli import main

    model, record = fast_start.copy_paths(canonical_weights_file)
    model.parent.mkdir(parents=True)
    model.write_bytes(os.urandom(4096))  # the right size on record, but not a TF Lite file
    record.write_text(json.dumps({"source": fast_start._identity(canonical_weights_file), "model_size": 4096,
                                  "class_names": ["x"] * 1000}))
    with pytest.raises(fast_start.FastStartError, match="LiteRT cannot load it"):
        fast_start.load_litert_predictor(canonical_weights_file, build=False)
    builds = []
    monkeypatch.setattr(fast_start, "build_copy", builds.append)
    result = CliRunner().invoke(main, ["classify", "--runtime", "auto", "--weights", str(canonical_weights_file),
                                       str(PHOTOS[0])])
    assert result.exit_code == 0, result.output
    assert "LiteRT cannot load it" in result.stderr and "answering on TensorFlow" in result.stderr
    assert result.stdout.startswith(str(PHOTOS[0])) and len(result.stdout.splitlines()) == 6
    assert builds == [canonical_weights_file]


def test_the_copy_is_built_only_after_a_call_that_classified_something(canonical_weights_file, tmp_path, monkeypatch):
    """A call whose every input failed (a typo'd or broken photo) answers at once, without 12 s
    of building; a build stopped by Ctrl-C says it will be done next time."""
    from click.testing import CliRunner

    from alexft.cli import main

    builds = []
    monkeypatch.setattr(fast_start, "build_copy", builds.append)
    (tmp_path / "fake.png").write_text("not a photo")
    arguments = ["classify", "--runtime", "auto", "--weights", str(canonical_weights_file)]
    failed = CliRunner().invoke(main, [*arguments, str(tmp_path / "fake.png")])
    assert failed.exit_code == 1 and "fake.png: not an image" in failed.stderr
    assert builds == []

    def interrupted(weights):
        raise KeyboardInterrupt

    monkeypatch.setattr(fast_start, "build_copy", interrupted)
    stopped = CliRunner().invoke(main, [*arguments, str(tmp_path / "fake.png"), str(PHOTOS[0])])
    assert stopped.exit_code == 130 and len(stopped.stdout.splitlines()) == 6  # the photo's results stay printed
    assert stopped.stderr.splitlines()[-2:] == ["alexft: the LiteRT copy was not finished; the next short classify "
                                                "builds it", "alexft: interrupted"]


# classify in a process of its own, its build replaced by one that receives a real signal (through
# the command's handlers) and is stopped by it, or swallows it as TensorFlow's converter may and
# goes on to its end. One input fails: the command's own exit status would be 1.
STOPPED_BUILDS = """
import json, os, signal, sys, time
from click.testing import CliRunner
from alexft import fast_start
from alexft.cli import main
weights, photo, fake = sys.argv[1:]
said = {}
for name, number in (("SIGINT", signal.SIGINT), ("SIGTERM", signal.SIGTERM)):
    for swallowed in (False, True):
        def build(weights):
            try:
                os.kill(os.getpid(), number)
                time.sleep(5)
            except KeyboardInterrupt:
                if not swallowed:
                    raise
        fast_start.build_copy = build
        done = CliRunner().invoke(main, ["classify", "--runtime", "auto", "--json", "--weights", weights, fake, photo])
        said[f"{name} {'swallowed' if swallowed else 'honoured'}"] = [done.exit_code, done.stdout, done.stderr]
print(json.dumps(said))
"""


def test_a_stop_during_the_build_after_the_answer_gives_it_up_and_stops_the_command(canonical_weights_file, tmp_path):
    """A Ctrl-C or SIGTERM while the copy was being built, after the answer, gave the build up but
    kept the command's exit status (0, or 1 here): a shell loop of classify calls went on, and the
    next call started the build again. The stop now ends the command as a stop (130/143; in a
    process of its own, killed by the signal), also when the converter swallowed it and the
    build went on to its end."""
    fake = tmp_path / "fake.png"
    fake.write_text("not a photo")
    done = subprocess.run([sys.executable, "-c", STOPPED_BUILDS, canonical_weights_file, PHOTOS[0], fake],
                          capture_output=True, text=True, timeout=600, env=dict(os.environ, ALEXFT_CACHE=str(tmp_path)),
                          preexec_fn=as_at_a_terminal)  # (a suite run in the background ignores SIGINT: so would it)
    assert done.returncode == 0, done.stderr
    for case, (status, stdout, stderr) in json.loads(done.stdout.splitlines()[-1]).items():
        stop = "terminated" if case.startswith("SIGTERM") else "interrupted"
        assert status == (143 if stop == "terminated" else 130), (case, stderr)
        assert [json.loads(line)["path"] for line in stdout.splitlines()] == [str(fake), str(PHOTOS[0])], case
        assert stderr.splitlines()[-1] == f"alexft: {stop}", (case, stderr)
        not_finished = "alexft: the LiteRT copy was not finished; the next short classify builds it"
        assert (not_finished in stderr) == case.endswith("honoured"), (case, stderr)  # swallowed: the build ended


def test_a_cache_that_cannot_be_written_is_said_before_the_conversion(canonical_weights_file, tmp_path, monkeypatch,
                                                                      caplog):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("ALEXFT_CACHE", str(tmp_path / "file" / "cache"))
    monkeypatch.setattr("alexft.export.tflite_flatbuffer", lambda *args: pytest.fail("converted for nothing"))
    with pytest.raises(fast_start.FastStartError, match="cannot be written"):
        fast_start.build_copy(canonical_weights_file)
    assert "building a LiteRT copy" not in caplog.text  # nothing is announced that will not happen


@pytest.mark.skipif(not mount_namespace(), reason="needs unshare to mount a folder read-only (root or user namespaces)")
def test_a_cache_shared_read_only_builds_nothing_and_says_why(canonical_weights_file, tmp_path):
    """A cache folder that exists but only reads (built once, then shared read-only, as in a
    container) made the build fail with two tracebacks on its temporary files, after the answer
    (exit 1) or instead of it (`--runtime litert`). Now it is said in one line, before any work."""
    cache = tmp_path / "cache"
    (cache / "litert").mkdir(parents=True)
    alexft = f"'{sys.executable}' -m alexft classify '{PHOTOS[0]}' --weights '{canonical_weights_file}' --json -k 1"
    script = "\n".join([
        f"mount --bind '{cache}' '{cache}' && mount -o remount,bind,ro '{cache}' || exit 99",
        f"{alexft} --runtime litert > '{tmp_path}/litert.out' 2> '{tmp_path}/litert.err'; echo $? > '{tmp_path}/litert.rc'",
        f"{alexft} --runtime auto > '{tmp_path}/auto.out' 2> '{tmp_path}/auto.err'; echo $? > '{tmp_path}/auto.rc'",
    ])
    done = subprocess.run([*mount_namespace(), "sh", "-c", script], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, ALEXFT_CACHE=str(cache), TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr
    read = {name: (tmp_path / name).read_text() for name in ("litert.out", "litert.err", "litert.rc", "auto.out",
                                                             "auto.err", "auto.rc")}
    why = f"{cache / 'litert'}: cannot be written (Read-only file system)"
    assert read["litert.rc"].strip() == "1" and why in json.loads(read["litert.out"])["error"], read
    assert read["auto.rc"].strip() == "0" and json.loads(read["auto.out"])["predictions"], read  # the answer, on TensorFlow
    assert why in read["auto.err"] and "building a LiteRT copy" not in read["auto.err"], read["auto.err"]
    assert "Traceback" not in read["litert.err"] + read["auto.err"]
    assert list((cache / "litert").iterdir()) == []


def test_two_first_calls_at_once_build_the_copy_once(tmp_path, monkeypatch):
    """Two classify calls started together (xargs -P) each built the 232 MB copy (11 s each);
    now the second waits for the first's and uses it."""
    import logging
    import threading

    built, builds, waiting = [], [], threading.Event()

    class SaysWaiting(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("waiting for another process building the LiteRT copy of "):
                waiting.set()

    def build(weights, skipped_by=None):
        builds.append(weights)
        assert waiting.wait(30), "the second call did not wait for the first's build"
        built.append(1)

    monkeypatch.setattr(fast_start, "cache_dir", lambda: tmp_path)
    monkeypatch.setattr(fast_start, "current_copy", lambda weights: ("copy.tflite", ["a", "b"]) if built else None)
    monkeypatch.setattr(fast_start, "build_copy", build)
    monkeypatch.setattr(fast_start, "LitePredictor", lambda *copy, preprocessing=None: copy)
    handler = SaysWaiting()
    fast_start.log.addHandler(handler)
    results = []
    try:
        calls = [threading.Thread(target=lambda: results.append(fast_start.load_litert_predictor(tmp_path / "w.npz")))
                 for _ in range(2)]
        for call in calls:
            call.start()
        for call in calls:
            call.join(60)
    finally:
        fast_start.log.removeHandler(handler)
    assert len(builds) == 1 and results == [("copy.tflite", ["a", "b"])] * 2


def test_the_build_after_the_results_is_left_to_a_process_building_it_or_done_by_one(tmp_path, monkeypatch):
    """`classify` builds the copy after answering on TensorFlow: a second first call did so too,
    while the first was still building, or just after it had built it."""
    import fcntl

    builds, copies = [], []
    weights = tmp_path / "w.npz"
    monkeypatch.setattr(fast_start, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setattr(fast_start, "build_copy", builds.append)
    monkeypatch.setattr(fast_start, "current_copy", lambda weights: copies[-1] if copies else None)
    model, record = fast_start.copy_paths(weights)
    record.parent.mkdir(parents=True)
    seen = fast_start.copy_stamp(weights)
    assert seen is None
    held = os.open(model.with_suffix(".lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(held, fcntl.LOCK_EX)  # another process is building
    fast_start.build_copy_unless_another_is(weights, seen)
    assert builds == []
    record.write_text("{}")  # it has built a copy
    copies.append(("copy.tflite", ["a"]))
    os.close(held)
    fast_start.build_copy_unless_another_is(weights, seen)
    assert builds == []
    fast_start.build_copy_unless_another_is(weights, fast_start.copy_stamp(weights))  # the copy this call found refused
    assert builds == [weights]
    copies.clear()
    fast_start.build_copy_unless_another_is(weights, seen)  # changed since, but no usable copy: built
    assert builds == [weights] * 2
