"""The frozen layers' features of every image a fine-tuning run cached, kept across runs.

Computing ten views per image through the frozen part is most of a short run's time; a second
run on the same images (another rate, more epochs, a resumed or interrupted run) reads them
back instead. An entry is one image's (10, ...) float32 array, named by the SHA-256 of the
image file's bytes (so a moved or copied folder still finds it), in a folder named by all else
the values depend on: the frozen layers' weights, the layer, the preprocessing and the library
versions. An entry is trusted only to be a float32 array of the right shape, read without
pickle; anything else counts as missing and is computed again.

The store is `$ALEXFT_FEATURE_STORE`, else `features` in alexft's cache folder ("off": no
store), and holds at most `$ALEXFT_FEATURE_STORE_GB` (default 10) gigabytes: the least
recently used entries go first.
"""
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .errors import AlexftError
from .weights.sources import cache_dir

# Bump when an entry's values change without a version below changing (views, preprocessing).
FORMAT = 1
DEFAULT_LIMIT_GB = 10.0
OFF = ("off", "0", "no", "false", "none")


class StoreSettingError(AlexftError, ValueError):
    """$ALEXFT_FEATURE_STORE_GB is not a number of gigabytes."""


def store_folder():
    """The store's folder, or None when $ALEXFT_FEATURE_STORE turns it off."""
    setting = os.environ.get("ALEXFT_FEATURE_STORE", "").strip()
    if setting.lower() in OFF and setting:
        return None
    return Path(setting).expanduser() if setting else cache_dir() / "features"


def limit_bytes():
    setting = os.environ.get("ALEXFT_FEATURE_STORE_GB", "").strip()
    try:
        limit = float(setting) if setting else DEFAULT_LIMIT_GB
    except ValueError:
        limit = -1.0
    if not limit >= 0:  # also NaN
        raise StoreSettingError(f"ALEXFT_FEATURE_STORE_GB={setting!r}: expected a number of gigabytes (0 or more)")
    return int(limit * 1e9)


def prefix_identity(prefix, layer):
    """A digest of everything a stored feature depends on but the image: the frozen layers'
    weights (their values, in order), the layer and the preprocessing."""
    import cv2
    import tensorflow as tf

    from . import __version__, preprocess

    facts = dict(format=FORMAT, layer=layer, alexft=__version__, tensorflow=tf.__version__, opencv=cv2.__version__,
                 resize=preprocess.RESIZE, crop=preprocess.CROP, offsets=preprocess.TEN_CROP_OFFSETS,
                 mean=preprocess.MEAN_BGR.tolist())
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode())
    for weight in prefix.weights:
        value = np.ascontiguousarray(weight.numpy())
        digest.update(f"{value.dtype.str}{value.shape}".encode())
        digest.update(memoryview(value).cast("B"))
    return digest.hexdigest()


class FileKey(NamedTuple):
    """An image file's entry name (the SHA-256 of its bytes) and its size and modification
    time when it was read, to tell whether it changed before its features were computed."""
    digest: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path):
        """The file's key, or None when it cannot be read (the decoder then says why)."""
        try:
            with open(path, "rb") as handle:
                stat = os.fstat(handle.fileno())
                if hasattr(hashlib, "file_digest"):  # Python 3.11+
                    digest = hashlib.file_digest(handle, "sha256").hexdigest()
                else:
                    digest = hashlib.sha256(handle.read()).hexdigest()
        except (OSError, TypeError):  # TypeError: an image source that is not a file
            return None
        return cls(digest, stat.st_size, stat.st_mtime_ns)

    def still_describes(self, path):
        try:
            stat = os.stat(path)
        except OSError:
            return False
        return (stat.st_size, stat.st_mtime_ns) == (self.size, self.mtime_ns)


class FeatureStore:
    """Entries of one prefix (a folder named by `prefix_identity`) of shape `shape`.

    Writing never fails a run: the first failure (disk full, no permission) is said once and
    the store is then only read. Counts of what was read and written are kept for the log.
    """

    def __init__(self, root, identity, shape, limit, say=None):
        self.root, self.folder, self.shape, self.limit = Path(root), Path(root) / identity[:32], tuple(shape), limit
        self.say = say or (lambda message: None)
        self.entry_bytes = int(np.prod(self.shape)) * 4 + 128  # the .npy header
        self.read = self.written = 0
        self.writable = True

    @classmethod
    def for_prefix(cls, prefix, layer, say=None):
        """The store for `prefix`'s features, or None when it is turned off."""
        root = store_folder()
        if root is None:
            return None
        shape = (10,) + tuple(prefix.output.shape[1:])
        return cls(root, prefix_identity(prefix, layer), shape, limit_bytes(), say)

    def _path(self, digest):
        return self.folder / digest[:2] / f"{digest}.npy"

    def load(self, key):
        """The stored features of the file `key` describes, or None. A used entry is marked as used."""
        path = self._path(key.digest)
        try:
            with open(path, "rb") as handle:
                value = np.load(handle, allow_pickle=False)
        except (OSError, ValueError, EOFError):  # missing, or damaged: computed again, and replaced
            return None
        if value.dtype != np.float32 or value.shape != self.shape:
            return None
        try:
            os.utime(path)  # recently used: the last to be trimmed
        except OSError:  # a store shared read-only
            pass
        self.read += 1
        return value

    def fits(self, count):
        """Whether `count` entries fit within the limit at all; said once when not."""
        need = count * self.entry_bytes
        if need > self.limit and self.writable:
            self.writable = False
            self.say(f"feature store: these features need {_size(need)}, over its limit of {_size(self.limit)} "
                     "($ALEXFT_FEATURE_STORE_GB); they are not kept for the next run")
        return self.writable

    def save(self, key, value, image_path):
        """Keep `value` as the features of the file `key` describes, unless the file was
        changed since it was hashed (its features may be the new content's)."""
        if not self.writable or not key.still_describes(image_path):
            return
        path = self._path(key.digest)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".", suffix=".tmp", delete=False) as handle:
                try:
                    np.save(handle, np.asarray(value, np.float32), allow_pickle=False)
                    handle.flush()
                except BaseException:
                    os.unlink(handle.name)
                    raise
            os.replace(handle.name, path)
            self.written += 1
        except OSError as error:
            self.writable = False
            self.say(f"feature store: cannot write to {self.root} ({error.strerror or error}); "
                     "this run goes on without keeping its features")

    def trim(self, keep=()):
        """Remove the least recently used entries, never those in `keep` (FileKeys), until the
        store is within its limit. Entries of other prefixes count and go too."""
        entries, day_ago = [], time.time() - 86400
        for path in self.root.glob("*/*/.*.tmp"):  # left by a run killed while writing
            try:
                if path.stat().st_mtime < day_ago:
                    path.unlink()
            except OSError:
                pass
        for path in self.root.glob("*/*/*.npy"):
            try:
                stat = path.stat()
            except OSError:  # removed meanwhile by another run's trim
                continue
            entries.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in entries)
        keep = {f"{key.digest}.npy" for key in keep if key}
        for _, size, path in sorted(entries):
            if total <= self.limit:
                break
            if path.name in keep and path.parent.parent == self.folder:
                continue
            try:
                path.unlink()
                total -= size
            except OSError:
                pass
        return total


def _size(count):
    return f"{count / 1e9:.1f} GB" if count >= 1e8 else f"{count / 1e6:.1f} MB"
