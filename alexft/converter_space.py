"""The disk space the TF Lite converter needs, checked before it starts.

The converter writes a temporary SavedModel of the whole model and, when that write fails for
want of space, swallows the error and fails later with "'NoneType' object is not callable". So
the space is checked first, and again after a failure, where it is said as what it is. Without
TensorFlow: the LiteRT copy's build checks it before announcing itself.
"""
import shutil

from .errors import AlexftError

MARGIN = 16 << 20  # the converted graph's own files, with room to spare


def converter_scratch_bytes(parameter_bytes):
    """What the TF Lite converter writes to disk for a model of `parameter_bytes`: its temporary
    SavedModel holds the variables twice at its peak (TensorFlow's temporary state file, then the
    file), 465 MiB for AlexNet's 233 (measured on tmpfs folders of 440 and 480 MiB)."""
    return 2 * parameter_bytes + MARGIN


def check_converter_space(folder, needed, output=None, error=AlexftError):
    """Raise `error` if `folder` has less than `needed` bytes free for the converter's scratch."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # (the write itself then says what is wrong with the folder)
    if free < needed:
        raise error(f"{output or folder}: cannot be written: the TF Lite converter needs about {needed >> 20} MiB free "
                    f"in {folder} for its temporary files, and {free >> 20} MiB are free")
