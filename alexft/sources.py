"""Where the weights come from when no file is named.

Order: `$ALEXFT_WEIGHTS`, then `weights/bvlc_alexnet.{npz,npy,caffemodel}` under the working
directory, then the same names in the per-user cache; if none exists, the canonical file is
downloaded into the cache and converted once to `.npz` (which loads 6-12x faster than the
pickle), and that is what later runs find.
"""
import logging
import os
import urllib.parse
from pathlib import Path

from . import weights as weights_io
from .download import download_weights, file_sha256
from .errors import WeightsError

log = logging.getLogger("alexft")

CANONICAL_NAME = "bvlc_alexnet.npy"
# Published by Michael Guerzhoy (converted from BVLC's Caffe model with caffe-tensorflow).
CANONICAL_URL = "http://www.cs.toronto.edu/~guerzhoy/tf_alexnet/bvlc_alexnet.npy"
# No checksum is published by the file's author; set ALEXFT_WEIGHTS_SHA256 to pin one.
CANONICAL_SHA256 = None


def cache_dir():
    """`$ALEXFT_CACHE`, else `$XDG_CACHE_HOME/alexft`, else `~/.cache/alexft`."""
    if os.environ.get("ALEXFT_CACHE"):
        return Path(os.environ["ALEXFT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "alexft"


# The names looked for in each folder, the fastest to load first.
LOOKED_FOR = tuple(f"bvlc_alexnet{suffix}" for suffix in (".npz", ".npy", ".caffemodel"))


def candidates():
    """The places looked at, in order, as (description, path)."""
    places = []
    if os.environ.get("ALEXFT_WEIGHTS"):
        places.append(("$ALEXFT_WEIGHTS", Path(os.environ["ALEXFT_WEIGHTS"]).expanduser()))
    places += [("the working tree", Path("weights") / name) for name in LOOKED_FOR]
    places += [("the cache", cache_dir() / name) for name in LOOKED_FOR]
    return places


def resolve_weights(path=None, download=True, progress=None):
    """Return the weights file to use: `path` if given, else the first existing candidate,
    else the canonical file downloaded into the cache (when `download` is true)."""
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise WeightsError(f"{path}: weights file not found")
        return path
    env = os.environ.get("ALEXFT_WEIGHTS")
    if env and not Path(env).expanduser().is_file():
        raise WeightsError(f"{env}: weights file not found (named by $ALEXFT_WEIGHTS)")
    for _, candidate in candidates():
        if candidate.is_file():
            return candidate
    target = cache_dir() / CANONICAL_NAME
    if not download:
        raise WeightsError(_where_to_put_it(target))
    url = os.environ.get("ALEXFT_WEIGHTS_URL") or CANONICAL_URL
    log.warning("no weights file found; downloading %s to %s", url, target)
    try:
        downloaded = download_weights(url, target, sha256=os.environ.get("ALEXFT_WEIGHTS_SHA256") or CANONICAL_SHA256,
                                      progress=progress)
    except WeightsError as error:
        raise WeightsError(f"{error}. {_where_to_put_it(target)}") from None
    return _converted_once(downloaded)


def _converted_once(downloaded):
    """The downloaded file as `.npz` beside it (written once, checked by reading it back), which
    the lookup finds first from then on; the download itself is kept as it came."""
    from .weights_tools import convert

    converted = downloaded.with_suffix(".npz")
    try:
        written = convert(downloaded, converted).params
        if not _same_arrays(weights_io.load(converted).params, written):
            raise WeightsError("the file read back differs from the download")
    except (WeightsError, OSError) as error:  # a full disk, say: the download is still good
        log.warning("could not convert %s to %s (%s); using the download as it is", downloaded, converted, error)
        converted.unlink(missing_ok=True)
        return downloaded
    log.warning("converted %s to %s: later runs load that", downloaded, converted)
    return converted


def fetch_weights(url=None, sha256=None, output=None, force=False, progress=None):
    """`alexft weights fetch`: download `url` (default: $ALEXFT_WEIGHTS_URL, else the canonical
    file) to `output` (default: the cache, under the URL's file name), resuming a partial download.

    `sha256` defaults to $ALEXFT_WEIGHTS_SHA256. An `output` already present is verified and
    kept unless `force`. Returns (path, downloaded: bool).
    """
    url = url or os.environ.get("ALEXFT_WEIGHTS_URL") or CANONICAL_URL
    sha256 = (sha256 or os.environ.get("ALEXFT_WEIGHTS_SHA256") or CANONICAL_SHA256 or "").lower() or None
    name = Path(urllib.parse.urlparse(url).path).name or CANONICAL_NAME
    output = Path(output).expanduser() if output else cache_dir() / name
    if output.is_file() and not force:
        if sha256 and file_sha256(output) != sha256:
            raise WeightsError(f"{output}: already exists with a different SHA-256 than {sha256}; pass --force to download again")
        weights_io.load(output)
        return output, False
    return download_weights(url, output, sha256=sha256, progress=progress), True


def _same_arrays(params, expected):
    import numpy as np

    return params.keys() == expected.keys() and all(
        all(np.array_equal(a, b) for a, b in zip(params[name], expected[name])) for name in params)


def _where_to_put_it(target):
    return (
        f"Put {CANONICAL_NAME} at {target} or at weights/{CANONICAL_NAME} here, "
        f"or pass --weights PATH or set ALEXFT_WEIGHTS (file: {CANONICAL_URL})"
    )
