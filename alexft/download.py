"""Download a weights file safely: temporary file in the target folder, verify, then rename.

A partial or corrupted download is never left where it could be taken for a complete file.
"""
import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path


from . import weights as weights_io
from .errors import WeightsError
from .progress import progress_bar

CHUNK = 1 << 20


def download_weights(url, destination, sha256=None, progress=None, timeout=30):
    """Fetch `url` to `destination`, check it is a valid AlexNet weights file, then move it into place.

    `sha256`, when given, must match the file's hash. `progress=None` shows a bar only on a terminal.
    Returns the destination path; raises WeightsError with the reason otherwise.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.part-{os.getpid()}")
    try:
        digest = _fetch(url, temporary, progress, timeout)
        if sha256 and digest != sha256.lower():
            raise WeightsError(f"{url}: SHA-256 is {digest}, expected {sha256.lower()}; download discarded")
        weights_io.load(temporary)  # structure and every shape, before it gets its real name
        os.replace(temporary, destination)
    except WeightsError as error:
        raise WeightsError(str(error).replace(str(temporary), f"download from {url}")) from None
    finally:
        temporary.unlink(missing_ok=True)
    return destination


def _fetch(url, target, progress, timeout):
    """Stream `url` into `target`; return its SHA-256 hex digest."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(target, "wb") as handle:
            total = _content_length(response)
            bar = progress_bar(total, progress, unit="B", unit_scale=True, unit_divisor=1024, desc="download")
            with bar:
                received = 0
                while chunk := response.read(CHUNK):
                    handle.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            if total is not None and received != total:
                raise WeightsError(f"{url}: connection closed after {received:,} of {total:,} bytes")
            handle.flush()
            os.fsync(handle.fileno())
    except urllib.error.HTTPError as error:
        raise WeightsError(f"{url}: server answered {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", None) or error
        raise WeightsError(f"{url}: download failed: {reason}") from None
    return digest.hexdigest()


def _content_length(response):
    value = response.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None
