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


def shared_images(train_paths, val_paths, files=None):
    """([(validation index, training index)] of the same file or bytes, complete): `complete`
    is False when the content check stopped at MAX_HASHED files. `files`: the sizes and digests
    known (a `Files`), shared with the other checks."""
    files = files or Files()
    if not len(val_paths):
        return [], True
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
        by_size[files.size(path)].append(index)
    before, complete = len(files.digests), True
    for index in rest:
        others = by_size.get(files.size(val_paths[index]), [])
        if not others:
            continue
        if len(files.digests) - before + 1 + len(others) > MAX_HASHED:
            complete = False
            break
        digest = files.digest(val_paths[index])
        same = next((other for other in others if files.digest(train_paths[other]) == digest), None)
        if same is not None:
            shared.append((index, same))
    return shared, complete


class Files:
    """Files' sizes and digests, each found once for all the checks of a run."""

    def __init__(self):
        self.sizes, self.digests = {}, {}

    def size(self, path):
        if path not in self.sizes:
            try:
                self.sizes[path] = os.stat(path).st_size
            except OSError:
                self.sizes[path] = -1  # unreadable: the run names it when it reads it
        return self.sizes[path]

    def digest(self, path):
        if path not in self.digests:
            try:
                self.digests[path] = file_sha256(path)
            except OSError:
                self.digests[path] = path  # equal to no digest
        return self.digests[path]


def overlap_warnings(dataset):
    """The warnings to give for `dataset` (a data.Dataset): a list, often empty. A split of one
    folder is compared too (a copy of a photo in it lands on both sides as often as not): a
    stat per image, 0.8 s for 40,000 files on a local disk with the hashing (at most MAX_HASHED)."""
    files = Files()
    return [said for said in (_seen_in_training(dataset, files), _filed_twice(dataset, files)) if said]


def _filed_twice(dataset, files):
    """The warning for training images whose bytes are another's filed under another class."""
    train = dataset.train
    by_size = defaultdict(list)
    for index, path in enumerate(train.paths):
        by_size[files.size(path)].append(index)
    candidates = [index for size, indices in by_size.items()
                  if size >= 0 and len({int(train.labels[index]) for index in indices}) > 1 for index in indices]
    by_digest = defaultdict(list)
    for index in candidates[:MAX_HASHED]:
        by_digest[files.digest(train.paths[index])].append(index)
    conflicts = [indices for indices in by_digest.values() if len({int(train.labels[index]) for index in indices}) > 1]
    if not conflicts:
        return None
    one, other = _two_classes(conflicts[0], train.labels)
    names = dataset.class_names
    count = f"{len(conflicts)}{' or more' if len(candidates) > MAX_HASHED else ''}"
    return (f"warning: {count} image(s) are filed under two classes or more, the same bytes in each (e.g. "
            f"{train.paths[one]} in {names[train.labels[one]]!r}, {train.paths[other]} in "
            f"{names[train.labels[other]]!r}): one of the labels is wrong; remove the copy from the class it is not")


def _two_classes(indices, labels):
    """Two of `indices` whose labels differ."""
    return indices[0], next(index for index in indices if labels[index] != labels[indices[0]])


def _seen_in_training(dataset, files):
    """The warning for validation images that are training images too, or None."""
    shared, complete = shared_images(dataset.train.paths, dataset.val.paths, files)
    if not shared:
        return None
    val, train = (dataset.val.paths[shared[0][0]], dataset.train.paths[shared[0][1]])
    example = (str(val) if os.path.abspath(val) == os.path.abspath(train) else
               f"{val}, the same {'file' if os.path.realpath(val) == os.path.realpath(train) else 'bytes'} as {train}")
    count = f"{len(shared)}{'' if complete else ' or more'} of the {len(dataset.val)} validation images"
    said = (f"warning: {count} {'is a training image' if len(shared) == 1 else 'are training images'} too (e.g. "
            f"{example}): accuracy there says little about images the model has not seen; ")
    same_files = all(os.path.realpath(dataset.val.paths[v]) == os.path.realpath(dataset.train.paths[t]) for v, t in shared)
    split = getattr(dataset, "val_split", None) is not None  # (one folder, cut in two)
    said += ("is the validation folder the data folder?" if same_files and len(shared) == len(dataset.val) else
             "remove the copies from the folder" if split else "remove them from one of the folders")
    conflicts = [(v, t) for v, t in shared if dataset.val.labels[v] != dataset.train.labels[t]]
    if conflicts:  # one of each pair's two labels is wrong
        v, t = conflicts[0]
        names = dataset.class_names
        said += (f"; {len(conflicts)} of them {'is' if len(conflicts) == 1 else 'are'} filed under another class "
                 f"{'in training' if split else 'there'} (e.g. {dataset.val.paths[v]} in {names[dataset.val.labels[v]]!r}, "
                 f"{dataset.train.paths[t]} in {names[dataset.train.labels[t]]!r})")
    return said
