"""Files that are either the old version or the new one, never half written.

Everything alexft writes into a run folder or next to a user's file goes through
`write_atomic`: a temporary file beside the target, fsync, rename, fsync of the folder.
A kill at any moment, or a full disk, leaves the previous file as it was; the
temporary file's name (`.NAME.tmp-PID`) can never be taken for the real one.
"""
import errno
import glob
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path

from .errors import AlexftError


def temporary_path(path):
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_atomic(path, write, error=AlexftError):
    """Call write(handle) on a temporary file beside `path`, fsync, then rename over `path`.

    An OSError (no space left, a read-only or vanished folder) becomes `error` with a
    one-line message; the previous file at `path` is untouched and the temporary removed.
    """
    path = Path(path)
    temporary = temporary_path(path)
    existed = path.exists()
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as failure:
        cause = write_failure_cause(failure)
        kept = "the previous file is intact" if existed else "nothing was left there"
        raise error(f"{path}: could not be written ({cause}); {kept}") from None
    finally:
        temporary.unlink(missing_ok=True)
    try:
        _fsync_folder(path.parent)  # makes the rename durable; some network file systems refuse it
    except OSError:
        pass
    return path


def write_failure_cause(failure):
    """An OSError of a write, in the words alexft's messages use for it."""
    return "no space left on the device" if failure.errno == errno.ENOSPC else (failure.strerror or str(failure))


def check_writable(path, error=AlexftError, folder_ok=False):
    """Raise `error` now, before minutes of work, if `path` could not be written: the nearest
    folder above it that exists (the writer creates the missing ones) must be a folder this
    process may write in. `folder_ok`: `path` may be a folder the writer replaces as a whole
    (an earlier SavedModel export)."""
    path = Path(path)
    if path.is_dir() and not folder_ok:  # renaming a finished file onto it would fail only after the work
        raise error(f"{path}: cannot be written: it is a folder")
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise error(f"{path}: cannot be written: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise error(f"{path}: cannot be written: {_why_not_writable(folder)}")
    try:  # what os.access cannot tell: /proc and /sys, read-only mounts, root's limits
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as problem:
        raise error(f"{path}: cannot be written: files cannot be created in {folder} ({problem.strerror or problem})") from None
    return path


def _why_not_writable(folder):
    """A read-only file system (a mounted image, a read-only share) is said as such: no change
    of permissions would help there."""
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows)
        read_only = False
    return f"{folder} is on a read-only file system" if read_only else f"no permission to write in {folder}"


def json_text(value, **options):
    """JSON as UTF-8 can carry it: names as they are, unless one (a file name that is not valid
    UTF-8, held by Python as lone surrogates) cannot be encoded; then the whole text is ASCII
    with escapes (\\udcff), which Python's json reads back as the same name."""
    text = json.dumps(value, ensure_ascii=False, **options)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, **options)
    return text


def write_text(path, text, error=AlexftError):
    """`write_atomic` for UTF-8 text."""
    data = text.encode("utf-8")
    return write_atomic(path, lambda handle: handle.write(data), error)


def remove_stale_temporaries(folder, shared=False, prefix=""):
    """Delete temporary files and folders (an export's SavedModel, the TF Lite converter's scratch)
    a killed process left in `folder` (`.NAME.tmp-PID`, NAME starting with `prefix`); return their
    names. `shared`: other processes may be writing there now (a cache, an export folder), so
    only those whose process is gone are deleted."""
    removed = []
    for stale in Path(folder).glob(f".{glob.escape(prefix)}*.tmp-*"):
        pid = stale.name.rpartition("-")[2]
        if not pid.isdigit() or (shared and _process_alive(pid)):
            continue  # not one of ours, or still being written
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
        removed.append(stale.name)
    return removed


def _process_alive(pid):
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _fsync_folder(folder):
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def refuse_folder_for_file(path, what, example, error=AlexftError):
    """Refuse an output that names a folder where one file is written: a folder that exists, or
    one typed `out/` (a str as typed: a Path drops the slash), which need not exist yet. `what`
    says what the file is; the message names a file to use instead (`example`, inside it)."""
    typed_as_folder = str(path).endswith(("/", os.sep))
    folder = Path(path)
    if not (typed_as_folder or folder.is_dir()):
        return
    shown = str(path) if typed_as_folder else f"{folder}{os.sep}"  # (`/` stays `/`, not `//`)
    if folder.is_dir():
        raise error(f"{shown}: is a folder; {what}: name it (e.g. {folder / example})")
    if folder.exists():  # `afile/`: a file has the folder's name
        raise error(f"{shown}: names a folder, but {folder} is a file; {what}: name it (e.g. {folder.parent / example})")
    # `m.keras/` meant m.keras itself; `out/` a folder to make, the file inside it
    meant = folder if folder.suffix.lower() == Path(example).suffix.lower() else folder / example
    raise error(f"{shown}: names a folder; {what}: name it (e.g. {meant})")


def missing_folders(folder):
    """`folder` and those of its parents that do not exist yet, deepest first: what a write that
    makes them should remove again if it fails (`remove_empty`)."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def remove_empty(folders):
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # something else was put there meanwhile: it stays
            return


def zip_failure(error):
    """Why an .npz could not be read, in words: bytes cut from its middle shift what its index
    points at, and zipfile's seek before the file's start comes out as "[Errno 22] Invalid argument"."""
    if isinstance(error, OSError) and error.errno == errno.EINVAL:
        return "its index points outside the file: bytes are missing from it"
    return error


def archive_names(path, error=AlexftError):
    """The member names of the zip archive (.npz) at `path`, empty for a file that is not one:
    what an existing output holds decides whether it may be replaced. A file that cannot be
    read raises `error`: it is never replaced unseen."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return set(archive.namelist())
    except zipfile.BadZipFile:  # no index at its end: a copy cut short still names its members up front
        with open(path, "rb") as handle:
            return _names_before_the_cut(handle)
    except OSError as problem:
        raise error(f"{path}: exists and cannot be read ({problem.strerror or problem}), so it is not "
                    "replaced") from None


def what_it_holds(path, names):
    """An existing file an output would have replaced, in words, for its refusal: by its members
    (`names`, from archive_names) when it is an .npz, else by its first bytes."""
    if any(name.endswith("/weights.npy") for name in names):
        return "it holds weights"
    if {"features.npy", "paths.npy"} <= names:
        return "it holds features"
    if names:
        return "an .npz of other arrays"
    from .image_files import signature_format

    with open(path, "rb") as handle:
        kind = signature_format(handle.read(16))
    return f"a {kind} image" if kind else "not an .npz archive"


LOCAL_HEADER = struct.Struct("<4s2xH10xIIHH")  # signature, flags, compressed and full size, name and extra lengths


def _names_before_the_cut(handle):
    """The member names in the local headers of a zip whose end (and index) is gone: each
    member's data follows its header, sized there or, past 4 GiB, in its ZIP64 extra field."""
    names = set()
    while len(header := handle.read(LOCAL_HEADER.size)) == LOCAL_HEADER.size:
        signature, flags, size, _, name_length, extra_length = LOCAL_HEADER.unpack(header)
        name, extra = handle.read(name_length), handle.read(extra_length)
        if signature != b"PK\x03\x04" or len(name) < name_length:
            break
        names.add(name.decode("utf-8", "replace"))
        if flags & 0x08:  # sizes follow the data: the next header cannot be found
            break
        if size == 0xFFFFFFFF:
            size = _zip64_compressed_size(extra)
            if size is None:
                break
        handle.seek(size, 1)
    return names


def _zip64_compressed_size(extra):
    while len(extra) >= 4:
        tag, length = struct.unpack_from("<HH", extra)
        if tag == 1 and length >= 16:  # (uncompressed size, compressed size)
            return struct.unpack_from("<Q", extra, 12)[0]
        extra = extra[4 + length:]
    return None
