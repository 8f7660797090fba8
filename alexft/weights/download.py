"""Download a weights file safely: hidden partial file in the target folder, verify, then rename.

The bytes go to `.NAME.part` next to the destination. A dropped connection is retried with an
HTTP Range request when the server honours ranges (a server that does not gets the download
restarted); a run that gives up keeps the partial file, and the next run resumes it. Only a
file whose size, (when known) hash and structure check out is renamed to its real name,
so a partial or corrupted download never looks complete.

Beside the partial file, `.NAME.part.source` records the URL it came from and the server's
validator (its ETag, else Last-Modified), and the hashes it was pinned to. A partial file is
resumed only from that URL (or a mirror pinned to the same hash, which the end checks), and
with `If-Range`, so a server whose file has changed sends the new one whole instead of its
tail spliced onto the old one's head: without a published hash that mix could pass every
other check.
"""
import hashlib
import http.client
import json
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from ..atomic import missing_folders, remove_empty, write_text
from ..errors import WeightsError
from ..progress import progress_bar
from . import formats as weights_io

CHUNK = 1 << 20
ATTEMPTS = 5  # in a row without progress: a link that keeps moving on is never given up on
RETRY_DELAY = 1.0  # seconds, doubled after each failed attempt
PROGRESS = 1 << 20  # bytes an attempt must add to count as progress

log = logging.getLogger("alexft")


class _Interrupted(Exception):
    """The transfer stopped early; worth another attempt."""


def download_weights(url, destination, sha256=None, progress=None, timeout=30, sha1=None):
    """Fetch `url` to `destination`, check it is a valid AlexNet weights file, then move it into place.

    `sha256` and `sha1`, when given, must match the file's hashes; they are checked before
    anything in the file is read. `progress=None` shows a bar only on a terminal.
    Returns the destination path; raises WeightsError with the reason otherwise.
    """
    destination = Path(destination)
    made = missing_folders(destination.parent)
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _download(url, destination, dict(sha256=sha256, sha1=sha1), progress, timeout)
    finally:
        if not destination.exists():  # failed: the folders made for it go too, unless bytes were kept there
            remove_empty(made)


def _download(url, destination, expected, progress, timeout):
    partial = partial_path(destination)
    with _exclusive(partial, url):
        fresh = _start_over_unless_from(url, partial, expected)
        try:
            _fetch_with_retries(url, partial, expected, progress, timeout, fresh)
            _verify_or_discard(partial, url, expected)
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM: what came is kept (checked or not), and the user is told so
            if partial.exists() and partial.stat().st_size:
                log.warning("%s: %s bytes kept; the next fetch of %s continues from there", partial,
                            f"{partial.stat().st_size:,}", url)
            raise
        os.replace(partial, destination)
        _source_path(partial).unlink(missing_ok=True)
    return destination


def partial_path(destination):
    """Where an unfinished download of `destination` is kept (hidden, never taken for the file)."""
    destination = Path(destination)
    return destination.with_name(f".{destination.name}.part")


def _source_path(partial):
    return partial.with_name(partial.name + ".source")


def _recorded_source(partial):
    """{"url", "validator", "pinned"} of the download `partial` holds the beginning of; {} if unknown."""
    try:
        record = json.loads(_source_path(partial).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _pinned(expected):
    return {algorithm: digest.lower() for algorithm, digest in expected.items() if digest}


def _start_over_unless_from(url, partial, expected):
    """True when a partial file is not to be resumed: from another URL, or with no record of
    where it came from (an older alexft's, or not ours), its bytes may belong to another file.
    It is replaced once this URL's server sends the file, not before: a URL that fails (a
    typo, a 404) leaves the other download resumable. A mirror pinned to the same hash as the
    URL that began it continues it."""
    if not partial.exists():
        _source_path(partial).unlink(missing_ok=True)
        return False
    record = _recorded_source(partial)
    began, pinned = record.get("url"), record.get("pinned")
    pinned = pinned if isinstance(pinned, dict) else {}
    same_file = any(pinned.get(algorithm) == digest for algorithm, digest in _pinned(expected).items())
    if began != url and not same_file:
        log.warning("%s: an unfinished download %s; starting over from %s (it is replaced once that server sends "
                    "the file)", partial, f"from {began}" if began else "of unknown origin", url)
        return True
    return False


def _validator(response):
    """What identifies this version of the file for If-Range: a strong ETag, else Last-Modified."""
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("Last-Modified")


@contextmanager
def _exclusive(partial, url):
    """Hold a lock on the partial file so two downloads never write into it at once."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; the rename is still atomic
        yield
        return
    lock_path = partial.with_name(partial.name + ".lock")
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WeightsError(f"{url}: another download into {partial.parent} is running") from None
        try:
            yield
        finally:
            lock_path.unlink(missing_ok=True)


def _fetch_with_retries(url, partial, expected, progress, timeout, fresh=False):
    delay, attempt = RETRY_DELAY, 1
    while True:
        fresh = fresh and _recorded_source(partial).get("url") != url  # until this URL's bytes are in it
        before = 0 if fresh else _size(partial)
        try:
            _fetch(url, partial, expected, progress, timeout, fresh)
            return
        except _Interrupted as error:
            if _size(partial) >= before + PROGRESS:  # it got further: the count of attempts starts again
                delay, attempt = RETRY_DELAY, 1
            if attempt == ATTEMPTS:
                gave_up = f"{url}: {error}; gave up after {ATTEMPTS} attempts without progress"
                if not _size(partial):  # nothing to resume: no empty .part left behind
                    partial.unlink(missing_ok=True)
                    _source_path(partial).unlink(missing_ok=True)
                    raise WeightsError(f"{gave_up}, and no byte was received") from None
                raise WeightsError(f"{gave_up}, kept {_size(partial):,} bytes in {partial} to resume next time") \
                    from None
            attempt += 1
            log.warning("%s: %s; trying again in %g s (attempt %d of %d)", url, error, delay, attempt, ATTEMPTS)
            time.sleep(delay)
            delay *= 2


def _size(path):
    return path.stat().st_size if path.exists() else 0


def _fetch(url, partial, expected, progress, timeout, fresh=False):
    """One attempt: continue `partial` from its current size (or, `fresh`, start it over once
    the server answers) until the server's end."""
    have = 0 if fresh else _size(partial)
    headers = {}
    if have:
        headers["Range"] = f"bytes={have}-"
        record = _recorded_source(partial)
        if record.get("validator") and record.get("url") == url:  # (a mirror's ETag is another server's)
            headers["If-Range"] = record["validator"]  # the rest of the same version, or a changed file whole
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # nothing left to send: the partial file is already whole
            return
        reason = str(error.reason)
        if 300 <= error.code < 400 and "redirect" in reason.lower():  # urllib's three lines on a loop of redirects
            raise WeightsError(f"{url}: the server redirects without end ({error.code} {reason.splitlines()[-1]} "
                               "again and again)") from None
        raise WeightsError(f"{url}: server answered {error.code} {' '.join(reason.split())}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", None) or error
        if isinstance(reason, socket.gaierror):  # "[Errno -2] Name or service not known"
            reason = f"cannot find the server {urllib.parse.urlsplit(url).hostname} (no network, or no DNS here?)"
        elif isinstance(reason, ConnectionRefusedError):  # "[Errno 111] Connection refused"
            reason = f"the server {urllib.parse.urlsplit(url).netloc} refused the connection (is it running?)"
        if have:  # it answered before; a later attempt may get through
            raise _Interrupted(f"download failed: {reason}") from None
        raise WeightsError(f"{url}: download failed: {reason}") from None
    with response:
        start, total = _resume_point(response, have)
        if start:
            log.info("%s: continuing at %s of %s bytes", url, f"{start:,}", f"{total:,}" if total else "an unknown number of")
        if have and start == 0:  # 200 to a Range request: the server gave the whole file
            log.warning("%s: the server sent the file from its start (it does not resume downloads, or the file has "
                        "changed): the %s bytes downloaded before are replaced", url, f"{have:,}")
        if start == 0:  # a new beginning: what it is the beginning of, before any byte
            record = dict(url=url, validator=_validator(response), pinned=_pinned(expected))
            write_text(_source_path(partial), json.dumps(record), WeightsError)
        _stream(response, partial, start, total, progress)


def _resume_point(response, have):
    """(offset to write at, total size or None) from the response: 206 continues, 200 starts over."""
    if response.status == 206:
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", "").strip())
        if match and int(match.group(1)) == have:
            total = match.group(3)
            return have, int(total) if total != "*" else None
        raise _Interrupted(f"server sent an unexpected range ({response.headers.get('Content-Range')})")
    length = response.headers.get("Content-Length")
    return 0, int(length) if length and length.isdigit() else None


def _stream(response, partial, start, total, progress):
    bar = progress_bar(total, progress, unit="B", unit_scale=True, unit_divisor=1024, desc="download", initial=start)
    received = start
    with bar, open(partial, "r+b" if start else "wb") as handle:
        handle.seek(start)
        handle.truncate()
        try:
            while chunk := response.read1(CHUNK):  # what has come, at once: read() waited for a whole chunk,
                # and a stalled server's last bytes before the timeout were lost with it
                handle.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as error:  # reset, timeout, IncompleteRead
            raise _Interrupted(f"connection lost after {received:,} bytes ({error})") from None
        handle.flush()
        os.fsync(handle.fileno())
    if total is not None and received != total:
        raise _Interrupted(f"connection closed after {received:,} of {total:,} bytes")


def _verify_or_discard(partial, url, expected):
    """Check the hashes given ({algorithm: hex or None}), then the structure; a file that fails
    is deleted, not resumed; an interrupted check (Ctrl-C) keeps it for the next fetch."""
    try:
        for algorithm, digest in expected.items():
            if digest and (found := file_digest(partial, algorithm)) != digest.lower():
                raise ChecksumMismatch(f"{url}: {_LABELS[algorithm]} is {found}, expected {digest.lower()}"
                                       f"{_page_said(partial)}; download discarded", algorithm, found)
        try:
            weights_io.load(partial)  # structure and every shape, before it gets its real name
        except WeightsError as error:
            raise WeightsError(str(error).replace(str(partial), f"download from {url}") + "; download discarded") from None
    except Exception:
        partial.unlink(missing_ok=True)
        _source_path(partial).unlink(missing_ok=True)
        raise


_LABELS = {"sha256": "SHA-256", "sha1": "SHA-1"}


def _page_said(partial):
    """A page the server sent instead of the file (a login or error page) explains a hash
    mismatch better than the hash does."""
    with open(partial, "rb") as handle:
        head = handle.read(64).lstrip().lower()
    return ": the server sent an HTML/XML page, not the file" if head.startswith((b"<!doctype html", b"<html", b"<?xml")) \
        else ""


class ChecksumMismatch(WeightsError):
    """The download's hash is not the one expected (`algorithm`, the hash `found`)."""

    def __init__(self, message, algorithm, found):
        super().__init__(message)
        self.algorithm, self.found = algorithm, found


def file_digest(path, algorithm):
    """Hex digest of a file (`algorithm`: a hashlib name), read in chunks."""
    return file_digests(path, (algorithm,))[algorithm]


def file_digests(path, algorithms=("sha1", "sha256")):
    """{algorithm: hex digest} of a file, all from one read (a weights file is 233 MB, half a
    second to hash). Remembered for the process while the file's identity and times stay the
    same: a --resume checked the base weights' digest before TensorFlow started and again after."""
    status = os.stat(path)
    identity = (os.path.abspath(path), status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns,
                status.st_ctime_ns)
    known = _DIGESTS.get(identity, {})
    missing = [algorithm for algorithm in algorithms if algorithm not in known]
    if missing:
        digests = {algorithm: hashlib.new(algorithm) for algorithm in missing}
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                for digest in digests.values():
                    digest.update(chunk)
        known = {**known, **{algorithm: digest.hexdigest() for algorithm, digest in digests.items()}}
        if status.st_size >= REMEMBERED_FROM:
            _DIGESTS[identity] = known
    return {algorithm: known[algorithm] for algorithm in algorithms}


_DIGESTS = {}  # {(path, device, inode, size, mtime, ctime): {algorithm: hex digest}}
REMEMBERED_FROM = 2**24  # bytes: weights files, not the images the feature store hashes by the thousand


def file_sha256(path):
    """SHA-256 hex digest of a file, read in chunks."""
    return file_digest(path, "sha256")
