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
import re
import time
from pathlib import Path

import numpy as np

from .errors import AlexftError
from .weights.download import file_sha256
from .weights.sources import cache_dir

# Bump when what an entry holds changes in a way the identity below does not see.
FORMAT = 1
# The modules whose code decides the features' values: their source is part of the identity,
# so a changed preprocessing or layer never meets features computed before the change.
SOURCES = ("preprocess.py", "layers.py", "model.py", "architecture.py", "features.py")
# Only names the store writes are ever trimmed: $ALEXFT_FEATURE_STORE may be a folder of the user's.
ENTRY = re.compile(r"[0-9a-f]{32}/[0-9a-f]{2}/[0-9a-f]{64}\.npy")
LEFT_BEHIND = re.compile(r"[0-9a-f]{32}/[0-9a-f]{2}/\.[0-9a-f]{64}\.[^/]*\.tmp")
DEFAULT_LIMIT_GB = 10.0
OFF = ("off", "0", "no", "false", "none")


class StoreSettingError(AlexftError, ValueError):
    """$ALEXFT_FEATURE_STORE_GB is not a number of gigabytes."""


def store_folder():
    """The store's folder, or None when $ALEXFT_FEATURE_STORE turns it off."""
    setting = os.environ.get("ALEXFT_FEATURE_STORE", "").strip()
    if setting and setting.lower() in OFF:
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
    weights (their values, in order), the layer, the preprocessing and the code that computes
    them, and the versions of the libraries."""
    import cv2
    import tensorflow as tf

    from . import __version__, preprocess

    facts = dict(format=FORMAT, layer=layer, alexft=__version__, tensorflow=tf.__version__, opencv=cv2.__version__,
                 numpy=np.__version__, resize=preprocess.RESIZE, crop=preprocess.CROP,
                 offsets=preprocess.TEN_CROP_OFFSETS, mean=preprocess.MEAN_BGR.tolist())
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode())
    for name in SOURCES:
        digest.update((Path(__file__).parent / name).read_bytes())
    return add_weights(digest, prefix.weights).hexdigest()


def add_weights(digest, variables):
    """`digest` (a hashlib object) updated with the variables' values, dtypes and shapes, in order."""
    for weight in variables:
        value = np.ascontiguousarray(weight.numpy())
        digest.update(f"{value.dtype.str}{value.shape}".encode())
        digest.update(value.reshape(-1).view(np.uint8))  # the raw bytes, also of bfloat16 (no buffer format)
    return digest


def file_digest(path):
    """SHA-256 of a file's bytes, or None when it cannot be read (the decoder then says why)."""
    try:
        return file_sha256(path)
    except (OSError, TypeError):  # TypeError: an image source that is not a file
        return None


class FeatureStore:
    """Entries of one prefix (a folder named by `prefix_identity`) of shape `shape`.

    Writing never fails a run: the first failure (disk full, no permission) is said once and
    the store is then only read. The first entry written for an image stays: a run that
    computed the same image meanwhile uses the stored values, so two runs sharing a store
    always train on the same numbers. Called from one thread; `load` from any.
    """

    def __init__(self, root, identity, shape, limit, say=None):
        self.root, self.folder, self.shape, self.limit = Path(root), Path(root) / identity[:32], tuple(shape), limit
        self.say = say or (lambda message: None)
        self.entry_bytes = int(np.prod(self.shape)) * 4 + 128  # the .npy header
        self.read = self.written = 0
        self.taken = 0  # computed here, but another run stored them first: its values are used
        self.used = set()  # digests this run read or wrote: never trimmed by it
        self.writable = True
        umask = os.umask(0)
        os.umask(umask)
        self.mode = 0o666 & ~umask  # as any file the user creates, so a shared store is readable

    @classmethod
    def for_prefix(cls, prefix, layer, say=None):
        """The store for `prefix`'s features, or None when it is turned off."""
        root = store_folder()
        if root is None:
            return None
        shape = (10,) + tuple(prefix.output.shape[1:])
        return cls(root, prefix_identity(prefix, layer), shape, limit_bytes(), say)

    def describe(self):
        """What this run did with the store, in one line."""
        taken = (f", {self.taken:,} computed here but stored first (by another run, or as a copy of the image in this "
                 "one; the stored values used)"
                 if self.taken else "")
        return (f"feature store: {self.read:,} images' features reused, {self.written:,} added{taken} "
                f"({self.root}; ALEXFT_FEATURE_STORE=off turns it off)")

    def _path(self, digest):
        return self.folder / digest[:2] / f"{digest}.npy"

    def load(self, digest):
        """The stored features of the file with this digest, or None. A used entry is marked as used."""
        path = self._path(digest)
        value = self._read(path)
        if value is not None:
            try:
                os.utime(path)  # recently used: the last to be trimmed
            except OSError:  # a store shared read-only
                pass
        return value

    def _read(self, path):
        """The entry's array, or None when it is missing or anything but (10, ...) float32."""
        try:
            with open(path, "rb") as handle:
                version = np.lib.format.read_magic(handle)
                read_header = np.lib.format.read_array_header_2_0 if version == (2, 0) else \
                    np.lib.format.read_array_header_1_0
                shape, fortran, dtype = read_header(handle)  # checked before any data is read
                if shape != self.shape or fortran or dtype != np.dtype(np.float32):
                    return None
                handle.seek(0)
                value = np.load(handle, allow_pickle=False)
        except Exception:  # missing, or damaged in any way: computed again, and replaced
            return None
        return value if isinstance(value, np.ndarray) and value.shape == self.shape else None

    def note_read(self, digest):
        self.read += 1
        self.used.add(digest)

    def fits(self, count):
        """Whether `count` entries fit within the limit at all; said once when not."""
        need = count * self.entry_bytes
        if need > self.limit and self.writable:
            self.writable = False
            self.say(f"feature store: these features need {_size(need)}, over its limit of {_size(self.limit)} "
                     "($ALEXFT_FEATURE_STORE_GB); they are not kept for the next run")
        return self.writable

    def save(self, digest, value):
        """Keep `value` as the features of the file with this digest. Returns the values to use:
        `value`, or those another run stored first."""
        if not self.writable or digest is None:
            return value
        path = self._path(digest)
        temporary = path.parent / f".{digest}.{os.getpid()}.tmp"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(temporary, "wb") as handle:
                np.save(handle, np.asarray(value, np.float32), allow_pickle=False)
                os.fchmod(handle.fileno(), self.mode)
            value, placed = self._place(temporary, path, value)
            self.written += placed
            self.taken += not placed
            self.used.add(digest)
        except OSError as error:
            self.writable = False
            self.say(f"feature store: cannot write to {self.root} ({_write_failure(error)}); "
                     "this run goes on without keeping its features")
        finally:
            try:
                temporary.unlink()
            except OSError:
                pass
        return value

    def _place(self, temporary, path, value):
        """Link the new entry into place unless a sound one is there already (then use it).
        Returns (the values to use, whether this entry was placed)."""
        try:
            os.link(temporary, path)
            return value, True
        except FileExistsError:  # another run, or a copy of the same image in this one, came first
            stored = self._read(path)
            if stored is not None:
                return stored, False
        except OSError:  # no hard links on this file system: the last writer wins
            pass
        os.replace(temporary, path)
        return value, True

    def trim(self):
        """Remove the least recently used entries, never those this run used, until the store
        is within its limit. Entries of other prefixes count and go too; files the store did
        not write are never touched."""
        entries, day_ago = [], time.time() - 86400
        for path in self.root.glob("*/*/*"):
            name = path.relative_to(self.root).as_posix()
            try:
                if LEFT_BEHIND.fullmatch(name) and path.stat().st_mtime < day_ago:  # by a run killed while writing
                    path.unlink()
                elif ENTRY.fullmatch(name):
                    stat = path.stat()
                    entries.append((stat.st_mtime, stat.st_size, path))
            except OSError:  # removed meanwhile by another run's trim
                continue
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.limit:
                break
            if path.stem in self.used and path.parent.parent == self.folder:
                continue
            try:
                path.unlink()
                total -= size
            except OSError:
                pass
        return total


def _size(count):
    return f"{count / 1e9:.1f} GB" if count >= 1e8 else f"{count / 1e6:.1f} MB"


class HashedFile:
    """An image file as the decoder reads it (`read_bytes`), noting the SHA-256 of the very
    bytes it decodes: the entry its features go to is named by what was computed, even if the
    file changed since it was looked up."""

    def __init__(self, path):
        self.path, self.digest = path, None

    def read_bytes(self):
        from .image_files import read_file

        data = read_file(self.path)
        self.digest = hashlib.sha256(data).hexdigest()
        return data

    def __str__(self):
        return str(self.path)


def _write_failure(error):
    """An OSError's cause. numpy reports a write cut short without an errno ("40960 requested and
    30688 written", a helper's store on a disk that filled): what cuts a write short is said."""
    if error.errno is None and "requested and" in str(error):
        return f"a write was cut short: the disk is full, or a quota or file size limit was reached ({error})"
    return error.strerror or str(error)
