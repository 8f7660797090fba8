"""Validation images that are training images too: the same file (the data folder given as the
validation folder), or the same bytes under another name (a val/ folder made by copying some
training photos, a photo copied within the folder that was split). Validation accuracy on them
measures memory, not the model, so the run warns; nothing is left out. So are training images
filed under two classes (the same bytes twice): one of the two labels is wrong.

The content check hashes only files whose size some file of the other set shares, and at most
MAX_HASHED of them: photos of one size are rare enough that this costs a stat call per file.
"""
import os
from collections import defaultdict

from .weights.download import file_sha256

MAX_HASHED = 2000  # files hashed at most; beyond, the check says it stopped


def shared_images(train_paths, val_paths):
    """([(validation index, training index)] of the same file or bytes, complete): `complete`
    is False when the content check stopped at MAX_HASHED files."""
    train_files = {os.path.realpath(path): index for index, path in enumerate(train_paths)}
    shared, rest = [], []
    for index, path in enumerate(val_paths):
        same = train_files.get(os.path.realpath(path))
        if same is not None:
            shared.append((index, same))
        else:
            rest.append(index)
    by_size = defaultdict(list)
    for index, path in enumerate(train_paths):
        by_size[_size(path)].append(index)
    digests, complete = {}, True
    for index in rest:
        others = by_size.get(_size(val_paths[index]), [])
        if not others:
            continue
        if len(digests) + 1 + len(others) > MAX_HASHED:
            complete = False
            break
        digest = _digest(val_paths[index], digests)
        same = next((other for other in others if _digest(train_paths[other], digests) == digest), None)
        if same is not None:
            shared.append((index, same))
    return shared, complete


def _size(path):
    try:
        return os.stat(path).st_size
    except OSError:
        return -1  # unreadable: the run names it when it reads it


def _digest(path, digests):
    if path not in digests:
        try:
            digests[path] = file_sha256(path)
        except OSError:
            digests[path] = path  # equal to no digest
    return digests[path]


def overlap_warnings(dataset):
    """The warnings to give for `dataset` (a data.Dataset): a list, often empty. A split of one
    folder is compared too (a copy of a photo in it lands on both sides as often as not): a
    stat per image, 0.8 s for 40,000 files on a local disk with the hashing (at most MAX_HASHED)."""
    return [said for said in (_seen_in_training(dataset), _filed_twice(dataset)) if said]


def _filed_twice(dataset):
    """The warning for training images whose bytes are another's filed under another class."""
    train = dataset.train
    by_size = defaultdict(list)
    for index, path in enumerate(train.paths):
        by_size[_size(path)].append(index)
    candidates = [index for size, indices in by_size.items()
                  if size >= 0 and len({int(train.labels[index]) for index in indices}) > 1 for index in indices]
    digests, by_digest = {}, defaultdict(list)
    for index in candidates[:MAX_HASHED]:
        by_digest[_digest(train.paths[index], digests)].append(index)
    conflicts = [indices for indices in by_digest.values() if len({int(train.labels[index]) for index in indices}) > 1]
    if not conflicts:
        return None
    first = [conflicts[0][0], next(index for index in conflicts[0] if train.labels[index] != train.labels[conflicts[0][0]])]
    names = dataset.class_names
    count = f"{len(conflicts)}{' or more' if len(candidates) > MAX_HASHED else ''}"
    return (f"warning: {count} training image(s) are filed under two classes or more, the same bytes in each (e.g. "
            f"{train.paths[first[0]]} in {names[train.labels[first[0]]]!r}, {train.paths[first[1]]} in "
            f"{names[train.labels[first[1]]]!r}): one of the labels is wrong; remove the copy from the class it is not")


def _seen_in_training(dataset):
    """The warning for validation images that are training images too, or None."""
    shared, complete = shared_images(dataset.train.paths, dataset.val.paths)
    if not shared:
        return None
    val, train = (dataset.val.paths[shared[0][0]], dataset.train.paths[shared[0][1]])
    example = (str(val) if os.path.abspath(val) == os.path.abspath(train) else
               f"{val}, the same {'file' if os.path.realpath(val) == os.path.realpath(train) else 'bytes'} as {train}")
    count = f"{len(shared)}{'' if complete else ' or more'} of the {len(dataset.val)} validation images"
    said = (f"warning: {count} {'is a training image' if len(shared) == 1 else 'are training images'} too (e.g. "
            f"{example}): accuracy there says little about images the model has not seen; ")
    same_files = all(os.path.realpath(dataset.val.paths[v]) == os.path.realpath(dataset.train.paths[t]) for v, t in shared)
    said += ("is the validation folder the data folder?" if same_files and len(shared) == len(dataset.val) else
             "remove them from one of the folders")
    conflicts = [(v, t) for v, t in shared if dataset.val.labels[v] != dataset.train.labels[t]]
    if conflicts:  # one of each pair's two labels is wrong
        v, t = conflicts[0]
        names = dataset.class_names
        said += (f"; {len(conflicts)} of them {'is' if len(conflicts) == 1 else 'are'} filed under another class "
                 f"there (e.g. {dataset.val.paths[v]} in {names[dataset.val.labels[v]]!r}, "
                 f"{dataset.train.paths[t]} in {names[dataset.train.labels[t]]!r})")
    return said
