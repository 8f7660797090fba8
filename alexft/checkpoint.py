"""Atomic, pickle-free training checkpoints.

One `.npz` holds the trained variables (current and best), the optimizer's variables, the
dropout RNG states and a JSON record (epoch, step, history, config, class names). It is
written to a temporary file, fsynced and renamed, so a kill at any moment leaves the
previous checkpoint intact, and a temporary file is never taken for a checkpoint.
"""
import json
from pathlib import Path

import numpy as np

from .atomic import write_atomic
from .errors import AlexftError


class CheckpointError(AlexftError, ValueError):
    """A checkpoint is missing, unreadable, or belongs to another configuration."""


def save(path, record, arrays):
    """Write `record` (JSON-able dict) and `arrays` ({name: ndarray}) atomically."""
    payload = dict(arrays)
    payload["record"] = np.array(json.dumps(record))
    return write_atomic(path, lambda handle: np.savez(handle, **payload), CheckpointError)


def load(path, arrays=True):
    """Return (record, arrays) from a checkpoint written by `save`; `arrays=False`: the record
    alone (read without the arrays, for checks before TensorFlow starts), arrays None."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint to resume from")
    try:
        with np.load(path, allow_pickle=False) as archive:
            values = {key: archive[key] for key in archive.files if key != "record"} if arrays else None
            record = json.loads(str(archive["record"]))
    except (OSError, ValueError, KeyError, EOFError) as error:
        raise CheckpointError(f"{path}: unreadable checkpoint ({error})") from None
    return record, values
