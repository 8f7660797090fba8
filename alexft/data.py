"""Image folders with one sub-folder per class: listing, splits, broken files, tf.data.

Listing reads no image, so a run over a large folder starts at once and memory does not
grow with the number of files; images are decoded as the pipeline streams them.
"""
import collections
import difflib
import os
import threading
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import json_text, write_text
from .progress import progress_bar
from .errors import AlexftError, ImageError, warn_user, warnings_heard
from .image_sources import UnreadableFolder
from .preprocess import (distinct_inputs, find_images, images_below, is_folder, is_image_file, path_list, read_image,
                         resize_and_subtract_mean, unread_photos_said)
from .python_words import keywords_hinted


class DataError(AlexftError, ValueError):
    """The dataset's layout cannot be used (no classes, an empty class, too many broken files)."""


@dataclass
class LabelledFiles:
    paths: list
    labels: np.ndarray  # int32 class indices
    class_names: list = None  # what the labels index, where known (a folder's classes): evaluate matches them

    def __len__(self):
        return len(self.paths)

    def subset(self, indices):
        return LabelledFiles([self.paths[i] for i in indices], self.labels[indices], self.class_names)

    def __repr__(self):  # (the dataclass's listed every path: pages in a notebook)
        classes = f" of {len(self.class_names)} classes" if self.class_names is not None else ""
        first = f", first {str(self.paths[0])!r}" if self.paths else ""
        return f"LabelledFiles({len(self.paths):,} images{classes}{first})"


@dataclass
class Dataset:
    class_names: list
    train: LabelledFiles
    val: LabelledFiles  # may be empty
    val_split: float = None  # the share asked of each class when val was split off train, else None (a folder)
    listed_with: dict = None  # load_dataset's arguments (data_dir, val_dir, val_split, seed): finetune takes them
    warnings: list = field(default_factory=list)  # what the listing warned of (a run's summary keeps them)

    def __repr__(self):
        names = ", ".join(map(repr, self.class_names[:5])) + (", ..." if len(self.class_names) > 5 else "")
        return (f"Dataset({len(self.class_names):,} classes [{names}]: {len(self.train):,} training and "
                f"{len(self.val):,} validation images)")


def class_folders(root):
    """Sorted names of the sub-folders of `root`, less hidden ones and __MACOSX (what a Mac's
    zip adds beside the folders it packed)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    try:
        return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "__MACOSX")
    except PermissionError:  # (features of such a folder ended in a traceback)
        raise DataError(f"{root}: cannot read this folder (permission denied)") from None


def class_index(class_names):
    """{name: class index} for matching folders to `class_names` with `folder_class`: by exact
    name, else in one Unicode form, as macOS writes "café" decomposed (NFD) and most systems
    composed (NFC), and the two look identical. A form two class names share matches neither."""
    forms = collections.Counter(_composed(name) for name in class_names)
    index = {_composed(name): position for position, name in enumerate(class_names) if forms[_composed(name)] == 1}
    index.update({name: position for position, name in enumerate(class_names)})  # an exact name comes first
    return index


def folder_class(index, folder):
    """The class index of the folder named `folder` in a `class_index` table, or None."""
    return index[folder] if folder in index else index.get(_composed(folder))


def _composed(name):
    return unicodedata.normalize("NFC", name)


def loose_images(folder):
    """The image files directly in `folder`, beside its sub-folders."""
    return sorted(path for path in Path(folder).iterdir() if is_image_file(path) and path.is_file())


def quoted_names(names, at_most=5):
    """Class names, several of which hold commas ("tabby, tabby cat"), listed unambiguously:
    the first `at_most` quoted, then how many more."""
    names = [str(name) for name in names]
    more = f" and {len(names) - at_most} more" if len(names) > at_most else ""
    return ", ".join(repr(name) for name in names[:at_most]) + more


def _refuse_a_folder_in_two_classes(root, name, walked, owners):
    """Links can make two classes list one folder (two class folders linked to the same place, or
    to one folder elsewhere; links into the data folder itself are not followed): its images
    would be labelled as both."""
    for identity, path in walked:
        first, seen_as = owners.setdefault(identity, (name, path))
        if first != name:
            raise DataError(f"{root}: classes {first!r} and {name!r} both reach one folder, as "
                            f"{seen_as.relative_to(root)} and {path.relative_to(root)} (through a symbolic link); "
                            "its images would be labelled as both: each class needs its own")


def list_labelled(root, class_names, empty_ok=False):
    """Every image below root/<class>/ (recursively), labelled by the class's index. An empty
    class folder is refused, or with `empty_ok` (measuring, not learning) left out with a warning."""
    root = Path(root)
    paths, labels, empty, unread, only_unread, unsearchable = [], [], [], [], [], []
    owners = {}  # each folder listed: the class that listed it first, and as what
    with progress_bar(len(class_names), minimum=100, desc=f"listing {root}", unit="class") as bar:
        for index, name in enumerate(class_names):
            folder, held, walked, locked = root / name, [], [], len(unsearchable)
            files = images_below(folder, held, unsearchable, walked, within=root) if folder.is_dir() else []
            if empty_ok:  # measuring: a folder that cannot be listed is an input that could not be used, as in classify
                files += [UnreadableFolder(path) for path in unsearchable[locked:]]
            _refuse_a_folder_in_two_classes(root, name, walked, owners)
            empty += [] if files else [name]
            only_unread += [] if files or not held else [held[0]]  # (one of its photos, to name)
            unread += held
            paths.extend(files)
            labels.extend([index] * len(files))
            bar.update(1)
    if unsearchable and not empty_ok:  # before the refusals below: an unreadable class folder is why it looks empty
        warn_user(f"{root}: cannot read {quoted_names(str(path.relative_to(root)) for path in unsearchable)} "
                  "(permission denied); the images in them are left out")
    unread_said = unread_photos_said(unread, root) if unread else None
    if not paths:
        raise DataError(f"{root}: none of its class folders holds an image" + (f"; {unread_said}" if unread else ""))
    if empty:
        named = quoted_names(empty)
        if not empty_ok:  # all of them named at once, not one per try
            if only_unread:
                folders = quoted_names(path.relative_to(root).parts[0] for path in only_unread)
                raise DataError(f"{root}: class folder(s) {folders} hold {unread_photos_said(only_unread, root, only=True)}")
            if len(empty) == 1:
                raise DataError(f"{root / empty[0]}: class folder has no images")
            raise DataError(f"{root}: {len(empty)} class folders have no images: {named}; each class needs some")
        warn_user(f"{root}: {len(empty)} class folder(s) with no images: {named}")
    if unread:
        warn_user(f"{root}: {unread_said}")
    return LabelledFiles(paths, np.array(labels, np.int32), list(class_names))


def stratified_split(labels, fraction, seed):
    """Indices (train, val): each class gives round(fraction * n) images to validation
    (at least one when it has two or more and fraction > 0), chosen by a seeded shuffle."""
    rng = np.random.default_rng([seed, 0x5EED])
    train, val = [], []
    # One stable sort groups each class's indices in ascending order (what a per-class scan
    # gives, in one pass instead of classes x images: 10,000 classes took minutes).
    order = np.argsort(labels, kind="stable")
    classes, starts = np.unique(np.asarray(labels)[order], return_index=True)
    for members in np.split(order, starts[1:]):
        members = members.copy()
        rng.shuffle(members)
        count = int(round(fraction * len(members)))
        if fraction > 0 and len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)
        val.extend(members[:count])
        train.extend(members[count:])
    return np.sort(np.array(train, int)), np.sort(np.array(val, int))


def _refuse_names_that_are_not_utf_8(data_dir, class_names):
    """A class name goes into the model, its TF Lite labels and its exports, which hold text:
    a folder name that is not UTF-8 would fail there, after the training. Said now."""
    for name in class_names:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise DataError(f"{data_dir}: class folder {os.fsencode(name)!r} is not named in UTF-8; rename it "
                            "(class names go into the model and its exports as text)") from None


@keywords_hinted
def load_dataset(data_dir, val_dir=None, val_split=0.1, seed=0):
    """Class names and train/val file lists.

    Layout: DATA_DIR/<class>/..., or DATA_DIR/train/<class> and DATA_DIR/val/<class> (or
    validation/, valid/) when both exist, or a separate `val_dir`; train/ alone, or beside test/
    only, is the data, split by `val_split`; test/ is left out with a warning (it is for
    `evaluate`). Classes are sorted by folder name.
    """
    said = []
    with warnings_heard(said.append):
        dataset = _listed(data_dir, val_dir, val_split, seed)
    dataset.warnings = said
    return dataset


def _listed(data_dir, val_dir, val_split, seed):
    from .train_options import parse_share

    val_split = parse_share(val_split, "val_split")  # (-0.1 and 1.5 had split off all but one image a class)
    listed_with = dict(data_dir=data_dir, val_dir=val_dir, val_split=val_split, seed=seed)
    data_dir = Path(data_dir)
    _warn_of_loose_images(data_dir)
    split = _split_folders(data_dir)
    if split is not None:
        train_dir, held_out, test_dir = split
        if held_out is not None and val_dir is not None:
            raise DataError(f"{data_dir}: holds {train_dir.name}/ and {held_out.name}/, and a validation folder was given too "
                            f"({val_dir}); give {train_dir} as the data with it, or leave the validation folder out")
        if test_dir is not None:
            validated = f" and validates on {held_out.name}/" if held_out else ""
            warn_user(f"{test_dir}: not used in fine-tuning, which trains on {train_dir.name}/{validated}; measure the "
                      f"fine-tuned model on it with alexft evaluate {test_dir} --weights RUN/model.npz")
        read = {train_dir.name, test_dir and test_dir.name, held_out and held_out.name}  # (of val/ and validation/, one)
        others = [name for name in class_folders(data_dir) if name not in read]
        if others:
            warn_user(f"{data_dir}: {quoted_names(others)} left out: fine-tuning reads the parts {train_dir.name}/"
                      + (f" and {held_out.name}/" if held_out else "") + " only")
        data_dir, val_dir = train_dir, held_out or val_dir
        _warn_of_loose_images(data_dir)
    if val_dir is not None:
        _warn_of_loose_images(Path(val_dir))
    class_names = class_folders(data_dir)
    if not class_names:
        raise DataError(f"{data_dir}: no class sub-folders; expected {data_dir}/<class name>/<images>")
    if len(class_names) < 2:
        raise DataError(f"{data_dir}: only one class ({class_names[0]}); fine-tuning needs at least two")
    _refuse_names_that_are_not_utf_8(data_dir, class_names)
    train = list_labelled(data_dir, class_names)
    if val_dir is not None:
        val_classes = class_folders(val_dir)
        index = class_index(class_names)
        unknown = sorted(name for name in val_classes if folder_class(index, name) is None)
        if unknown:
            near = {name: difflib.get_close_matches(name, class_names, n=1, cutoff=0.6) for name in unknown}
            hints = [f"{name!r}: did you mean {close[0]!r}?" for name, close in near.items() if close]
            raise DataError(f"{val_dir}: class folder(s) {', '.join(unknown)} not among the training classes"
                            + (f" ({'; '.join(hints)})" if hints else ""))
        val = list_labelled(val_dir, val_classes)
        val.labels = np.array([folder_class(index, val_classes[i]) for i in val.labels], np.int32)
        val.class_names = list(class_names)
        return Dataset(class_names, train, val, listed_with=listed_with)
    train_idx, val_idx = stratified_split(train.labels, val_split, seed)
    return Dataset(class_names, train.subset(train_idx), train.subset(val_idx), val_split=val_split,
                   listed_with=listed_with)


VALIDATION_NAMES = ("val", "validation", "valid")  # as the common dataset layouts name the held-out part
SPLIT_NAMES = ("train", "test") + VALIDATION_NAMES


def split_parts(data_dir):
    """{part: folder name} for the sub-folders of `data_dir` named as a split's parts, in any
    case ("Train/", "VAL/": datasets made on Windows or macOS). Of two that differ in case only,
    the lower-case one is the part and the other is left out as any other folder."""
    parts = {}
    for name in class_folders(data_dir):
        part = name.lower()
        if part in SPLIT_NAMES and (part not in parts or name == part):
            parts[part] = name
    return parts


def _split_folders(data_dir):
    """(train/, its validation folder or None, test/ or None) for a layout split in parts:
    train/ beside a validation folder or test/, alone, or holding class folders itself (and no
    images of its own); None for class folders, one of which may be named "train" (or "test",
    "val": a train/ of images is a class, whatever is beside it). Part names match in any case."""
    present = split_parts(data_dir)
    if "train" not in present:
        return None
    train = data_dir / present["train"]
    if loose_images(train) and not class_folders(train):  # images of its own: a class named "train" among classes
        return None
    held_out = next((data_dir / present[name] for name in VALIDATION_NAMES if name in present), None)
    test = data_dir / present["test"] if "test" in present else None
    parts = held_out is not None or test is not None or not set(class_folders(data_dir)) - set(present.values())
    if not parts and not (class_folders(train) and not loose_images(train)):
        return None
    return train, held_out, test


def loose_images_warning(folder, reader):
    """The warning for images beside the class folders, which belong to no class and are left
    out (`reader`: "fine-tuning", "evaluate"), or None when there are none, or no layout at all
    (the error that follows says so)."""
    folder = Path(folder)
    if not folder.is_dir() or not class_folders(folder):
        return None
    loose = loose_images(folder)
    if not loose:
        return None
    return (f"{folder}: {len(loose)} image(s) beside the class folders belong to no class and are left out "
            f"(e.g. {loose[0].name}); {reader} reads <class>/<images>")


def _warn_of_loose_images(folder):
    said = loose_images_warning(folder, "fine-tuning")
    if said:
        warn_user(said)


class BrokenFiles:
    """A thread-safe ledger of files that could not be used, with a tolerance. `say`, if given,
    is called with each file's message the first time it is found, for the first SAID_AT_MOST
    files (all of them are in the ledger)."""

    SAID_AT_MOST = 20

    def __init__(self, max_fraction=0.1, say=None, total=None):
        self.max_fraction, self.say, self.total = max_fraction, say, total
        self.errors = {}
        self._lock = threading.Lock()

    def add(self, path, message):
        with self._lock:
            new = str(path) not in self.errors
            self.errors[str(path)] = message
            count = len(self.errors)
        if new and self.say is not None and count <= self.SAID_AT_MOST:
            more = "; more are only listed in broken_files.json" if count == self.SAID_AT_MOST else ""
            self.say(f"skipped: {message}{more}")

    def check(self, total=None):
        """Raise DataError when more than `max_fraction` of `total` files (default: the
        ledger's `total`, all there are) are broken. With the ledger's own total it may be
        called while files are still being read: once over, a ledger never gets back under."""
        total = total or self.total
        if total and len(self.errors) > self.max_fraction * total:
            example = next(iter(self.errors.values()))
            raise DataError(
                f"{len(self.errors)} of {total} images are broken, over the {self.max_fraction:.0%} --max-broken allows; "
                f"e.g. {example}"
            )

    def write(self, path):
        rows = [{"path": p, "error": e} for p, e in sorted(self.errors.items())]
        write_text(path, json_text(rows, indent=1) + "\n", DataError)


def load_prepared(path, ledger):
    """(256, 256, 3) float32 mean-subtracted image, or None (recorded in the ledger) if broken."""
    try:
        return resize_and_subtract_mean(read_image(path))
    except ImageError as error:
        ledger.add(path, str(error))
        return None


def _refuse_a_split_as_classes(folder):
    """train/ beside val/ or test/ (or alone), each holding class folders, are a split's parts as
    finetune reads them (`_split_folders`), not classes: their images would be labelled 'train'
    and 'val', unsaid, also with other folders beside them (an empty one, an old class). A
    train/ of sub-folders beside other classes only is a class (finetune reads it as the data)."""
    split = _split_folders(folder)
    # (A stray photo beside train/'s classes changes nothing: finetune reads the split, and warns of it.)
    if split is None or not class_folders(split[0]):
        return
    parts = [part for part in split if part is not None]
    others = [name for name in class_folders(folder) if name not in {part.name for part in parts}]
    if len(parts) == 1 and others:  # train/ of sub-folders among classes (bus/, car/): a class, read whole
        return
    commands = "; ".join(f"alexft features {part} -o {part.name}.npz" for part in parts)
    beside = f" (and {quoted_names(others)} beside them)" if others else ""
    raise DataError(f"{folder}: holds {', '.join(part.name + '/' for part in parts)}, the parts of a split, each with class "
                    f"folders{beside}; labelled as classes, every image would be labelled by its folder there: give each "
                    f"part alone ({commands})")


def images_with_labels(inputs, say=None):
    """(paths, labels, class_names) for image files or folders; labels and class names are
    None unless `inputs` is one folder laid out as <class>/<images>: sub-folders, and no images
    beside them (those would belong to no class: the folder is then read as plain images). A
    class folder without images keeps its class (the labels mean the same in every shard and
    run) and is named in a warning, as evaluate does.
    `say`: as for `find_images`, about plain folders."""
    inputs = distinct_inputs(path_list(inputs), say)  # (URLs and standard input pass through as image sources)
    one_folder = len(inputs) == 1 and is_folder(inputs[0])
    if one_folder and class_folders(inputs[0]) and not loose_images(inputs[0]):
        _refuse_a_split_as_classes(Path(inputs[0]))
        class_names = class_folders(inputs[0])
        files = list_labelled(inputs[0], class_names, empty_ok=True)
        return files.paths, files.labels, class_names
    return find_images(inputs, say=say), None, None
