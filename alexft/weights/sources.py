"""Where the weights come from when no file is named.

Order: `$ALEXFT_WEIGHTS`, then `weights/bvlc_alexnet.{npz,npy,caffemodel}` under the working
directory, then the same names in the per-user cache. If none exists, the sources are tried in
turn (`SOURCES`, or the URLs `$ALEXFT_WEIGHTS_URL` names), each failure said in one line:
1. the BVLC model zoo's `bvlc_alexnet.caffemodel`, verified by the SHA-1 its readme publishes
   before anything in it is read;
2. the `bvlc_alexnet.npy` most TensorFlow ports use, which has no published checksum: its
   SHA-256 is recorded at the first download and later downloads must match it (trust on
   first use, said when it happens).
The download is converted once to `.npz` in the cache (checked by reading it back), which the
lookup finds first from then on. `known_files.json` in the cache remembers the hashes of what
was downloaded and converted, so `alexft weights info` can say where a file came from.
"""
import datetime
import json
import logging
import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..atomic import check_writable, write_text
from ..errors import AlexftError, WeightsError
from ..urls import as_sent
from . import formats as weights_io
from .files import NOT_REGULAR, missing_weights_said
from .download import ChecksumMismatch, download_weights, file_digests, file_sha256
from .tools import convert

log = logging.getLogger("alexft")

CANONICAL_NAME = "bvlc_alexnet.npy"  # the name users hold the weights under


@dataclass(frozen=True)
class Source:
    """A URL to download weights from and, when its publisher gives one, the file's hash."""

    url: str
    sha1: Optional[str] = None
    sha256: Optional[str] = None
    about: str = ""

    @property
    def name(self):
        return Path(urllib.parse.unquote(urllib.parse.urlparse(self.url).path)).name or CANONICAL_NAME  # (my%20w.npz: "my w.npz")

    @property
    def cache_name(self):
        """The name the download gets in the cache: one the lookup finds (LOOKED_FOR)."""
        suffix = Path(self.name).suffix.lower()
        return f"bvlc_alexnet{suffix if suffix in ('.npz', '.caffemodel') else '.npy'}"

    @property
    def pinned(self):
        return bool(self.sha1 or self.sha256)


ZOO_CAFFEMODEL = Source(
    "http://dl.caffe.berkeleyvision.org/bvlc_alexnet.caffemodel", sha1="9116a64c0fbe4459d18f4bb6b56d647b63920377",
    about="the BVLC model zoo's bvlc_alexnet.caffemodel (SHA-1 from the model's readme, also pinned by OpenCV's "
          "and MXNet's download scripts)")
GUERZHOY_NPY = Source(
    "http://www.cs.toronto.edu/~guerzhoy/tf_alexnet/bvlc_alexnet.npy",
    about="bvlc_alexnet.npy as converted with caffe-tensorflow by Michael Guerzhoy (no published checksum)")
SOURCES = (ZOO_CAFFEMODEL, GUERZHOY_NPY)
KNOWN_FILES = "known_files.json"


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


def found_locally():
    """The file `resolve_weights()` takes without a download, or None (also when $ALEXFT_WEIGHTS
    names a file that is not there: the commands then refuse, whatever else is found)."""
    env = os.environ.get("ALEXFT_WEIGHTS")
    if env and not Path(env).expanduser().is_file():
        return None
    return next((path for _, path in candidates() if path.is_file()), None)


def _inside(folder):
    """What a folder given as weights may be: a run (its model.npz) or a SavedModel export."""
    if (folder / "model.npz").is_file():
        return f"; a run's model is {folder / 'model.npz'}"
    if (folder / "saved_model.pb").is_file():
        return "; it is a SavedModel export: give the .npz it was exported from"
    return ""


def check_weights_argument(weights):
    """A Python caller's `weights`: a path (str or os.PathLike) or a WeightSet; a Keras model, the
    likeliest other thing, is told how to become one."""
    if not isinstance(weights, (str, os.PathLike, weights_io.WeightSet)):
        raise TypeError(f"weights: expected the path of a weights file or a WeightSet (alexft.load_weights), not "
                        f"{type(weights).__name__}" + (" (a Keras model: alexft.weights_from_model(model) gives its "
                                                       "WeightSet)" if hasattr(weights, "get_layer") else ""))
    if isinstance(weights, str) and not weights.strip():  # ("" was read as the current folder)
        raise WeightsError(f"weights: an empty path {weights!r}; give a weights file, or leave it out for the default ones")
    said = isinstance(weights, str) and _url_said(weights)
    if said:
        raise WeightsError(f"{weights}: {said}")


def _url_said(text):
    """Why a URL given where a weights file goes is not read ('' for no URL): as a path it lost a
    slash, and was said to be "http:/host/w.npy: weights file not found"."""
    scheme = re.match(r"([a-zA-Z][\w+.-]*)://", text)
    if not scheme or os.path.exists(text):
        return ""
    scheme = scheme.group(1).lower()
    if scheme in ("http", "https"):
        return ("a URL, and weights are read from a file: download it first (alexft weights fetch --url URL on the "
                "command line, alexft.fetch_weights(url=URL) in Python), then give the file's path")
    if scheme == "file":
        return f"a file URL: give the file's path itself ({urllib.parse.unquote(urllib.parse.urlsplit(text).path)})"
    return f"weights are read from a file, not from a URL ({scheme}://): copy it to this machine, then give its path"


def _not_a_weights_file(path):
    """Why `path`, no folder, is not a file to read: missing, a broken link, or a named pipe or
    device (the readers had waited on a pipe for ever)."""
    return missing_weights_said(path) if not path.exists() else NOT_REGULAR


def names_the_defaults(weights):
    """Whether `weights` is "imagenet", in any case, as Keras' applications take it (`--weights
    imagenet` too): the default weights, found or downloaded; unless a file has that name."""
    return isinstance(weights, (str, os.PathLike)) and os.fspath(weights).lower() == "imagenet" \
        and not os.path.isfile(weights)


def resolve_weights(path=None, download=True, progress=None):
    """Return the weights file to use: `path` if given, else the first existing candidate,
    else the first source that downloads and verifies, converted once into the cache (when
    `download` is true). "imagenet" names those defaults (`names_the_defaults`)."""
    if names_the_defaults(path):
        path = None
    if path is not None:
        check_weights_argument(path)
        path = Path(path).expanduser()
        if path.is_dir():
            raise WeightsError(f"{path}: is a folder, not a weights file" + _inside(path))
        if not path.is_file():
            raise WeightsError(f"{path}: {_not_a_weights_file(path)}")
        weights_io.quick_check(path)  # a broken file is said now, not after TensorFlow's start-up
        return path
    env = os.environ.get("ALEXFT_WEIGHTS")
    if env and not Path(env).expanduser().is_file():
        named = Path(env).expanduser()
        said = "is a folder, not a weights file" if named.is_dir() else _url_said(env) or _not_a_weights_file(named)
        raise WeightsError(f"{env}: {said} (named by $ALEXFT_WEIGHTS)")
    found = found_locally()
    if found is not None:
        return found
    if not download:
        raise WeightsError(_where_to_put_it())
    tried = sources()
    failures = []
    for number, source in enumerate(tried, 1):
        target = cache_dir() / source.cache_name
        start = "no weights file found; downloading" if number == 1 else f"trying source {number} of {len(tried)}:"
        log.warning("%s %s to %s (%s)", start, source.url, target, _trust(source))
        try:
            downloaded = _download(source, target, progress)
        except WeightsError as error:
            failures.append(str(error))
            if len(tried) > 1:
                log.warning("source %d failed: %s", number, error)
            continue
        return _converted_once(downloaded, source)
    raise WeightsError(f"{_failed(failures)}. {_where_to_put_it()}")


def _failed(failures):
    return failures[0] if len(failures) == 1 else f"all {len(failures)} sources failed (each said above)"


def sources():
    """The sources to try, in order: the URLs $ALEXFT_WEIGHTS_URL names (separated by spaces or
    commas), else SOURCES. A URL may carry its hash as `#sha1=HEX` or `#sha256=HEX`; a URL of a
    known source gets that source's hash; $ALEXFT_WEIGHTS_SHA256 pins a single URL's."""
    named = (os.environ.get("ALEXFT_WEIGHTS_URL") or "").replace(",", " ").split()
    if not named:
        return SOURCES
    parsed = [parse_source(text) for text in named]
    sha256 = os.environ.get("ALEXFT_WEIGHTS_SHA256")
    if sha256 is not None:  # a pin never dropped unsaid: it was, for a list of URLs, and a file trusted on first use
        if len(parsed) > 1:
            raise WeightsError(f"$ALEXFT_WEIGHTS_SHA256 pins one URL's file, and $ALEXFT_WEIGHTS_URL names {len(parsed)}: "
                               "give each its own as URL#sha256=HEX")
        if not parsed[0].pinned:
            parsed[0] = Source(parsed[0].url, sha256=checked_hex(sha256, "sha256"), about=parsed[0].about)
    return tuple(parsed)


def parse_source(text):
    """A Source from `URL` or `URL#sha1=HEX` / `URL#sha256=HEX`."""
    url, _, fragment = text.partition("#")
    hashes = dict(part.split("=", 1) for part in fragment.split("&") if "=" in part)
    unknown = set(hashes) - {"sha1", "sha256"}
    if unknown:
        raise WeightsError(f"{text}: unknown hash {', '.join(sorted(unknown))} (use #sha1=HEX or #sha256=HEX)")
    if urllib.parse.urlsplit(url).scheme not in ("http", "https") or not urllib.parse.urlsplit(url).netloc:
        raise WeightsError(f"{url}: not an http:// or https:// URL (a file already here is given with --weights PATH)")
    try:
        url = as_sent(url)  # (a space in a pasted URL: http.client would raise mid-download)
    except ValueError as error:
        raise WeightsError(f"{url}: not a valid URL ({error})") from None
    known = next((source for source in SOURCES if source.url == url), None)
    if not hashes and known:
        return known
    return Source(url, sha1=checked_hex(hashes.get("sha1"), "sha1"), sha256=checked_hex(hashes.get("sha256"), "sha256"), about=url)


HEX_DIGITS = {"sha1": 40, "sha256": 64}


def checked_hex(value, kind):
    """A hash as given, checked before any download: hexadecimal, of the hash's length. None: none
    given; an empty one is refused (`--sha256 "$SHA256"` with the variable unset trusted any file)."""
    if value is None:
        return None
    if not value.strip():
        raise WeightsError(f"an empty {kind.upper().replace('SHA', 'SHA-')} (an unset variable?): give its "
                           f"{HEX_DIGITS[kind]} hexadecimal digits, or none at all")
    if not re.fullmatch(f"[0-9a-fA-F]{{{HEX_DIGITS[kind]}}}", value):
        raise WeightsError(f"{value!r} is not a {kind.upper().replace('SHA', 'SHA-')}: expected {HEX_DIGITS[kind]} "
                           "hexadecimal digits")
    return value.lower()


def _trust(source):
    if source.sha1:
        return f"checked against SHA-1 {source.sha1}"
    if source.sha256:
        return f"checked against SHA-256 {source.sha256}"
    return "no published checksum: trusted on first use"


def _download(source, target, progress):
    """Download one source, checking its published hash, or the one recorded at its first download."""
    recorded = None if source.pinned else _recorded_sha256(source.url)
    try:
        downloaded = download_weights(source.url, target, sha256=source.sha256 or recorded, sha1=source.sha1,
                                      progress=progress)
    except ChecksumMismatch as mismatch:
        if recorded is None:
            raise
        raise WeightsError(f"{mismatch}. The expected hash was recorded at the first download from this URL (in "
                           f"{cache_dir() / KNOWN_FILES}): the file at {source.url} has changed since. If the change "
                           "is expected (a new version), check the new hash with whoever publishes the file and "
                           f"accept it: alexft weights fetch --url {source.url} --sha256 {mismatch.found}"
                           + ("" if target == cache_dir() / source.name else f" --output {target}")) from None
    digest = file_sha256(downloaded)
    if not source.pinned and recorded is None:
        log.warning("%s has no published checksum; its SHA-256 %s is now recorded in %s, and later downloads must "
                    "match it (trust on first use)", source.url, digest, cache_dir() / KNOWN_FILES)
    _remember(digest, dict(what=f"downloaded from {source.url}", url=source.url, verified=_trust(source)))
    return downloaded


def _converted_once(downloaded, source=None):
    """The downloaded file as `.npz` beside it (written once, checked by reading it back), which
    the lookup finds first from then on; the download itself is kept as it came."""
    converted = downloaded.with_suffix(".npz")
    if converted == downloaded:
        return downloaded  # already the fast format
    try:
        written = convert(downloaded, converted, force=True).params  # a stale copy of an earlier download
        if not _same_arrays(weights_io.load(converted).params, written):
            raise WeightsError("the file read back differs from the download")
    except (WeightsError, OSError) as error:  # a full disk, say: the download is still good
        log.warning("could not convert %s to %s (%s); using the download as it is", downloaded, converted, error)
        converted.unlink(missing_ok=True)
        return downloaded
    origin = source.url if source else str(downloaded)
    _remember(file_sha256(converted), dict(what=f"converted by alexft from {downloaded.name} ({origin})", url=origin,
                                           verified=_trust(source) if source else "unknown"))
    log.warning("converted %s to %s: later runs load that", downloaded, converted)
    return converted


def remember_conversion(source, converted):
    """Record a file `alexft weights convert` wrote, so that `weights info` can tell where it came
    from: converted here, from a source that is itself identified (a published file) or not.
    A conversion that wrote the source's own bytes (an .npz converted again) records nothing:
    the record is by hash, and `weights info` would say the source was converted from itself."""
    digests = file_digests(source)
    converted_sha256 = file_sha256(converted)
    if converted_sha256 == digests["sha256"]:
        return
    origin = identify(source, digests)
    _remember(converted_sha256, dict(what=f"converted by alexft from {Path(source).name}",
                                           url=str(Path(source).resolve()),
                                           verified=f"source: {origin}" if origin else "source unknown"))


def identify(path, digests=None):
    """Where the file at `path` came from, by its hashes: a pinned source, a file this machine
    downloaded or converted (known_files.json), or None. `digests`: its {"sha1", "sha256"}
    when already computed (`file_digests`), so the file is not read again."""
    digests = digests or file_digests(path)
    sha1, sha256 = digests["sha1"], digests["sha256"]
    for source in SOURCES:
        if (source.sha1 and source.sha1 == sha1) or (source.sha256 and source.sha256 == sha256):
            return f"{source.about}: hash verified"
    known = _known_files().get(sha256)
    if known:
        return f"{known['what']}, {known['when']} ({known['verified']})"
    return None


def _known_files():
    try:
        return json.loads((cache_dir() / KNOWN_FILES).read_text())
    except (OSError, ValueError):
        return {}


def _recorded_sha256(url):
    return next((digest for digest, record in _known_files().items() if url in _download_urls(record)), None)


def _download_urls(record):
    """Every URL a file was downloaded from: the same bytes from a mirror must not drop the
    first URL's record, or that URL would be trusted afresh."""
    if not record.get("what", "").startswith("downloaded"):
        return []
    urls = record.get("urls")
    return list(urls) if isinstance(urls, list) else [record.get("url")]


def _remember(sha256, record):
    known = _known_files()
    earlier = known.get(sha256, {})
    if earlier and not record["what"].startswith("downloaded"):
        # Bytes known already (an .npz converted to the same bytes, say): what is known of their
        # origin stays, above all the URLs trusted on first use, which a new record would drop.
        return
    if _checked(earlier) and not _checked(record):  # the same bytes, checked before: that stays true
        record = dict(record, verified=earlier["verified"])
    if record["what"].startswith("downloaded"):
        urls = _download_urls(known.get(sha256, {})) + [record["url"]]
        record = dict(record, urls=list(dict.fromkeys(urls)))
        for digest, other in known.items():  # the URL serves these bytes now (a new version, vouched for)
            if digest != sha256 and record["url"] in _download_urls(other):
                known[digest] = dict(other, urls=[url for url in _download_urls(other) if url != record["url"]])
    known[sha256] = dict(record, when=datetime.date.today().isoformat())
    try:
        cache_dir().mkdir(parents=True, exist_ok=True)
        write_text(cache_dir() / KNOWN_FILES, json.dumps(known, indent=1))
    except (OSError, AlexftError) as error:  # a read-only or full cache: the weights are still good
        log.warning("could not record the hash in %s (%s)", cache_dir() / KNOWN_FILES, error)


def _checked(record):
    return str(record.get("verified", "")).startswith("checked against")


def fetch_weights(url=None, sha256=None, output=None, force=False, progress=None, sha1=None):
    """`alexft weights fetch`: download `url` (default: the first of `sources()` that works) to
    `output` (default: the cache, under the URL's file name), resuming a partial download.

    `sha256`/`sha1` default to the source's published hash ($ALEXFT_WEIGHTS_SHA256 for a single
    $ALEXFT_WEIGHTS_URL). An `output` already present is verified and kept unless `force`.
    Without `url`, `output` and `force`, a file where the commands look (`candidates`) is
    returned as it is. Returns (path, downloaded: bool).
    """
    if url:
        source = parse_source(url)
        if sha256 is not None or sha1 is not None:
            source = Source(source.url, sha1=checked_hex(sha1, "sha1"), sha256=checked_hex(sha256, "sha256"), about=source.about)
        chosen = [source]
    else:
        chosen = list(sources())
        if sha256 is not None or sha1 is not None:
            chosen = [Source(chosen[0].url, sha1=checked_hex(sha1, "sha1"), sha256=checked_hex(sha256, "sha256"), about=chosen[0].about)]
    if output is not None:
        check_fetch_output(output)
    elif not (url or force):  # the defaults: a file the commands find already is what fetching would give them
        present = found_locally()
        if present is not None:
            return present, False
    failures = []
    for source in chosen:
        target = Path(output).expanduser() if output else cache_dir() / source.name
        if target.is_dir():  # a folder to put it in, under the URL's name, as `wget -P` takes one
            target = target / source.name
        _check_the_endings_agree(target, source)
        if target.is_file() and not force:
            _check_present(target, source)
            return target, False
        if target.is_file() and target.stat().st_size:
            _refuse_unless_weights(target)
        check_writable(target, WeightsError)  # a file where its folder should be: said before the download
        try:
            return _download(source, target, progress), True
        except WeightsError as error:
            failures.append(str(error))
            if len(chosen) > 1:
                log.warning("%s", error)
    raise WeightsError(_failed(failures) + ("" if url else f". {_where_to_put_it()}"))


FETCHED_SUFFIXES = (".caffemodel", ".npy", ".npz")


def _check_the_endings_agree(target, source):
    """A download keeps its format, which a file's ending names (a Caffe model has no other mark):
    `-o w.npz` of a .caffemodel URL wrote one that no command could read, after saying it was fetched."""
    named, given = target.suffix.lower(), Path(source.name).suffix.lower()
    if named != given and given in FETCHED_SUFFIXES:
        raise WeightsError(f"{target}: {source.url} is a {given} file, and a download keeps its format: name it "
                           f"{target.with_suffix(given)}" + ("" if given == ".npz" else
                                                             ", then alexft weights convert makes an .npz of it"))


def check_fetch_output(output):
    """A download goes only to a name of a weights file (or into a folder): `-o photo.jpg --force`
    replaced a photo with 233 MB of weights."""
    path = Path(output).expanduser()
    if not path.is_dir() and path.suffix.lower() not in FETCHED_SUFFIXES:
        if not path.suffix and not path.exists():  # `-o dl/`, meant as a folder that is not there yet
            raise WeightsError(f"{output}: no such folder to download into (make it first: mkdir -p {output}), and not "
                               "a weights file's name (.caffemodel, .npy or .npz)")
        raise WeightsError(f"{output}: a downloaded weights file is named .caffemodel, .npy or .npz (as the URL's "
                           "file); choose such a name")


def _refuse_unless_weights(target):
    """--force replaces an earlier download, never another kind of file that has a weights name."""
    try:
        weights_io.read_format(target)
    except WeightsError:
        raise WeightsError(f"{target}: exists and is not a weights file, so --force does not replace it; remove it "
                           "first if it should go") from None


def _check_present(target, source):
    """A file already at the target is kept only if it is the source's file: checked against the
    published hash, else the one recorded at the URL's first download; with neither, any
    readable weights file is kept, and the log says it could not be checked."""
    recorded = None if source.pinned else _recorded_sha256(source.url)
    if source.pinned or recorded:
        digests = file_digests(target)
        if source.sha1 and digests["sha1"] != source.sha1:
            _refuse_present(target, "SHA-1", digests["sha1"], source.sha1)
        expected = source.sha256 or recorded
        if expected and digests["sha256"] != expected:
            _refuse_present(target, "SHA-256", digests["sha256"], expected + ("" if source.sha256 else f", recorded for {source.url}"))
        log.info("%s: its hash matches %s", target,  # pinned: --sha256/--sha1, URL#sha1= or the source's published one
                 f"the one expected of {source.url}" if source.pinned else f"the one recorded for {source.url}")
    else:
        log.warning("%s: kept as it is, not checked against %s: no published hash, and none recorded by an earlier "
                    "download (--force downloads it)", target, source.url)
    weights_io.load(target)


def _refuse_present(target, kind, actual, expected):
    raise WeightsError(f"{target}: already exists with a different {kind}: {actual}, not {expected}; "
                       "if the file is the wrong one, pass --force to download it again")


def _same_arrays(params, expected):
    import numpy as np

    return params.keys() == expected.keys() and all(
        all(np.array_equal(a, b) for a, b in zip(params[name], expected[name])) for name in params)


def _where_to_put_it():
    names = ", ".join(LOOKED_FOR)
    return (f"Put one of {names} in {Path.cwd() / 'weights'} (weights/ under the current folder) or in "
            f"{cache_dir()}, or give its path (--weights PATH on the command line, weights=PATH in Python) or set "
            f"ALEXFT_WEIGHTS (to download by hand: {', '.join(source.url for source in sources())})")
