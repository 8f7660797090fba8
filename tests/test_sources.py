"""Where weights come from, and the download into the cache (against a local HTTP server)."""
import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest

from alexft import weights
from alexft.weights import formats, sources
from alexft.errors import WeightsError
from http_server import serving


@pytest.fixture(scope="module")
def canonical_bytes(canonical_weights_file):
    return canonical_weights_file.read_bytes()


def test_lookup_order_env_then_working_tree_then_cache(tmp_path, monkeypatch):
    cache_file = sources.cache_dir() / "bvlc_alexnet.npy"
    cache_file.parent.mkdir(parents=True)
    cache_file.write_bytes(b"x")
    assert sources.resolve_weights(download=False) == cache_file
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "bvlc_alexnet.npy").write_bytes(b"x")
    assert sources.resolve_weights(download=False).resolve() == (tmp_path / "weights" / "bvlc_alexnet.npy")
    chosen = tmp_path / "chosen.npy"
    chosen.write_bytes(b"x")
    monkeypatch.setenv("ALEXFT_WEIGHTS", str(chosen))
    assert sources.resolve_weights(download=False) == chosen
    explicit = tmp_path / "explicit.npz"
    np.savez(explicit, **{"fc8/biases": np.zeros(3, np.float32)})  # a whole zip: a named file is checked at once
    assert sources.resolve_weights(explicit) == explicit


def test_named_files_that_do_not_exist_are_errors(tmp_path, monkeypatch):
    with pytest.raises(WeightsError, match="nope.npz: weights file not found"):
        sources.resolve_weights(tmp_path / "nope.npz")
    (tmp_path / "photos").mkdir()  # a data folder given as the weights by mistake: said as such
    with pytest.raises(WeightsError, match="photos: is a folder, not a weights file$"):
        sources.resolve_weights(tmp_path / "photos")


def test_alexfts_own_other_files_given_as_weights_are_named(tmp_path):
    """A user gave a run folder, a SavedModel, a TF Lite export and a feature file as --weights:
    each was refused as a folder or as bytes of no known kind."""
    run = tmp_path / "runs" / "photos"
    run.mkdir(parents=True)
    np.savez(run / "model.npz", **{"fc8/biases": np.zeros(3, np.float32)})
    with pytest.raises(WeightsError, match=f"photos: is a folder, not a weights file; a run's model is {run / 'model.npz'}$"):
        sources.resolve_weights(run)
    (tmp_path / "serving" / "1").mkdir(parents=True)
    (tmp_path / "serving" / "1" / "saved_model.pb").write_bytes(b"\x08\x01")
    with pytest.raises(WeightsError, match="1: is a folder, not a weights file; it is a SavedModel export: give the .npz"):
        sources.resolve_weights(tmp_path / "serving" / "1")
    lite = tmp_path / "photos.tflite"
    lite.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(64))  # a FlatBuffer's root offset, then its identifier
    with pytest.raises(WeightsError, match="photos.tflite: a TF Lite export, not weights; give the .npz"):
        sources.resolve_weights(lite)
    # Keras' save_weights file (HDF5): named as Keras', with where it loads (a helper was told only its first bytes).
    import h5py

    with h5py.File(tmp_path / "m.weights.h5", "w") as handle:
        handle.create_dataset("x", data=np.zeros(2))
    with pytest.raises(WeightsError, match=r"m.weights.h5: a Keras HDF5 file, not alexft weights; load it into the model "
                                           r"it was saved from with model.load_weights"):
        sources.resolve_weights(tmp_path / "m.weights.h5")
    features = tmp_path / "fc7.npz"
    np.savez(features, features=np.zeros((2, 4096), np.float32), paths=np.array(["a.jpg", "b.jpg"]))
    with pytest.raises(WeightsError, match=r"fc7.npz: a feature file \(alexft features\), not weights$"):
        weights.load(features)


def test_an_unset_default_named_by_the_environment_is_said_as_such(tmp_path, monkeypatch):
    monkeypatch.setenv("ALEXFT_WEIGHTS", str(tmp_path / "gone.npy"))
    with pytest.raises(WeightsError, match=r"gone.npy: weights file not found \(named by \$ALEXFT_WEIGHTS\)"):
        sources.resolve_weights()


def test_missing_weights_are_downloaded_into_the_cache_and_converted_once(canonical_bytes, canonical_params,
                                                                          monkeypatch, caplog):
    with serving({"/bvlc_alexnet.npy": ("ok", canonical_bytes)}) as url:
        monkeypatch.setenv("ALEXFT_WEIGHTS_URL", f"{url}/bvlc_alexnet.npy")
        monkeypatch.setenv("ALEXFT_WEIGHTS_SHA256", hashlib.sha256(canonical_bytes).hexdigest())
        with caplog.at_level(logging.WARNING, logger="alexft"):
            path = sources.resolve_weights(progress=False)
    download = sources.cache_dir() / "bvlc_alexnet.npy"
    assert path == sources.cache_dir() / "bvlc_alexnet.npz"
    assert download.read_bytes() == canonical_bytes  # kept as it came
    assert "downloading" in caplog.text and f"converted {download} to {path}" in caplog.text
    converted = weights.load(path).params
    for name, (kernel, bias) in canonical_params.items():  # the generator's arrays, bit for bit
        assert np.array_equal(converted[name][0], kernel) and np.array_equal(converted[name][1], bias)
    assert sorted(p.name for p in path.parent.iterdir()) == ["bvlc_alexnet.npy", "bvlc_alexnet.npz", "known_files.json"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="alexft"):
        assert sources.resolve_weights(download=False) == path  # found from now on, nothing downloaded
    assert caplog.text == ""


def test_each_place_is_searched_for_npz_then_npy_then_caffemodel(tmp_path):
    (tmp_path / "weights").mkdir()
    found = lambda: sources.resolve_weights(download=False).name  # noqa: E731
    for name in ("bvlc_alexnet.caffemodel", "bvlc_alexnet.npy", "bvlc_alexnet.npz"):
        (sources.cache_dir()).mkdir(parents=True, exist_ok=True)
        (sources.cache_dir() / name).write_bytes(b"x")
        assert found() == name  # each newcomer is preferred to those already there
    (tmp_path / "weights" / "bvlc_alexnet.caffemodel").write_bytes(b"x")
    assert sources.resolve_weights(download=False) == Path("weights") / "bvlc_alexnet.caffemodel"  # the working tree first


@pytest.mark.parametrize(
    "mode, body, sha256, cause",
    [
        ("ok", b"<!DOCTYPE html><html>mirror moved</html>", None, "HTML/XML page"),
        ("stall", None, None, "connection closed after .* gave up after"),
        ("ok", None, "0" * 64, "SHA-256 is .*, expected 0000"),
        ("ok", None, None, None),  # control: the same route works when nothing is wrong
    ],
    ids=["html", "stalled", "wrong-hash", "control"],
)
def test_a_bad_download_leaves_nothing_behind(canonical_bytes, monkeypatch, mode, body, sha256, cause):
    body = canonical_bytes if body is None else body
    target = sources.cache_dir() / "bvlc_alexnet.npy"
    with serving({"/w.npy": (mode, body)}) as url:
        monkeypatch.setenv("ALEXFT_WEIGHTS_URL", f"{url}/w.npy")
        if sha256:
            monkeypatch.setenv("ALEXFT_WEIGHTS_SHA256", sha256)
        if cause is None:
            assert sources.resolve_weights(progress=False) == target.with_suffix(".npz")
            return
        with pytest.raises(WeightsError, match=cause) as caught:
            sources.resolve_weights(progress=False)
    assert (f"Put one of bvlc_alexnet.npz, bvlc_alexnet.npy, bvlc_alexnet.caffemodel in {Path.cwd() / 'weights'} "
            "(weights/ under the current folder) or in") in str(caught.value)  # (it said "at weights/... here")
    assert str(target.parent) in str(caught.value)
    assert "or give its path (--weights PATH on the command line, weights=PATH in Python) or set ALEXFT_WEIGHTS" in str(caught.value)
    assert "\n" not in str(caught.value)
    leftovers = sorted(path.name for path in target.parent.iterdir()) if target.parent.exists() else []
    # A stalled transfer keeps its hidden partial file for the next run to resume, and the record
    # of where it came from; nothing else remains, not even the cache folder the download made.
    assert leftovers == ([".bvlc_alexnet.npy.part", ".bvlc_alexnet.npy.part.source"] if mode == "stall" else [])


def test_without_network_the_error_says_where_to_put_the_file():
    # ALEXFT_WEIGHTS_URL points at a closed local port (see conftest).
    with pytest.raises(WeightsError) as caught:
        sources.resolve_weights(progress=False)
    message = str(caught.value)
    assert "download failed" in message
    assert str(sources.cache_dir()) in message and "(weights/ under the current folder)" in message
    assert "--weights" in message and "ALEXFT_WEIGHTS" in message


def test_a_fetch_without_network_says_so_and_where_to_put_the_file(monkeypatch):
    """`weights fetch` offline said "[Errno -2] Name or service not known" and "all 2 sources
    failed", where classify said where to put the file. (.invalid never resolves: RFC 6761.)"""
    with pytest.raises(WeightsError, match=r"^http://nowhere\.invalid/w\.npy: download failed: cannot find the server "
                                           r"nowhere\.invalid \(no network, or no DNS here\?\)$"):
        sources.fetch_weights("http://nowhere.invalid/w.npy", progress=False)  # a URL of the user's: only that said
    with pytest.raises(WeightsError, match=r"^http://127\.0\.0\.1:9/w\.npy: download failed: the server 127\.0\.0\.1:9 "
                                           r"refused the connection \(is it running\?\)$"):  # ("[Errno 111] Connection refused")
        sources.fetch_weights("http://127.0.0.1:9/w.npy", progress=False)
    monkeypatch.setenv("ALEXFT_WEIGHTS_URL", "http://one.invalid/w.npy http://two.invalid/w.npy")
    with pytest.raises(WeightsError, match=r"^all 2 sources failed \(each said above\)\. Put one of bvlc_alexnet\.npz, ") \
            as caught:
        sources.fetch_weights(progress=False)
    # The files named are the sources tried, not the shipped defaults.
    assert str(caught.value).endswith("(to download by hand: http://one.invalid/w.npy, http://two.invalid/w.npy)"), \
        str(caught.value)


def test_http_error_is_reported(monkeypatch):
    with serving({}) as url:
        monkeypatch.setenv("ALEXFT_WEIGHTS_URL", f"{url}/missing.npy")
        with pytest.raises(WeightsError, match="server answered 404"):
            sources.resolve_weights(progress=False)


# --- the default sources: a pinned caffemodel first, an unverified .npy after it -------------


@pytest.fixture
def served_sources(canonical_caffemodel, canonical_bytes, monkeypatch):
    """SOURCES as shipped, pointed at a local server: the caffemodel pinned by its SHA-1 (the
    generated file's, as the zoo's readme gives the real one's), the .npy with no hash."""
    monkeypatch.delenv("ALEXFT_WEIGHTS_URL")  # conftest points it at a closed port
    caffemodel = canonical_caffemodel.read_bytes()
    routes = {"/zoo/bvlc_alexnet.caffemodel": ("ok", caffemodel), "/npy/bvlc_alexnet.npy": ("ok", canonical_bytes)}

    def point(url, caffemodel_sha1=hashlib.sha1(caffemodel).hexdigest()):
        monkeypatch.setattr(sources, "SOURCES", (
            sources.Source(f"{url}/zoo/bvlc_alexnet.caffemodel", sha1=caffemodel_sha1, about="the zoo's caffemodel"),
            sources.Source(f"{url}/npy/bvlc_alexnet.npy", about="the unverified npy")))

    with serving(routes) as url:
        yield url, routes, point


def test_the_pinned_caffemodel_is_verified_converted_once_and_recognised(served_sources, canonical_params, caplog):
    url, _, point = served_sources
    point(url)
    with caplog.at_level(logging.WARNING, logger="alexft"):
        path = sources.resolve_weights(progress=False)
    assert path == sources.cache_dir() / "bvlc_alexnet.npz"
    assert [path for path, _ in url.requests] == ["/zoo/bvlc_alexnet.caffemodel"]
    assert f"checked against SHA-1 {sources.SOURCES[0].sha1}" in caplog.text
    converted = weights.load(path).params
    for name, (kernel, bias) in canonical_params.items():
        assert np.array_equal(converted[name][0], kernel) and np.array_equal(converted[name][1], bias)
    assert sources.identify(sources.cache_dir() / "bvlc_alexnet.caffemodel") == "the zoo's caffemodel: hash verified"
    assert sources.identify(path).startswith("converted by alexft from bvlc_alexnet.caffemodel (" + url)
    assert sources.resolve_weights(download=False) == path
    from click.testing import CliRunner

    from alexft.cli import main

    for file, expected in [(sources.cache_dir() / "bvlc_alexnet.caffemodel", "source: the zoo's caffemodel: hash verified"),
                           (path, "source: converted by alexft from bvlc_alexnet.caffemodel (")]:
        shown = CliRunner().invoke(main, ["weights", "info", str(file)]).stdout
        assert any(line.startswith(expected) for line in shown.splitlines()), shown


def test_a_caffemodel_with_another_sha1_is_refused_before_it_is_read_and_the_npy_is_trusted_on_first_use(
        served_sources, canonical_bytes, caplog, monkeypatch):
    url, routes, point = served_sources
    point(url, caffemodel_sha1="0" * 40)
    read, load = [], formats.load
    with monkeypatch.context() as patch, caplog.at_level(logging.WARNING, logger="alexft"):
        patch.setattr(formats, "load", lambda path, *args, **kwargs: read.append(Path(path).name) or load(path, *args, **kwargs))
        path = sources.resolve_weights(progress=False)
    failure = [line for line in caplog.text.splitlines() if "source 1 failed" in line]
    assert len(failure) == 1 and "SHA-1 is" in failure[0] and "expected " + "0" * 40 in failure[0]
    assert ".bvlc_alexnet.npy.part" in read and ".bvlc_alexnet.caffemodel.part" not in read  # never parsed
    assert path == sources.cache_dir() / "bvlc_alexnet.npz"
    assert "no published checksum" in caplog.text and "trust on first use" in caplog.text
    # Later downloads of that URL must match what was trusted the first time.
    for name in ("bvlc_alexnet.npy", "bvlc_alexnet.npz"):
        (sources.cache_dir() / name).unlink()
    routes["/npy/bvlc_alexnet.npy"] = ("ok", canonical_bytes[:-1] + bytes([canonical_bytes[-1] ^ 1]))
    caplog.clear()
    with pytest.raises(WeightsError, match="all 2 sources failed"), caplog.at_level(logging.WARNING, logger="alexft"):
        sources.resolve_weights(progress=False)
    failure = [line for line in caplog.text.splitlines() if "source 2 failed" in line]
    assert len(failure) == 1 and f"SHA-256 is {hashlib.sha256(routes['/npy/bvlc_alexnet.npy'][1]).hexdigest()}" in failure[0]
    assert f"expected {hashlib.sha256(canonical_bytes).hexdigest()}" in failure[0]


def test_urls_named_in_the_environment_are_tried_in_order_with_their_hashes(served_sources, canonical_caffemodel,
                                                                             monkeypatch):
    url, _, _ = served_sources
    sha1 = hashlib.sha1(canonical_caffemodel.read_bytes()).hexdigest()
    monkeypatch.setenv("ALEXFT_WEIGHTS_URL", f"{url}/gone.npy, {url}/zoo/bvlc_alexnet.caffemodel#sha1={sha1.upper()}")
    assert [(s.url, s.sha1) for s in sources.sources()] == [(f"{url}/gone.npy", None),
                                                           (f"{url}/zoo/bvlc_alexnet.caffemodel", sha1)]
    assert sources.resolve_weights(progress=False) == sources.cache_dir() / "bvlc_alexnet.npz"
    assert [path for path, _ in url.requests] == ["/gone.npy", "/zoo/bvlc_alexnet.caffemodel"]
    monkeypatch.setenv("ALEXFT_WEIGHTS_URL", f"{url}/x.npy#md5=00")
    with pytest.raises(WeightsError, match="unknown hash md5"):
        sources.sources()
    monkeypatch.setenv("ALEXFT_WEIGHTS_URL", sources.ZOO_CAFFEMODEL.url)  # a known URL keeps its pinned hash
    assert sources.sources() == (sources.ZOO_CAFFEMODEL,)


def test_the_shipped_default_is_the_zoos_caffemodel_pinned_by_its_published_sha1():
    first = sources.SOURCES[0]
    assert first.url == "http://dl.caffe.berkeleyvision.org/bvlc_alexnet.caffemodel"
    assert first.sha1 == "9116a64c0fbe4459d18f4bb6b56d647b63920377"
    assert not sources.SOURCES[1].pinned and sources.SOURCES[1].name == "bvlc_alexnet.npy"


def test_a_file_of_unknown_origin_is_said_to_be_unknown(tmp_path, canonical_weights_file):
    assert sources.identify(canonical_weights_file) is None


def test_ctrl_c_while_a_finished_download_is_checked_keeps_it_for_the_next_fetch(canonical_bytes, tmp_path,
                                                                                   monkeypatch, caplog):
    """The check reads 233 MB twice (hash, structure): a Ctrl-C there must not cost the download."""
    from alexft.weights import download

    target = tmp_path / "w.npy"
    load = download.weights_io.load

    def interrupted(path, *args, **kwargs):
        raise KeyboardInterrupt

    with serving({"/w.npy": ("ok", canonical_bytes)}) as url:
        monkeypatch.setattr(download.weights_io, "load", interrupted)
        with caplog.at_level(logging.WARNING, logger="alexft"), pytest.raises(KeyboardInterrupt):
            download.download_weights(f"{url}/w.npy", target, progress=False)
        partial = download.partial_path(target)
        assert partial.read_bytes() == canonical_bytes and not target.exists()
        assert f"{partial}: {len(canonical_bytes):,} bytes kept; the next fetch of {url}/w.npy continues" in caplog.text
        monkeypatch.setattr(download.weights_io, "load", load)
        assert download.download_weights(f"{url}/w.npy", target, progress=False) == target
        assert url.requests[-1] == ("/w.npy", f"bytes={len(canonical_bytes)}-")  # nothing sent again
    assert target.read_bytes() == canonical_bytes
    assert sorted(path.name for path in tmp_path.iterdir()) == ["w.npy"]


def test_the_notebooks_take_the_weights_the_command_line_finds(tmp_path, monkeypatch):
    """The notebooks' weights_or_generated looked at $ALEXFT_WEIGHTS only: weights the README's
    first command had put in the cache went unused (the random demo ran), and a mistyped
    $ALEXFT_WEIGHTS was said to be "not set"."""
    from alexft import demo

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ALEXFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ALEXFT_WEIGHTS", raising=False)
    monkeypatch.setattr(demo, "generated_weights", lambda: "generated")
    said = []
    assert demo.weights_or_generated(said.append) == ("generated", False)
    assert said[-1].startswith("no weights file found (ALEXFT_WEIGHTS is not set, none in weights/ or the cache): using "
                               "GENERATED RANDOM WEIGHTS")
    cached = tmp_path / "cache" / "bvlc_alexnet.npz"
    cached.parent.mkdir()
    cached.write_bytes(b"stands in for the converted download")
    assert demo.weights_or_generated(said.append) == (cached, True) and said[-1] == f"Using the real weights: {cached}"
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "bvlc_alexnet.npy").write_bytes(b"stands in for the weights")
    assert demo.weights_or_generated(said.append) == (tmp_path / "weights" / "bvlc_alexnet.npy", True)  # absolute
    cached.unlink()
    (tmp_path / "notebooks").mkdir()  # `jupyter lab notebooks/`: its kernels run there, the project's weights/ beside
    monkeypatch.chdir(tmp_path / "notebooks")
    assert demo.weights_or_generated(said.append) == (tmp_path / "weights" / "bvlc_alexnet.npy", True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ALEXFT_WEIGHTS", str(tmp_path))
    assert demo.weights_or_generated(said.append) == ("generated", False)
    assert said[-1].startswith(f"{tmp_path}: is a folder, not a weights file (named by $ALEXFT_WEIGHTS): using GENERATED")
    monkeypatch.setenv("ALEXFT_WEIGHTS", str(tmp_path / "typo.npz"))
    assert demo.weights_or_generated(said.append) == ("generated", False)
    assert said[-1].startswith(f"{tmp_path / 'typo.npz'}: weights file not found (named by $ALEXFT_WEIGHTS): using "
                               "GENERATED RANDOM WEIGHTS")


def test_a_url_given_as_the_weights_is_told_to_be_downloaded_first():
    """weights="ftp://host/w.npy" said "ftp:/host/w.npy: weights file not found" (a path drops a slash)."""
    import alexft

    with pytest.raises(WeightsError, match=r"^https://example\.com/\S+: a URL, and weights are read from a file: "
                                           r"download it first \(.*alexft\.fetch_weights\(url=URL\) in Python\)"):
        alexft.load_predictor("https://example.com/bvlc_alexnet.npy", download=False)
    with pytest.raises(WeightsError, match=r"^ftp://example\.com/w\.npz: weights are read from a file, not from a URL "
                                           r"\(ftp://\): copy it to this machine, then give its path$"):
        alexft.AlexNet(weights="ftp://example.com/w.npz")  # (alexft downloads http(s) only)


def test_imagenet_names_the_default_weights_also_as_the_command_line_passes_it(tmp_path, monkeypatch):
    """`--weights imagenet`, as Keras' weights="imagenet", was looked for as a file named imagenet
    (the command line passes a Path)."""
    monkeypatch.chdir(tmp_path)
    assert sources.names_the_defaults("imagenet") and sources.names_the_defaults(Path("ImageNet"))
    assert not sources.names_the_defaults(Path("weights/imagenet"))
    (tmp_path / "imagenet").write_bytes(b"a file of the user's")  # a file of that name is that file
    assert not sources.names_the_defaults(Path("imagenet")) and not sources.names_the_defaults("imagenet")
