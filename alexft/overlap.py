"""Validation images that are training images too: the same file, or the same bytes under
another name (a val/ folder made by copying some of the training photos). Validation accuracy
on them measures memory, not the model, so the run warns; nothing is left out.

The content check hashes only files whose size some file of the other set shares, and at most
MAX_HASHED of them: photos of one size are rare enough that this costs a few stat calls.
"""
import hashlib
import os
from collections import defaultdict

MAX_HASHED = 2000  # files hashed at most; beyond, the check says it stopped


def shared_images(train_paths, val_paths):
    """(pairs, complete): up to a few (validation path, training path) of the same file or bytes,
    with the count of validation images shared, and whether every candidate was compared."""
    train_files = {os.path.realpath(path): path for path in train_paths}
    shared, rest = [], []
    for path in val_paths:
        same = train_files.get(os.path.realpath(path))
        if same is not None:
            shared.append((path, same))
        else:
            rest.append(path)
    sizes = defaultdict(list)
    for path in train_paths:
        sizes[_size(path)].append(path)
    candidates = [path for path in rest if _size(path) in sizes]
    hashed, complete = 0, True
    digests = {}
    for path in candidates:
        others = sizes[_size(path)]
        if hashed + 1 + len(others) > MAX_HASHED:
            complete = False
            break
        digest = _digest(path, digests)
        hashed += 1 + sum(other not in digests for other in others)
        same = next((other for other in others if _digest(other, digests) == digest), None)
        if same is not None:
            shared.append((path, same))
    return shared, complete


def _size(path):
    try:
        return os.stat(path).st_size
    except OSError:
        return -1  # unreadable: the run names it when it reads it


def _digest(path, digests):
    if path not in digests:
        try:
            digest = hashlib.sha1()
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            digests[path] = digest.digest()
        except OSError:
            digests[path] = path  # matches nothing else
    return digests[path]


def overlap_warning(train_paths, val_paths):
    """The warning to give, or None."""
    shared, complete = shared_images(train_paths, val_paths)
    if not shared:
        return None
    val, train = shared[0]
    same = "the same file as" if os.path.realpath(val) == os.path.realpath(train) else "the same bytes as"
    what = "is a training image" if len(shared) == 1 else "are training images"
    return (f"warning: {len(shared)}{'' if complete else ' or more'} of the {len(val_paths)} validation images {what} "
            f"too (e.g. {val}, {same} {train}): validation "
            "accuracy on them measures what the model has seen; remove them from one of the folders")
