"""Opening a weights file for reading, shared by every format's reader (formats, caffe)."""
import os
import stat

from ..errors import WeightsError
from ..missing_paths import path_problem

NOT_REGULAR = "not a regular file (a named pipe or a device); weights are read from a file"
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"


def open_weights_file(path):
    """Open a weights file for reading, or raise WeightsError saying why not (every reader uses this)."""
    try:
        mode = os.stat(path).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # (a folder: open says so below)
            raise WeightsError(f"{path}: {NOT_REGULAR}")  # (a named pipe was waited on for ever)
        return open(path, "rb")
    except FileNotFoundError:
        raise WeightsError(f"{path}: {missing_weights_said(path)}") from None
    except IsADirectoryError:
        raise WeightsError(f"{path}: is a folder, not a weights file") from None
    except OSError as error:
        raise WeightsError(f"{path}: cannot read weights file: {error.strerror or error}") from None


def read_head(path):
    with open_weights_file(path) as handle:
        head = handle.read(64)
    if not head:
        raise WeightsError(f"{path}: weights file is empty")
    return head


def missing_weights_said(path):
    """Why a weights file that could not be found is not there: a broken link, a loop, or missing
    (with the file's name likely meant)."""
    return path_problem(path, "file", missing="weights file not found") or "weights file not found"
