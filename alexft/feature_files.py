"""Feature files (.npz) as `alexft features` writes them: merging shards, streaming writes.
No TensorFlow here: joining files must not wait for it."""
import contextlib
import errno
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .atomic import (archive_names, check_writable, refuse_folder_for_file, what_it_holds, write_atomic,
                     write_failure_cause, zip_failure)
from .errors import AlexftError
from .preprocess import path_list
from .python_words import keywords_hinted


class OutputNameError(AlexftError, ValueError):
    """The output is not named as a feature file (.npz): most likely another file named by mistake."""


class FeatureFileError(AlexftError, ValueError):
    """A feature file that cannot be read, or parts that do not belong together."""


class TenCropOfMapsError(AlexftError, ValueError):
    """Ten crops asked of a layer whose outputs are maps (`option`: how the user asked)."""

    def __init__(self, layer, option):
        super().__init__(f"{option} averages the ten crops' outputs, which suits vectors (fc6, fc7, fc8) only: the "
                         f"crops' {layer} maps do not line up position by position; leave it out for {layer}")


def check_output(output, overwrite, option="overwrite=True"):
    """Refuse, before any work, an output that is not an .npz (a photo named by mistake) or that
    exists: replaced only with `overwrite` (`option` is how the caller's user says so), and
    only if it is an earlier feature file, never another kind of file that happens to be an .npz."""
    if str(output) == "-":  # standard output, as for images on the way in: an .npz is a file of parts
        raise OutputNameError("-: features are written to an .npz file, which cannot go to standard output; "
                              "name one (e.g. features.npz)")
    refuse_folder_for_file(output, "features are written as one .npz file", "features.npz", OutputNameError)
    output = Path(output)
    if output.suffix.lower() != ".npz":
        raise OutputNameError(f"{output}: features are written as .npz; name the output so (e.g. "
                              f"{_npz_name_for(output)})")
    if output.is_symlink() or output.exists():
        if output.exists() and not output.is_file():
            raise AlexftError(f"{output}: exists and is not a file; {option} replaces only files")
        if output.exists():  # (first: "pass --force", then "not even with --force", a user was told)
            _refuse_unless_features(output, option)  # a broken symbolic link holds nothing to lose
        if not overwrite:
            raise AlexftError(f"{output}: exists; pass {option} to replace it")
    check_writable(output)


def _npz_name_for(output):
    """The .npz name suggested for a mistaken output, in its folder; never a name the weights
    lookup takes (-o weights/bvlc_alexnet.npy had suggested bvlc_alexnet.npz, which classify then
    found as its weights)."""
    from .weights.sources import LOOKED_FOR

    stem = output.stem if output.stem.lower() not in (".npz", ".npy") else "features"  # (-o .npz: a hidden file)
    suggested = output.with_name(f"{stem}.npz")
    return suggested.with_name(f"{stem}_features.npz") if suggested.name in LOOKED_FOR else suggested


def _refuse_unless_features(path, option):
    names = archive_names(path)
    if not {"features.npy", "paths.npy"} <= names:
        raise AlexftError(f"{path}: exists and is not a feature file ({what_it_holds(path, names)}), so it is not "
                          f"replaced, even with {option}; name another output, or remove it first if it should go")


# Members that describe all of a file's features: the same in every part, kept once.
ONE_COPY = ("class_names", "recipe")


@keywords_hinted
def merge_features(parts, output, overwrite=True):
    """Concatenate feature files written by `features --shard I/N`, in the order given, into
    `output`: the same file one unsharded run writes. Reads one part at a time. An existing
    `output` is replaced only if it is a feature file, and with `overwrite` (see `check_output`)."""
    parts = path_list(parts)
    if not parts:
        raise FeatureFileError("merge_features: no parts given")
    if not all(isinstance(part, Path) for part in parts):
        not_a_file = next(part for part in parts if not isinstance(part, Path))
        raise TypeError(f"merge_features takes feature files on disk; {not_a_file} is not one")
    if any(Path(part).resolve() == Path(output).resolve() for part in parts):
        raise FeatureFileError(f"merge_features: {output} is one of the parts; write the merged file under another name")
    check_output(output, overwrite)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    shapes, extras, members, seen = [], {}, None, {}
    for part in parts:
        with _feature_file(part) as stored:
            for name in ONE_COPY:  # first: how a part was made says more than which members it has
                if name in extras and name in stored.files and not np.array_equal(extras[name][0], stored[name]):
                    raise FeatureFileError(f"merge_features: {part} {_how_it_differs(name, extras[name][0], stored[name])}")
            if members is not None and sorted(stored.files) != members:
                raise FeatureFileError(f"merge_features: {part} {_other_members(stored.files, members)}")
            members = sorted(stored.files)
            shapes.append(_features_shape(part))  # from the header: the array is read once, below
            for name in stored.files:
                if name in ONE_COPY:
                    extras.setdefault(name, [stored[name]])
                elif name != "features":
                    extras.setdefault(name, []).append(stored[name])
            _refuse_repeated_paths(part, stored["paths"], seen)
    if len({shape[1:] for shape in shapes}) != 1:
        raise FeatureFileError(f"merge_features: the parts hold features of different shapes {sorted(set(shapes))}")
    output = Path(output)
    total = sum(shape[0] for shape in shapes)
    with tempfile.TemporaryDirectory(dir=output.parent) as scratch:
        merged = disk_array(Path(scratch) / "features.npy", (total,) + shapes[0][1:], output, FeatureFileError)
        start = 0
        for part, shape in zip(parts, shapes):
            with np.load(part, allow_pickle=False) as stored:
                merged[start:start + shape[0]] = stored["features"]
            start += shape[0]
        merged.flush()
        write_npz(output, Path(scratch) / "features.npy", total,
                  {name: arrays[0] if name in ONE_COPY else np.concatenate(arrays) for name, arrays in extras.items()})
    return output


@contextlib.contextmanager
def _feature_file(part):
    """np.load of a part, its failures said as the part's: a zip error named no file."""
    try:
        # Opened here: np.load leaves the file open when the zip inside it is broken.
        with open(part, "rb") as handle, np.load(handle, allow_pickle=False) as stored:
            if not {"features", "paths"} <= set(stored.files):
                raise FeatureFileError(f"{part}: not a feature file (no features and paths in it)")
            yield stored
    except FileNotFoundError:
        raise FeatureFileError(f"{part}: no such file") from None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        if isinstance(error, FeatureFileError):
            raise
        raise FeatureFileError(f"{part}: corrupt or truncated .npz ({zip_failure(error)})") from None


def _other_members(these, first):
    extra, missing = sorted(set(these) - set(first)), sorted(set(first) - set(these))
    said = [f"holds {', '.join(extra)}, which the first part does not"] if extra else []
    said += [f"lacks {', '.join(missing)}, which the first part holds"] if missing else []
    return " and ".join(said) + " (labelled and unlabelled parts, or parts of different runs?)"


def _how_it_differs(name, first, this):
    if name == "class_names":
        return "has other class names than the first part"
    first, this = json.loads(str(first)), json.loads(str(this))
    keys = [key for key in sorted(set(first) | set(this)) if first.get(key) != this.get(key)]
    if "precision" in keys and "weights_sha256" in keys:  # the weights' digest is of the weights as held
        keys.remove("weights_sha256")
    return ("was made differently from the first part: "
            + "; ".join(f"{key} {this.get(key)!r}, the first part's {first.get(key)!r}" for key in keys))


def _refuse_repeated_paths(part, paths, seen):
    """Shards hold disjoint images: one seen in an earlier part means a part was given twice,
    or parts of two different runs."""
    for path in paths.tolist():
        if path in seen and Path(seen[path]).resolve() == Path(part).resolve():
            raise FeatureFileError(f"merge_features: {part} is given twice")
        if path in seen:
            raise FeatureFileError(f"merge_features: {part} holds {path}, as {seen[path]} does: each image belongs to "
                             "one part (are these parts of two runs?)")
        seen[path] = part


def _features_shape(part):
    """The shape of a feature file's `features`, from its .npy header alone."""
    with zipfile.ZipFile(part) as archive, archive.open("features.npy") as member:
        version = np.lib.format.read_magic(member)
        read_header = np.lib.format.read_array_header_2_0 if version == (2, 0) else np.lib.format.read_array_header_1_0
        return read_header(member)[0]


# Errors of a file system that cannot reserve space ahead (some network ones): the array is then
# mapped as numpy makes it, unreserved.
_NO_RESERVING = frozenset({errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS})


def disk_array(path, shape, named, error=AlexftError):
    """A float32 .npy at `path`, mapped into memory, with its disk space taken now.

    numpy's memory-mapped file is sparse: on a disk that fills up meanwhile, writing into the
    map kills the process (SIGBUS) with no message and leaves the scratch file. Reserving the
    blocks first makes a full disk an `error` here, naming `named`, the file the user asked for
    (the scratch file's own name would mean nothing to them)."""
    try:
        array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
        if hasattr(os, "posix_fallocate"):  # (Linux; elsewhere the map stays as numpy makes it)
            with open(path, "r+b") as handle:
                try:
                    os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)
                except OSError as failure:
                    if failure.errno not in _NO_RESERVING:
                        raise
    except OSError as failure:
        Path(path).unlink(missing_ok=True)
        needed = -(-(int(np.prod(shape, dtype=np.int64)) * 4 + 128) // 2**20)  # MiB, rounded up
        raise error(f"{named}: could not be written ({write_failure_cause(failure)}; it needs {needed:,.0f} MiB); "
                    f"{'the previous file is intact' if Path(named).exists() else 'nothing was left there'}") from None
    return array


def write_npz(output, features_file, count, extras):
    """An .npz (uncompressed zip of .npy files) whose big member is copied from disk in pieces."""
    source = np.load(features_file, mmap_mode="r")[:count]

    def write(handle):
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            with archive.open("features.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_1_0(member, np.lib.format.header_data_from_array_1_0(source))
                for start in range(0, count, 1024):
                    member.write(np.ascontiguousarray(source[start:start + 1024]).tobytes())
            for name, array in extras.items():
                with archive.open(f"{name}.npy", "w") as member:
                    np.lib.format.write_array(member, array, allow_pickle=False)

    write_atomic(output, write)
