"""Opening a weights file for reading, shared by every format's reader (formats, caffe)."""
from ..errors import WeightsError
from ..near_names import near_name_hint

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"


def open_weights_file(path):
    """Open a weights file for reading, or raise WeightsError saying why not (every reader uses this)."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise WeightsError(f"{path}: weights file not found{near_name_hint(path)}") from None
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
