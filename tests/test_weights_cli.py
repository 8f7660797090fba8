"""`alexft weights fetch | info | convert`, downloads against a local HTTP server on 127.0.0.1."""
import hashlib
import json
import logging
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from alexft import weights
from alexft.weights import download, formats
from alexft.weights.download import file_sha256
from alexft.cli import main
from fixtures import photo_paths, random_params, stopped_by
from http_server import serving


def run(*args):
    return CliRunner().invoke(main, list(map(str, args)), catch_exceptions=False)


@pytest.fixture(scope="module")
def canonical_bytes(canonical_weights_file):
    return canonical_weights_file.read_bytes()


@pytest.fixture(scope="module")
def canonical_sha256(canonical_bytes):
    return hashlib.sha256(canonical_bytes).hexdigest()


def folder_listing(folder):
    return sorted(path.name for path in folder.iterdir())


# --- fetch ---------------------------------------------------------------------------------


def test_fetch_downloads_verifies_and_prints_the_path(tmp_path, canonical_bytes, canonical_sha256):
    output = tmp_path / "dl" / "w.npy"
    with serving({"/w.npy": ("ok", canonical_bytes)}) as url:
        result = run("weights", "fetch", "--url", f"{url}/w.npy", "--sha256", canonical_sha256.upper(), "--output", output)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(output)
    assert output.read_bytes() == canonical_bytes
    assert folder_listing(output.parent) == ["w.npy"]


def test_fetch_writes_only_to_a_weights_files_name(tmp_path, canonical_bytes):
    """`-o photo.jpg --force` replaced the photo with the weights (a helper's trial)."""
    from alexft.errors import WeightsError
    from alexft.weights.sources import fetch_weights

    photo = tmp_path / "p.jpg"
    photo.write_bytes(photo_paths()["chelsea"].read_bytes())
    with serving({"/w.npz": ("ok", canonical_bytes)}) as url:
        result = run("weights", "fetch", "--url", f"{url}/w.npz", "-o", photo, "--force")
        assert result.exit_code == 2, result.output
        assert f"{photo}: a downloaded weights file is named .caffemodel, .npy or .npz" in result.stderr
        assert photo.read_bytes() == photo_paths()["chelsea"].read_bytes()
        with pytest.raises(WeightsError, match=r"new\.txt: a downloaded weights file is named"):
            fetch_weights(url=f"{url}/w.npz", output=tmp_path / "new.txt")
        assert sorted(path.name for path in tmp_path.iterdir()) == ["p.jpg"]
        assert run("weights", "fetch", "--url", f"{url}/w.npz", "-o", tmp_path / "W.NPZ").exit_code == 0  # any case
        # A photo saved under a weights name is not replaced by --force either (a re-trial's)
        disguised = tmp_path / "photo.npz"
        disguised.write_bytes(photo.read_bytes())
        result = run("weights", "fetch", "--url", f"{url}/w.npz", "-o", disguised, "--force")
        assert result.exit_code == 1 and result.stderr.splitlines() == [
            f"Error: {disguised}: exists and is not a weights file, so --force does not replace it; remove it first if "
            "it should go"], result.stderr
        assert disguised.read_bytes() == photo.read_bytes()
        import alexft  # the same refusal in Python's words (it named --force to a Python caller)

        with pytest.raises(WeightsError, match=r"photo\.npz: exists and is not a weights file, so force=True does not "
                                               r"replace it; remove it first if it should go$"):
            alexft.fetch_weights(url=f"{url}/w.npz", output=disguised, force=True)
        assert disguised.read_bytes() == photo.read_bytes()
        # A folder takes the download under the URL's name, as wget -P does; one not made yet is said to be missing
        result = run("weights", "fetch", "--url", f"{url}/w.npz", "-o", f"{tmp_path / 'dl'}/")
        assert result.exit_code == 2 and f"{tmp_path / 'dl'}: no such folder to download into (make it first: mkdir -p " \
            in result.stderr, result.stderr
        (tmp_path / "dl").mkdir()
        result = run("weights", "fetch", "--url", f"{url}/w.npz", "-o", tmp_path / "dl")
        assert result.exit_code == 0 and result.stdout.strip() == str(tmp_path / "dl" / "w.npz"), result.output
        assert (tmp_path / "dl" / "w.npz").read_bytes() == canonical_bytes


def test_a_url_with_a_space_is_fetched_escaped_and_saved_under_its_own_name(tmp_path, canonical_bytes):
    """A space pasted into --url crashed the download in http.client with a traceback."""
    (tmp_path / "dl").mkdir()
    with serving({"/my%20weights.npz": ("ok", canonical_bytes)}) as url:
        result = run("weights", "fetch", "--url", f"{url}/my weights.npz", "-o", tmp_path / "dl")
        assert [path for path, _ in url.requests] == ["/my%20weights.npz"]
    assert result.exit_code == 0, result.output
    assert (tmp_path / "dl" / "my weights.npz").read_bytes() == canonical_bytes
    saved = tmp_path / "dl" / "my weights.npz"
    assert f"(--weights '{saved}')" in result.stderr  # quoted: it pastes into a shell
    result = run("weights", "fetch", "--url", "http://exa mple/w.npz", "-o", tmp_path / "dl")
    assert result.exit_code == 2 and "http://exa mple/w.npz: not a valid URL (white space in the host name)" in result.stderr


def test_fetch_defaults_to_the_cache_under_the_urls_name(canonical_bytes):
    from alexft.weights.sources import cache_dir

    with serving({"/mirror/bvlc_alexnet.npy": ("ok", canonical_bytes)}) as url:
        result = run("weights", "fetch", "--url", f"{url}/mirror/bvlc_alexnet.npy")
    assert result.stdout.strip() == str(cache_dir() / "bvlc_alexnet.npy")
    assert (cache_dir() / "bvlc_alexnet.npy").read_bytes() == canonical_bytes
    assert "note:" not in result.stderr  # a name the commands look for: found without --weights
    with serving({"/w.npy": ("ok", canonical_bytes)}) as url:
        elsewhere = run("weights", "fetch", "--url", f"{url}/w.npy")
    assert elsewhere.exit_code == 0 and elsewhere.stdout.strip() == str(cache_dir() / "w.npy")
    assert f"note: commands use w.npy only when given it (--weights {cache_dir() / 'w.npy'})" in elsewhere.stderr


def test_a_download_keeps_its_format_and_a_pinned_hash_is_never_dropped(tmp_path, canonical_bytes, monkeypatch):
    """`fetch --url X.caffemodel -o w.npz` said it fetched w.npz, which every command then refused
    ("not a weights file"); $ALEXFT_WEIGHTS_SHA256 beside two URLs was dropped unsaid (the file then
    trusted on first use), and one that is no SHA-256 was found out only after the download."""
    with serving({"/bvlc_alexnet.caffemodel": ("ok", b"caffe"), "/w.npy": ("ok", canonical_bytes)}) as url:
        for source, output, meant in (("bvlc_alexnet.caffemodel", "w.npz", "w.caffemodel"), ("w.npy", "w.npz", "w.npy")):
            result = run("weights", "fetch", "--url", f"{url}/{source}", "-o", tmp_path / output)
            assert result.exit_code == 1, result.output
            assert result.stderr == (f"Error: {tmp_path / output}: {url}/{source} is a {Path(source).suffix} file, and a "
                                     f"download keeps its format: name it {tmp_path / meant}, then alexft weights "
                                     "convert makes an .npz of it\n")
        monkeypatch.setenv("ALEXFT_WEIGHTS_URL", f"{url}/w.npy {url}/bvlc_alexnet.caffemodel")
        monkeypatch.setenv("ALEXFT_WEIGHTS_SHA256", hashlib.sha256(canonical_bytes).hexdigest())
        result = run("weights", "fetch", "-o", tmp_path)
        assert result.exit_code == 1 and result.stderr == (
            "Error: $ALEXFT_WEIGHTS_SHA256 pins one URL's file, and $ALEXFT_WEIGHTS_URL names 2: give each its own as "
            "URL#sha256=HEX\n"), result.output
        monkeypatch.setenv("ALEXFT_WEIGHTS_URL", f"{url}/w.npy")
        monkeypatch.setenv("ALEXFT_WEIGHTS_SHA256", "00")
        result = run("weights", "fetch", "-o", tmp_path)
        assert result.exit_code == 1 and "'00' is not a SHA-256: expected 64 hexadecimal digits" in result.stderr
        assert url.requests == [] and list(tmp_path.iterdir()) == []


def test_fetch_with_the_defaults_leaves_a_file_the_commands_find_already(tmp_path, canonical_bytes, monkeypatch):
    """In a folder holding weights/bvlc_alexnet.npz, `weights fetch` went to the network and, offline,
    ended with "Put one of bvlc_alexnet.npz, … in <that folder>/weights" (a helper's trial)."""
    from alexft.weights.sources import cache_dir

    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "bvlc_alexnet.npz").write_bytes(canonical_bytes)
    with serving({"/bvlc_alexnet.npy": ("ok", canonical_bytes)}) as url:
        monkeypatch.setenv("ALEXFT_WEIGHTS_URL", f"{url}/bvlc_alexnet.npy")
        kept = run("weights", "fetch")
        assert kept.exit_code == 0 and kept.stdout == "weights/bvlc_alexnet.npz\n", kept.output
        assert kept.stderr == ("alexft: weights/bvlc_alexnet.npz is the weights file the commands use already; nothing "
                               "downloaded (--force downloads anyway, into the cache)\n")
        assert url.requests == []
        forced = run("weights", "fetch", "--force")
        assert forced.exit_code == 0 and forced.stdout.strip() == str(cache_dir() / "bvlc_alexnet.npy"), forced.output
        assert [path for path, _ in url.requests] == ["/bvlc_alexnet.npy"]
        monkeypatch.setenv("ALEXFT_WEIGHTS", str(tmp_path / "elsewhere.npz"))  # named but missing: not a file found
        (tmp_path / "weights" / "bvlc_alexnet.npz").unlink()
        again = run("weights", "fetch")
    assert again.exit_code == 0 and again.stdout.strip() == str(cache_dir() / "bvlc_alexnet.npy"), again.output
    assert "is already there; not downloaded again" in again.stderr  # the cache's own file, verified
    # ... but the commands would still fail on the missing file $ALEXFT_WEIGHTS names (a re-trial was told nothing).
    assert (f"alexft: warning: $ALEXFT_WEIGHTS names {tmp_path / 'elsewhere.npz'}, which is not there, and the commands "
            f"look there first: point it at {cache_dir() / 'bvlc_alexnet.npy'}, or unset it") in again.stderr


def test_dropped_connection_resumes_with_a_range_request(tmp_path, canonical_bytes, canonical_sha256):
    output = tmp_path / "w.npy"
    with serving({"/w.npy": ("drop", canonical_bytes)}) as url:
        result = run("weights", "fetch", "--url", f"{url}/w.npy", "--sha256", canonical_sha256, "--output", output)
        requests = list(url.requests)
    assert result.exit_code == 0, result.output
    assert requests == [("/w.npy", None), ("/w.npy", f"bytes={len(canonical_bytes) // 2}-")]
    assert output.read_bytes() == canonical_bytes
    assert folder_listing(tmp_path) == ["cache", "w.npy"]  # no partial file; the cache holds the hash, for later downloads
    assert canonical_sha256 in (tmp_path / "cache" / "known_files.json").read_text()  # $ALEXFT_CACHE (conftest.py)


def test_a_flaky_link_that_keeps_getting_further_is_not_given_up_on(tmp_path, canonical_bytes, canonical_sha256,
                                                                      caplog):
    """A server dropping the connection every eighth of the file: five attempts in all were
    allowed, and a download that moved on at every one was given up."""
    output = tmp_path / "w.npy"
    with serving({"/w.npy": ("trickle", canonical_bytes)}) as url:
        with caplog.at_level(logging.INFO, logger="alexft"):
            result = run("weights", "fetch", "--url", f"{url}/w.npy", "--sha256", canonical_sha256, "--output", output)
        requests = list(url.requests)
    assert result.exit_code == 0, result.output
    assert len(requests) == 8 > download.ATTEMPTS
    assert output.read_bytes() == canonical_bytes
    assert "(attempt 2 of 5)" in caplog.text and "(attempt 3 of 5)" not in caplog.text  # each retry is a first one


def test_a_server_that_sends_nothing_or_redirects_for_ever_is_said_in_a_line_and_leaves_nothing(tmp_path,
                                                                                                canonical_bytes):
    """An empty .part (and its .source) had been kept "to resume" after five attempts that
    received nothing; a loop of redirects was said in urllib's three lines."""
    output = tmp_path / "w.npy"
    with serving({"/w.npy": ("empty", canonical_bytes), "/loop.npy": ("loop", b"")}) as url:
        result = run("weights", "fetch", "--url", f"{url}/w.npy", "--output", output)
        assert result.exit_code == 1 and result.stderr.splitlines()[-1] == (
            f"Error: {url}/w.npy: connection closed after 0 of {len(canonical_bytes):,} bytes; gave up after "
            f"{download.ATTEMPTS} attempts without progress, and no byte was received"), result.stderr
        assert folder_listing(tmp_path) == []
        result = run("weights", "fetch", "--url", f"{url}/loop.npy", "--output", output)
        assert (result.exit_code, result.stderr.splitlines()) == (
            1, [f"Error: {url}/loop.npy: the server redirects without end (302 Found again and again)"])
        assert folder_listing(tmp_path) == []


def test_an_abandoned_download_is_resumed_by_the_next_run(tmp_path, canonical_bytes, canonical_sha256, caplog):
    output = tmp_path / "w.npy"
    with serving({"/w.npy": ("stall", canonical_bytes)}) as url:
        with caplog.at_level(logging.INFO, logger="alexft"):
            result = run("weights", "fetch", "--url", f"{url}/w.npy", "--output", output)
        assert result.exit_code == 1
        retries = [record.getMessage() for record in caplog.records if "trying again" in record.getMessage()]
        assert len(retries) == download.ATTEMPTS - 1, "each retry is said as it happens, not only at the end"
        assert f"(attempt {download.ATTEMPTS} of {download.ATTEMPTS})" in retries[-1]
        caplog.clear()
        assert f"gave up after {download.ATTEMPTS} attempts without progress" in result.stderr
        assert "\n" not in result.stderr.strip()
        partial = download.partial_path(output)
        # Only the hidden partial file and the record of where it came from may remain.
        assert folder_listing(tmp_path) == [partial.name, partial.name + ".source"]
        kept = partial.stat().st_size
        assert 0 < kept < len(canonical_bytes)
        url.routes["/w.npy"], earlier = ("ok", canonical_bytes), len(url.requests)
        with caplog.at_level(logging.INFO, logger="alexft"):
            result = run("weights", "fetch", "--url", f"{url}/w.npy", "--sha256", canonical_sha256, "--output", output)
        requests, if_ranges = url.requests[earlier:], url.if_ranges[earlier:]
    assert result.exit_code == 0, result.output
    assert f"continuing at {kept:,} of {len(canonical_bytes):,} bytes" in caplog.text
    assert requests == [("/w.npy", f"bytes={kept}-")]
    assert if_ranges == [f'"{canonical_sha256[:16]}"']  # the ETag the first run was given (http_server.py)
    assert output.read_bytes() == canonical_bytes
    assert folder_listing(tmp_path) == ["cache", "w.npy"]


def _changed(body):
    """Another version of the weights file: same size and structure, a number in its first
    half changed (the half a stalled download holds)."""
    changed = bytearray(body)
    changed[len(body) // 4] ^= 0xFF
    return bytes(changed)


def test_a_file_changed_on_the_server_since_the_partial_download_is_fetched_whole(tmp_path, canonical_bytes):
    """Before, the next run asked for the rest with a bare Range: the old version's first half
    was spliced onto the new version's second half, and without a published hash the mix
    (here: exactly the old file) passed every check. Now the range is asked If-Range the
    version begun, and a changed file comes whole."""
    output, new = tmp_path / "w.npy", _changed(canonical_bytes)
    with serving({"/w.npy": ("stall", canonical_bytes)}) as url:
        assert run("weights", "fetch", "--url", f"{url}/w.npy", "--output", output).exit_code == 1
        kept = download.partial_path(output).stat().st_size
        url.routes["/w.npy"], earlier = ("ok", new), len(url.requests)
        result = run("weights", "fetch", "--url", f"{url}/w.npy", "--output", output)
        requests, if_ranges = url.requests[earlier:], url.if_ranges[earlier:]
    assert result.exit_code == 0, result.output
    assert requests == [("/w.npy", f"bytes={kept}-")] and if_ranges[0] is not None
    assert output.read_bytes() == new
    assert folder_listing(tmp_path) == ["cache", "w.npy"]


@pytest.mark.parametrize("began", ["another URL", "unknown"])
def test_a_partial_download_is_resumed_only_from_the_url_that_began_it(tmp_path, canonical_bytes, began, caplog):
    """Before, a partial file was resumed from whatever URL the next fetch was given, or
    whatever left it there: another file's head with this one's tail. Now it is started over,
    with a note."""
    output, wanted = tmp_path / "w.npy", _changed(canonical_bytes)
    partial = download.partial_path(output)
    with serving({"/old.npy": ("stall", canonical_bytes), "/new.npy": ("ok", wanted)}) as url:
        if began == "another URL":
            assert run("weights", "fetch", "--url", f"{url}/old.npy", "--output", output).exit_code == 1
            origin = f"from {url}/old.npy"
        else:  # bytes of unknown origin (an older alexft kept no record)
            partial.write_bytes(canonical_bytes[:1000])
            origin = "of unknown origin"
        # A URL that fails (a typo, a 404) leaves the download resumable: it had been deleted first.
        kept = partial.read_bytes()
        assert run("weights", "fetch", "--url", f"{url}/typo.npy", "--output", output).exit_code == 1
        assert partial.read_bytes() == kept
        earlier = len(url.requests)
        with caplog.at_level(logging.WARNING, logger="alexft"):
            result = run("weights", "fetch", "--url", f"{url}/new.npy", "--output", output)
        requests = url.requests[earlier:]
    assert result.exit_code == 0, result.output
    assert f"{partial}: an unfinished download {origin}; starting over from {url}/new.npy" in caplog.text
    assert requests == [("/new.npy", None)]
    assert output.read_bytes() == wanted


def test_a_mirror_pinned_to_the_same_hash_continues_a_partial_download(tmp_path, canonical_bytes, canonical_sha256):
    """What mirrors are for: the URL that began the download fails, a mirror given the same
    --sha256 continues from where it stopped (the hash at the end guards the splice), without
    sending it the first server's ETag."""
    output = tmp_path / "w.npy"
    with serving({"/a/w.npy": ("stall", canonical_bytes), "/b/w.npy": ("ok", canonical_bytes)}) as url:
        assert run("weights", "fetch", "--url", f"{url}/a/w.npy", "--sha256", canonical_sha256,
                   "--output", output).exit_code == 1
        kept, earlier = download.partial_path(output).stat().st_size, len(url.requests)
        result = run("weights", "fetch", "--url", f"{url}/b/w.npy", "--sha256", canonical_sha256, "--output", output)
        requests, if_ranges = url.requests[earlier:], url.if_ranges[earlier:]
    assert result.exit_code == 0, result.output
    assert requests == [("/b/w.npy", f"bytes={kept}-")] and if_ranges == [None]
    assert output.read_bytes() == canonical_bytes


def test_a_server_without_ranges_restarts_the_download(tmp_path, canonical_bytes, canonical_sha256, caplog):
    output = tmp_path / "w.npy"
    with serving({"/w.npy": ("stall", canonical_bytes)}) as url:
        assert run("weights", "fetch", "--url", f"{url}/w.npy", "--output", output).exit_code == 1
        url.routes["/w.npy"], earlier = ("norange", canonical_bytes), len(url.requests)
        with caplog.at_level(logging.WARNING, logger="alexft"):
            result = run("weights", "fetch", "--url", f"{url}/w.npy", "--sha256", canonical_sha256, "--output", output)
        requests = url.requests[earlier:]
    assert result.exit_code == 0, result.output
    assert requests[0][1] is not None  # a range was asked for, and the whole file came instead
    kept = int(requests[0][1].split("=")[1].rstrip("-"))
    assert (f"{url}/w.npy: the server sent the file from its start (it does not resume downloads, or the file has "
            f"changed): the {kept:,} bytes downloaded before are replaced") in caplog.text
    assert output.read_bytes() == canonical_bytes


@pytest.mark.parametrize("damage", ["flipped", "html", "html-pinned"])
def test_wrong_bytes_are_refused_and_nothing_is_left(tmp_path, canonical_bytes, canonical_sha256, damage):
    output = tmp_path / "w.npy"
    body = canonical_bytes
    if damage == "flipped":  # same size and structure, different numbers: only the hash can tell
        body = bytearray(canonical_bytes)
        body[len(body) // 2] ^= 0xFF
        body = bytes(body)
    else:
        body = b"<!DOCTYPE html><html><body>Service unavailable</body></html>"
    sha = canonical_sha256 if damage != "html" else None  # (a hash pinned: a page was told only by its hash)
    with serving({"/w.npy": ("ok", body)}) as url:
        args = ["weights", "fetch", "--url", f"{url}/w.npy", "--output", output] + (["--sha256", sha] if sha else [])
        result = run(*args)
    assert result.exit_code == 1
    cause = {"html": "HTML/XML page", "flipped": f"expected {canonical_sha256}; download discarded",
             "html-pinned": f"expected {canonical_sha256}: the server sent an HTML/XML page, not the file"}[damage]
    assert cause in result.stderr and "download discarded" in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == [], "a refused download must leave nothing"


def test_a_file_already_there_is_verified_not_downloaded_again(tmp_path, canonical_weights_file, canonical_sha256, caplog):
    with serving({}) as url, caplog.at_level(logging.INFO, logger="alexft"):
        result = run("weights", "fetch", "--url", f"{url}/w.npy", "--output", canonical_weights_file, "--sha256", canonical_sha256)
        assert url.requests == []
    assert result.exit_code == 0 and "already there" in result.stderr
    assert f"its hash matches the one expected of {url}/w.npy" in caplog.text
    wrong = run("weights", "fetch", "--url", f"{url}/w.npy", "--output", canonical_weights_file, "--sha256", "0" * 64)
    assert wrong.exit_code == 1 and "different SHA-256" in wrong.stderr
    assert f"{canonical_sha256}, not {'0' * 64}" in wrong.stderr, "the file's own hash is shown, to compare"


def test_converting_a_downloaded_npz_keeps_what_its_first_download_recorded(tmp_path, canonical_weights_file, caplog):
    """Converting an .npz writes the same bytes: their record (the URL trusted on first use)
    stays, else that URL would be trusted afresh, and the copy would read as converted from itself."""
    assert run("weights", "convert", canonical_weights_file, tmp_path / "served.npz").exit_code == 0
    served = (tmp_path / "served.npz").read_bytes()
    with serving({"/w.npz": ("ok", served)}) as url:
        assert run("weights", "fetch", "--url", f"{url}/w.npz", "--output", tmp_path / "w.npz").exit_code == 0
        assert run("weights", "convert", tmp_path / "w.npz", tmp_path / "copy.npz").exit_code == 0
        assert (tmp_path / "copy.npz").read_bytes() == served  # the same bytes, the same record
        with caplog.at_level(logging.INFO, logger="alexft"):
            kept = run("weights", "fetch", "--url", f"{url}/w.npz", "--output", tmp_path / "w.npz")
        assert kept.exit_code == 0 and f"its hash matches the one recorded for {url}/w.npz" in caplog.text, caplog.text
        info = run("weights", "info", tmp_path / "copy.npz", "--json")
        assert json.loads(info.stdout)["source"].startswith(f"downloaded from {url}/w.npz, "), info.stdout


def test_a_file_already_there_must_be_the_urls_file_as_recorded_at_its_first_download(
        tmp_path, canonical_bytes, canonical_sha256, caplog):
    """An unpinned URL is trusted on first use; a file later found at --output is kept only if
    it has the hash recorded then, even when that first download came through a mirror too."""
    other = bytearray(canonical_bytes)
    other[len(other) // 2] ^= 0xFF  # still a readable weights file: only the hash can tell
    routes = {"/a/w.npy": ("ok", canonical_bytes), "/b/w.npy": ("ok", canonical_bytes)}
    with serving(routes) as url:
        for mirror in ("a", "b"):  # the same bytes from two URLs: both stay recorded
            assert run("weights", "fetch", "--url", f"{url}/{mirror}/w.npy", "--output", tmp_path / f"{mirror}.npy").exit_code == 0
        (tmp_path / "other.npy").write_bytes(other)
        for mirror in ("a", "b"):
            kept = run("weights", "fetch", "--url", f"{url}/{mirror}/w.npy", "--output", tmp_path / "other.npy")
            assert kept.exit_code == 1 and "already exists with a different SHA-256" in kept.stderr, kept.output
            assert f"{file_sha256(tmp_path / 'other.npy')}, not {canonical_sha256}, recorded for {url}/{mirror}/w.npy" in kept.stderr
        routes["/a/w.npy"] = ("ok", bytes(other))  # the first URL now serves other bytes: refused
        changed = run("weights", "fetch", "--url", f"{url}/a/w.npy", "--output", tmp_path / "again.npy")
        assert changed.exit_code == 1 and f"expected {canonical_sha256}" in changed.stderr
        other_sha256 = file_sha256(tmp_path / "other.npy")
        from alexft.weights.sources import cache_dir

        assert (f"The expected hash was recorded at the first download from this URL (in {cache_dir()}/"
                f"known_files.json): the file at {url}/a/w.npy has changed since.") in changed.stderr, changed.stderr
        advice = f"alexft weights fetch --url {url}/a/w.npy --sha256 {other_sha256} --output {tmp_path / 'again.npy'}"
        assert changed.stderr.rstrip().endswith(f"accept it: {advice}")
        accepted = run(*advice.split()[1:])  # what it says, word for word, once the change is vouched for
        assert accepted.exit_code == 0 and (tmp_path / "again.npy").read_bytes() == bytes(other)
        # From then on the URL is expected to serve the new bytes, and the mirror still the old ones.
        assert run("weights", "fetch", "--url", f"{url}/a/w.npy", "--output", tmp_path / "again.npy").exit_code == 0
        assert run("weights", "fetch", "--url", f"{url}/a/w.npy", "--output", tmp_path / "third.npy").exit_code == 0
        with caplog.at_level(logging.INFO, logger="alexft"):
            assert run("weights", "fetch", "--url", f"{url}/b/w.npy", "--output", tmp_path / "b.npy").exit_code == 0
        assert f"{tmp_path / 'b.npy'}: its hash matches the one recorded for {url}/b/w.npy" in caplog.text
        routes["/a/w.npy"] = ("ok", canonical_bytes)  # and back: the old bytes are refused at that URL now
        assert run("weights", "fetch", "--url", f"{url}/a/w.npy", "--output", tmp_path / "fourth.npy").exit_code == 1
        with caplog.at_level(logging.WARNING, logger="alexft"):  # a URL never downloaded: kept, and said
            unchecked = run("weights", "fetch", "--url", f"{url}/never/w.npy", "--output", tmp_path / "other.npy")
        assert url.requests.count(("/never/w.npy", None)) == 0
    assert unchecked.exit_code == 0 and "not checked against" in caplog.text
    assert (tmp_path / "other.npy").read_bytes() == bytes(other)


@pytest.mark.parametrize("command", ["convert", "fetch"])
def test_sigterm_mid_write_leaves_only_what_the_next_run_uses(command, tmp_path, canonical_caffemodel):
    """SIGTERM (kill, timeout, a container stop) ends convert and fetch as Ctrl-C does: exit 143,
    `alexft: terminated`. convert's half-written hidden file is removed (it would be a
    nearly full-size copy nothing ever deletes); fetch keeps its partial download, which the
    next fetch continues."""
    out = tmp_path / "out"
    out.mkdir()
    alexft = str(Path(sys.executable).parent / "alexft")
    with serving({"/w.caffemodel": ("hang", canonical_caffemodel.read_bytes())}) as url:
        arguments = {"convert": ["weights", "convert", str(canonical_caffemodel), str(out / "w.npz")],
                     "fetch": ["weights", "fetch", "--url", f"{url}/w.caffemodel", "--output", str(out / "w.caffemodel")]}
        process = subprocess.Popen([alexft, *arguments[command]], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   text=True)
        started, pattern = time.monotonic(), {"convert": ".w.npz.tmp-*", "fetch": ".w.caffemodel.part"}[command]
        while not [path for path in out.glob(pattern) if path.stat().st_size]:  # mid-write
            assert process.poll() is None and time.monotonic() - started < 120, process.communicate()
            time.sleep(0.005)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == stopped_by(signal.SIGTERM), stderr
    assert stderr.strip().splitlines()[-1] == "alexft: terminated"
    if command == "fetch":  # what it keeps is said
        kept = (out / ".w.caffemodel.part").stat().st_size
        assert f".w.caffemodel.part: {kept:,} bytes kept; the next fetch of {url}/w.caffemodel continues" in stderr
    assert folder_listing(out) == ([] if command == "convert" else [".w.caffemodel.part", ".w.caffemodel.part.source"])


# --- info ----------------------------------------------------------------------------------


def test_info_json_describes_the_canonical_file(canonical_weights_file, canonical_sha256):
    result = run("weights", "info", "--json", canonical_weights_file)
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["format"] == "npy" and facts["sha256"] == canonical_sha256 and facts["source"] is None
    assert "source: unknown" in run("weights", "info", canonical_weights_file).stdout
    assert facts["parameters"] == 60_965_224 and facts["classes"] == 1000 and facts["class_names"] is None
    assert facts["canonical_layout"] is True and facts["problem"] is None
    assert [layer["name"] for layer in facts["layers"]] == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    assert facts["layers"][1]["weights"] == {"shape": [5, 5, 48, 256], "dtype": "float32"}


def test_info_on_a_fine_tuned_file_and_on_a_broken_one(tmp_path):
    params = {name: tuple(pair) for name, pair in random_params(seed=4, num_classes=3).items()}
    fine_tuned = weights.save(weights.WeightSet(params, ["tabby, tabby cat", "dog", "elk"]), tmp_path / "model.npz")
    human = run("weights", "info", fine_tuned)
    assert human.exit_code == 0
    # A name holding commas stays one name: each is quoted.
    assert "classes: 3 ('tabby, tabby cat', 'dog', 'elk')" in human.stdout and "different class count" in human.stdout
    assert "fc8    weights (4096, 3)" in human.stdout
    # Names that do not fit the outputs are not listed as its classes above the problem they are
    mismatched = weights.save(weights.WeightSet(params, ["a", "b", "c", "d"]), tmp_path / "mismatched.npz")
    result = run("weights", "info", mismatched)
    assert result.exit_code == 1 and "classes: 3 (4 names stored, which do not fit)" in result.stdout
    assert f"problem: {mismatched}: 4 class names for 3 fc8 outputs" in result.stdout
    params["fc7"] = (params["fc7"][0][:100], params["fc7"][1])
    broken = weights.save(weights.WeightSet(params), tmp_path / "broken.npz")
    result = run("weights", "info", "--json", broken)
    assert result.exit_code == 1
    facts = json.loads(result.stdout)
    assert facts["canonical_layout"] is False and "fc7 weights have shape (100, 4096)" in facts["problem"]
    assert result.stderr.splitlines() == [f"Error: {facts['problem']}"]  # the exit status's reason, on stderr too
    # Class names stored without an fc8 are not said to be its classes.
    del params["fc8"]
    params["fc7"] = random_params(seed=4, num_classes=3)["fc7"]
    headless = weights.save(weights.WeightSet(params, ["tabby, tabby cat", "dog", "elk"]), tmp_path / "headless.npz")
    result = run("weights", "info", headless)
    assert result.exit_code == 1
    assert "classes: unknown, no usable fc8 (3 names stored)" in result.stdout
    assert result.stderr.splitlines() == [f"Error: {headless}: missing layer(s) fc8"]
    # A run's last_layers.npz (--keep-last, its trained layers only) was refused with the missing
    # layers alone: it says what it is, and where the run's whole network is.
    last = tmp_path / "run" / "last_layers.npz"
    last.parent.mkdir()
    weights.save(weights.WeightSet({"fc8": random_params(seed=4, num_classes=3)["fc8"]}, ["tabby, tabby cat", "dog",
                                                                                            "elk"]), last)
    result = run("classify", photo_paths()["chelsea"], "--weights", last)
    assert result.exit_code == 1 and result.stderr.splitlines() == [
        f"Error: {last}: missing layer(s) conv1, conv2, conv3, conv4, conv5, fc6, fc7; it holds a run's trained layers "
        f"only, of its last epoch (--keep-last): the run's whole network is {last.parent / 'model.npz'} (its best epoch)"]
    # A folder: --json still gives one object (it was click's usage error, with nothing on stdout).
    result = run("weights", "info", "--json", tmp_path)
    assert result.exit_code == 1 and json.loads(result.stdout) == {"path": str(tmp_path),
                                                                    "problem": f"{tmp_path}: is a folder, not a weights file"}


def test_info_on_a_file_that_is_not_weights_is_a_one_line_error(tmp_path):
    page = tmp_path / "page.npy"
    page.write_text("<html>not found</html>")
    result = run("weights", "info", page)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [f"Error: {page}: not a weights file (it is an HTML/XML page, perhaps an error page saved by a download); expected .npy, .npz or .caffemodel"]
    # --json gives its one object even then: the path and why.
    result = run("weights", "info", "--json", page)
    assert result.exit_code == 1 and json.loads(result.stdout) == {"path": str(page), "problem": result.stderr[7:].strip()}


# --- convert -------------------------------------------------------------------------------


def test_convert_legacy_npy_to_npz_that_never_unpickles(tmp_path, canonical_weights_file, canonical_params, monkeypatch):
    output = tmp_path / "alexnet.npz"
    result = run("weights", "convert", canonical_weights_file, output)
    assert result.exit_code == 0, result.output
    monkeypatch.setattr(formats, "_NumpyOnlyUnpickler", None)  # any unpickling attempt now fails loudly
    loaded = weights.load(output)
    for name, (kernel, bias) in canonical_params.items():
        np.testing.assert_array_equal(loaded.params[name][0], kernel)
        np.testing.assert_array_equal(loaded.params[name][1], bias)
    facts = json.loads(run("weights", "info", "--json", output).stdout)
    assert facts["canonical_layout"] is True
    # Recorded, so that info can say where the file came from (the generated source is no published file).
    assert facts["source"].startswith(f"converted by alexft from {canonical_weights_file.name}, ")
    assert facts["source"].endswith(" (source unknown)")


def test_an_npz_converted_again_is_not_said_to_be_converted_from_itself(tmp_path):
    """Converting an .npz writes its own bytes again; recorded by their hash, `weights info` of
    the original then said it was "converted by alexft from" its own name (a helper's trial)."""
    original = weights.save(weights.WeightSet({name: tuple(pair) for name, pair in random_params(seed=8).items()}),
                            tmp_path / "w.npz")
    assert run("weights", "convert", original, tmp_path / "conv" / "c.npz").exit_code == 0
    assert (tmp_path / "conv" / "c.npz").read_bytes() == original.read_bytes()
    for path in (original, tmp_path / "conv" / "c.npz"):
        assert json.loads(run("weights", "info", "--json", path).stdout)["source"] is None


def test_convert_stores_class_names(tmp_path, caplog):
    params = {name: tuple(pair) for name, pair in random_params(seed=5, num_classes=2).items()}
    source = weights.save(weights.WeightSet(params), tmp_path / "two.npz")
    names = tmp_path / "names.txt"
    names.write_text("sea otter\r\n\r\nrocket\r\n", encoding="utf-8-sig")  # a byte-order mark: not in the first name
    assert run("weights", "convert", "--class-names", names, source, tmp_path / "named.npz").exit_code == 0
    assert weights.load(tmp_path / "named.npz").class_names == ["sea otter", "rocket"]
    names.write_text("only one\n")
    result = run("weights", "convert", "--class-names", names, source, tmp_path / "bad.npz")
    assert result.exit_code == 1 and "1 class names given for 2 fc8 outputs" in result.stderr
    # The names file is named, and a blank line among the names said (the error named only the
    # weights file, and a blank line skipped left the count one short in silence).
    names.write_text("sea otter\n\n\nrocket\n\nplane\n\n")
    result = run("weights", "convert", "--class-names", names, source, tmp_path / "bad.npz")
    assert result.exit_code == 1 and result.stderr.splitlines() == [
        f"Error: {names}: 3 class names given for 2 fc8 outputs in {source}; blank lines 2, 3, 5 skipped (one name "
        "per line)"]
    # Repeated names are said (results by name cannot tell them apart), not refused: ImageNet's
    # own list names two classes "crane".
    names.write_text("otter\notter\n")
    result = run("weights", "convert", "--class-names", names, source, tmp_path / "twice.npz")
    assert result.exit_code == 0 and f"alexft: warning: {tmp_path / 'twice.npz'}: class names given more than once: " \
        "'otter'; results by name cannot tell those classes apart" in result.stderr.splitlines(), result.stderr


def test_convert_refuses_other_outputs_and_bad_sources(tmp_path):
    params = {name: tuple(pair) for name, pair in random_params(seed=5, num_classes=2).items()}
    source = weights.save(weights.WeightSet(params), tmp_path / "two.npz")
    npy = run("weights", "convert", source, tmp_path / "x.npy")
    assert npy.exit_code == 2 and "must be an .npz" in npy.stderr
    into_new_folders = run("weights", "convert", source, tmp_path / "new" / "sub" / "two.npz")
    assert into_new_folders.exit_code == 0, into_new_folders.output
    assert weights.load(tmp_path / "new" / "sub" / "two.npz").num_classes == 2
    (tmp_path / "a_file").write_text("not a folder")
    blocked = run("weights", "convert", source, tmp_path / "a_file" / "two.npz")
    # Said before the source is read (a .caffemodel takes seconds), as for every output.
    assert blocked.exit_code == 1 and f"a_file/two.npz: cannot be written: {tmp_path / 'a_file'} is not a folder" \
        in blocked.stderr, blocked.stderr
    assert "is the source itself" in run("weights", "convert", source, source).stderr
    (tmp_path / "empty.npy").write_bytes(b"")
    result = run("weights", "convert", tmp_path / "empty.npy", tmp_path / "out.npz")
    assert result.exit_code == 1 and "empty.npy: weights file is empty" in result.stderr
    # A folder is an unusable input, status 1 as in weights info (it was click's usage error, 2).
    (tmp_path / "folder.npy").mkdir()
    for args in (["convert", tmp_path / "folder.npy", tmp_path / "out.npz"], ["info", tmp_path / "folder.npy"]):
        result = run("weights", *args)
        assert (result.exit_code, result.stderr.splitlines()) == (
            1, [f"Error: {tmp_path / 'folder.npy'}: is a folder, not a weights file"]), result.stderr
    assert not (tmp_path / "out.npz").exists()


def test_convert_replaces_an_existing_output_only_with_force(tmp_path):
    first = weights.save(weights.WeightSet({n: tuple(p) for n, p in random_params(seed=5, num_classes=2).items()}),
                         tmp_path / "first.npz")
    second = weights.save(weights.WeightSet({n: tuple(p) for n, p in random_params(seed=6, num_classes=3).items()}),
                          tmp_path / "second.npz")
    output = tmp_path / "fine-tuned.npz"
    assert run("weights", "convert", first, output).exit_code == 0
    kept = output.read_bytes()
    refused = run("weights", "convert", second, output)
    assert refused.exit_code == 1 and refused.stdout == ""
    assert refused.stderr.strip().splitlines() == [f"Error: {output}: already holds weights; pass --force to replace them"]
    assert output.read_bytes() == kept
    replaced = run("weights", "convert", "--force", second, output)
    assert replaced.exit_code == 0, replaced.output
    assert weights.load(output).num_classes == 3
    # --force replaced anything named as the output: a photo saved under an .npz name, a feature
    # file (a helper's trial). Only weights are replaced, as fetch --force and save_weights do.
    photo = tmp_path / "photo.npz"
    shutil.copy(photo_paths()["chelsea"], photo)
    features = tmp_path / "fc7.npz"
    np.savez(features, features=np.zeros((2, 4096), np.float32), paths=np.array(["a.jpg", "b.jpg"]))
    features_cut = tmp_path / "fc7_cut.npz"
    features_cut.write_bytes(features.read_bytes()[:-30])  # its index gone, its members' headers still there
    # Each said for what it is (all were "no layers in it"), with another output as the way out.
    # Said at once, not "pass --force" first and this after it (a helper's).
    for kept, what in ((photo, "a PNG image"), (features, "it holds features"), (features_cut, "it holds features")):
        before = kept.read_bytes()
        for force in (["--force"], []):
            refused = run("weights", "convert", *force, second, kept)
            assert refused.exit_code == 1 and refused.stdout == "", refused.output
            assert refused.stderr.strip() == (f"Error: {kept}: exists and is not a weights file ({what}), so it is not "
                                              "replaced, even with --force; name another output, or remove it first if "
                                              "it should go")
        assert kept.read_bytes() == before
    # An earlier output cut short (a copy that did not finish) has lost the zip's index at its end;
    # its members' own headers still say it holds weights, so --force replaces it (it was refused
    # as "not a weights file").
    whole = output.read_bytes()
    for cut in (len(whole) // 2, len(whole) - 30, 5000):
        output.write_bytes(whole[:cut])
        refused = run("weights", "convert", first, output)
        assert refused.exit_code == 1 and "already holds weights; pass --force to replace them" in refused.stderr
        replaced = run("weights", "convert", "--force", first, output)
        assert replaced.exit_code == 0, replaced.output
        assert weights.load(output).num_classes == 2


def test_caffemodel_converts_to_the_same_predictions(tmp_path, canonical_caffemodel, canonical_weights_file):
    facts = json.loads(run("weights", "info", "--json", canonical_caffemodel).stdout)
    assert facts["format"] == "caffemodel" and facts["canonical_layout"] is True
    converted = tmp_path / "from_caffe.npz"
    result = run("weights", "convert", canonical_caffemodel, converted)
    assert result.exit_code == 0, result.output
    photos = [photo_paths()[name] for name in ("chelsea", "china")]
    direct = run("classify", "--json", "--weights", canonical_weights_file, *photos)
    from_caffe = run("classify", "--json", "--weights", converted, *photos)
    assert direct.exit_code == 0 and from_caffe.stdout == direct.stdout


def test_fetch_a_caffemodel_recognised_by_its_content(tmp_path, canonical_caffemodel):
    body = canonical_caffemodel.read_bytes()
    with serving({"/zoo/bvlc_alexnet.caffemodel": ("drop", body)}) as url:
        result = run("weights", "fetch", "--url", f"{url}/zoo/bvlc_alexnet.caffemodel", "--output", tmp_path / "alexnet.caffemodel")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "alexnet.caffemodel").read_bytes() == body


# --- fine-tuned Caffe models that rename fc8 ---------------------------------------------


@pytest.fixture(scope="module")
def flickr_style_caffemodels(tmp_path_factory, canonical_params):
    """Caffe models as its fine-tuning example leaves them: fc8 renamed fc8_flickr, 20 classes
    (the layer written after fc7's dropout, as there); and one with two candidate layers."""
    from caffemodel import to_caffe_layout, write_caffemodel

    folder = tmp_path_factory.mktemp("flickr")
    caffe = to_caffe_layout(canonical_params)
    rng = np.random.default_rng(5)
    fresh = [rng.standard_normal((20, 4096)).astype(np.float32), rng.standard_normal(20).astype(np.float32)]
    other = [rng.standard_normal((7, 4096)).astype(np.float32), rng.standard_normal(7).astype(np.float32)]
    base = {name: blobs for name, blobs in caffe.items() if name != "fc8"}
    one = write_caffemodel(folder / "finetune_flickr_style.caffemodel", dict(base, fc8_flickr=fresh))
    two = write_caffemodel(folder / "two_heads.caffemodel", dict(base, fc8_a=other, fc8_b=fresh))
    return one, two, fresh


def test_a_renamed_fc8_is_found_when_it_is_the_only_reading(flickr_style_caffemodels, canonical_params, tmp_path,
                                                             caplog):
    one, _, fresh = flickr_style_caffemodels
    with caplog.at_level(logging.WARNING, logger="alexft"):
        result = run("weights", "convert", one, tmp_path / "flickr.npz")
    assert result.exit_code == 0, result.output
    notes = [record.getMessage() for record in caplog.records if "fc8_flickr" in record.getMessage()]
    assert len(notes) == 1 and "'fc8_flickr' read as fc8" in notes[0] and "\n" not in notes[0], caplog.text
    converted = weights.load(tmp_path / "flickr.npz")
    assert converted.num_classes == 20
    np.testing.assert_array_equal(converted.params["fc8"][0], fresh[0].T)  # Caffe's (out, in) -> (in, out)
    np.testing.assert_array_equal(converted.params["fc8"][1], fresh[1])
    np.testing.assert_array_equal(converted.params["fc7"][0], canonical_params["fc7"][0])


def test_two_candidates_need_rename_and_rename_is_checked(flickr_style_caffemodels, canonical_weights_file, tmp_path,
                                                          caplog):
    _, two, fresh = flickr_style_caffemodels
    ambiguous = run("weights", "convert", two, tmp_path / "x.npz")
    assert ambiguous.exit_code == 1 and "missing layer(s) fc8" in ambiguous.stderr
    assert "'fc8_a', 'fc8_b'" in ambiguous.stderr and "--rename NAME=LAYER" in ambiguous.stderr
    with caplog.at_level(logging.WARNING, logger="alexft"):
        chosen = run("weights", "convert", two, tmp_path / "b.npz", "--rename", "fc8_b=fc8")
    assert chosen.exit_code == 0, chosen.output
    # The head not chosen is said to be left out (a layer with weights was dropped in silence).
    assert [record.getMessage() for record in caplog.records] == [
        f"{two}: layer(s) 'fc8_a' hold weights AlexNet has no place for, and are left out (if the network computed "
        "with them, it is not AlexNet)"]
    np.testing.assert_array_equal(weights.load(tmp_path / "b.npz").params["fc8"][1], fresh[1])
    for args, status, message in [
        (["--rename", "fc8_c=fc8"], 1, "--rename fc8_c: no such layer"),
        (["--rename", "fc8_b"], 2, "expected NAME=LAYER"),  # malformed: a usage error
        (["--rename", "fc8_b=fc9"], 1, "--rename to fc9: AlexNet's layers are conv1"),
    ]:
        refused = run("weights", "convert", two, tmp_path / "r.npz", *args)
        assert refused.exit_code == status and message in refused.stderr, (args, refused.stderr)
    on_npy = run("weights", "convert", canonical_weights_file, tmp_path / "n.npz", "--rename", "a=fc8")
    assert on_npy.exit_code == 1 and "--rename applies to .caffemodel files" in on_npy.stderr
    assert not any(tmp_path.glob("[rn].npz"))


def test_a_truncated_npz_reads_the_same_in_info_and_convert_as_in_the_other_commands(tmp_path):
    whole = weights.save(weights.WeightSet({name: tuple(pair) for name, pair in random_params(seed=6).items()}),
                         tmp_path / "whole.npz")
    cut = tmp_path / "cut.npz"
    cut.write_bytes(whole.read_bytes()[:1000])
    # As classify and export say it, and a cut .npy too (it was zipfile's "File is not a zip file").
    expected = f"Error: {cut}: the file ends early (1,000 bytes; an interrupted download or copy?)"
    for args in (["weights", "info", cut], ["weights", "convert", cut, tmp_path / "out.npz"]):
        result = run(*args)
        assert result.exit_code == 1 and result.stderr.splitlines() == [expected], args
    # Whole, its index damaged: not "ends early", but what zipfile finds
    damaged = bytearray(whole.read_bytes())
    central = bytes(damaged).index(b"PK\x01\x02")
    damaged[central + 2] ^= 0xFF
    cut.write_bytes(bytes(damaged))
    result = run("weights", "info", cut)
    assert result.exit_code == 1 and result.stderr.startswith(f"Error: {cut}: corrupt or truncated .npz ("), result.stderr
    assert "ends early" not in result.stderr
    # 1 KB cut from the middle: the index points past the file's start (it said "[Errno 22] Invalid argument")
    data = whole.read_bytes()
    cut.write_bytes(data[:len(data) // 2] + data[len(data) // 2 + 1024:])
    expected = f"Error: {cut}: corrupt or truncated .npz (its index points outside the file: bytes are missing from it)"
    for args in (["weights", "info", cut], ["weights", "convert", cut, tmp_path / "out.npz"],
                 ["classify", "--weights", cut, photo_paths()["chelsea"]]):
        result = run(*args)
        assert result.exit_code == 1 and result.stderr.splitlines() == [expected], (args, result.stderr)


def test_a_later_unhashed_fetch_of_the_same_bytes_keeps_them_recorded_as_checked(tmp_path, canonical_bytes,
                                                                                 canonical_sha256):
    """Trust is a property of the bytes: a second fetch without --sha256 (checked against the hash
    recorded at the first) must not demote a verified file to 'trusted on first use'."""
    with serving({"/w.npy": ("ok", canonical_bytes)}) as url:
        assert run("weights", "fetch", "--url", f"{url}/w.npy", "--sha256", canonical_sha256,
                   "--output", tmp_path / "checked.npy").exit_code == 0
        assert run("weights", "fetch", "--url", f"{url}/w.npy", "--output", tmp_path / "again.npy").exit_code == 0
    for name in ("checked.npy", "again.npy"):
        source = json.loads(run("weights", "info", "--json", tmp_path / name).stdout)["source"]
        assert source.endswith(f"(checked against SHA-256 {canonical_sha256})"), source


def test_a_stop_after_the_converted_file_is_in_place_keeps_it_and_stops_the_command(tmp_path, canonical_weights_file,
                                                                                     canonical_params, monkeypatch):
    """Recording its origin hashes both files for a second after the rename: a stop there keeps
    the whole file, says so with the result, and then stops the command (130/143), as a run
    stopped as its last epoch ends does. It had exited 0, so a shell's loop of conversions went on."""
    from alexft import interrupts
    from alexft.weights import sources

    for stop in ("Ctrl-C", "SIGTERM"):
        def interrupted(source, converted):
            if stop == "SIGTERM":  # as the command line's handler does: noted, then raised
                interrupts.note(signal.SIGTERM)
                raise interrupts.Terminated
            raise KeyboardInterrupt

        monkeypatch.setattr(sources, "remember_conversion", interrupted)
        output = tmp_path / f"{stop}.npz"
        result = run("weights", "convert", canonical_weights_file, output)
        assert result.exit_code == (143 if stop == "SIGTERM" else 130), (stop, result.output)
        assert result.stdout == f"{output}: 1000 classes, from {canonical_weights_file}\n"
        assert result.stderr.splitlines() == [
            f"alexft: the stop came after {output} was written whole; only its origin, which weights info shows, was "
            "not recorded", f"alexft: {'terminated' if stop == 'SIGTERM' else 'interrupted'}"]
        written = weights.load(output).params
        assert all(np.array_equal(written[name][0], canonical_params[name][0]) for name in canonical_params)


def test_save_weights_replaces_only_weights_files(tmp_path):
    """alexft.save_weights wrote a 227 MB zip over a photo named by mistake, and .npz files under
    any name (sw.npy). As Keras' save_weights it replaces an earlier weights file unless
    overwrite=False; anything else is refused and left as it was."""
    import alexft
    from alexft.errors import WeightsError

    small = formats.WeightSet({name: pair for name, pair in random_params(num_classes=3).items()}, ["a", "b", "c"])
    photo = tmp_path / "victim.npz"
    photo.write_bytes(photo_paths()["chelsea"].read_bytes())
    features = tmp_path / "features.npz"
    np.savez(features, features=np.zeros((1, 4)), paths=np.array(["x.jpg"]))
    for path, message in [(photo, "exists and is not a weights file (a PNG image), so it is not replaced, even "
                                  "with overwrite=True; name another output, or remove it first if it should go"),
                          (features, "exists and is not a weights file"),
                          (tmp_path / "sw.npy", "weights are saved as .npz; name the file so (e.g. sw.npz)"),
                          (tmp_path / "sw", "weights are saved as .npz"), (tmp_path, "is a folder; name a file")]:
        before = path.read_bytes() if path.is_file() else None
        with pytest.raises(WeightsError, match=f"^{re.escape(f'{path}: {message}')}"):
            alexft.save_weights(small, path)
        assert (path.read_bytes() if path.is_file() else None) == before
    assert not (tmp_path / "sw.npy").exists() and not (tmp_path / "sw").exists()
    saved = alexft.save_weights(small, tmp_path / "model.npz")
    assert saved == tmp_path / "model.npz" and alexft.load_weights(saved).class_names == ["a", "b", "c"]
    with pytest.raises(WeightsError, match="model.npz: already exists; pass overwrite=True to replace it"):
        alexft.save_weights(small, saved, overwrite=False)
    again = formats.WeightSet(dict(small.params), ["x", "y", "z"])
    alexft.save_weights(again, saved)  # an earlier weights file: replaced, as Keras does
    assert alexft.load_weights(saved).class_names == ["x", "y", "z"]
    with pytest.raises(TypeError, match="save_weights takes a WeightSet .*weights_from_model.* not dict"):
        alexft.save_weights(small.params, tmp_path / "params.npz")


def test_a_failed_fetch_leaves_no_folder_it_made(tmp_path):
    """`weights fetch -o new/x.npy` from a source that cannot be reached left an empty new/ behind.
    A stalled transfer still keeps its partial file there for the next fetch."""
    result = CliRunner().invoke(main, ["weights", "fetch", "--url", "http://127.0.0.1:9/w.npy", "-o",
                                       str(tmp_path / "new" / "deeper" / "x.npy")])
    assert result.exit_code == 1 and "download failed" in result.output
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "mine").mkdir()  # a folder that was there stays, empty or not
    CliRunner().invoke(main, ["weights", "fetch", "--url", "http://127.0.0.1:9/w.npy", "-o", str(tmp_path / "mine" / "x.npy")])
    assert [path.name for path in tmp_path.iterdir()] == ["mine"]


def test_python_converts_name_its_keywords_where_the_command_names_its_flags(canonical_weights_file, tmp_path):
    """alexft.convert_weights said "pass --force" and "--rename" to a Python caller (a helper's trial)."""
    import alexft
    from alexft.errors import WeightsError

    output = tmp_path / "w.npz"
    alexft.convert_weights(canonical_weights_file, output)
    with pytest.raises(WeightsError, match=r"w\.npz: already holds weights; pass force=True to replace them$"):
        alexft.convert_weights(canonical_weights_file, output)
    with pytest.raises(WeightsError, match=r": renames applies to \.caffemodel files"):
        alexft.convert_weights(canonical_weights_file, tmp_path / "r.npz", renames={"fc8_flickr": "fc8"})
    assert alexft.convert_weights(canonical_weights_file, output, force=True).num_classes == 1000
    result = run("weights", "convert", canonical_weights_file, output)  # the command keeps its flags
    assert result.exit_code == 1 and "already holds weights; pass --force to replace them" in result.stderr
