"""Measuring a model on labelled images: Caffe's centre and 10-crop protocols side by side.

One pass computes the ten crops' probabilities; the centre crop is one of them (view 4), so
both protocols are reported from the same forward passes.
"""
import collections
import csv
import difflib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import imagenet
from .atomic import (check_writable, json_text, missing_folders, remove_empty, remove_stale_temporaries,
                     temporary_path, write_failure_cause)
from .data import (DataError, LabelledFiles, class_folders, class_index, folder_class, list_labelled,
                   loose_images_warning, quoted_names, SPLIT_NAMES, VALIDATION_NAMES)
from .errors import AlexftError, warn_user
from .pipeline import check_count, check_flags
from .python_words import keywords_hinted, said_in_python_words
from .preprocess import holds_images, is_within  # noqa: F401  (is_within: the command line takes it from here)
from .predict import as_predictor, predict_views
from .weights.formats import default_class_names

CENTRE_VIEW = 4


@dataclass
class Predictions:
    """Per-image results of one evaluation pass over labelled files."""

    paths: list  # the images that could be used
    labels: np.ndarray
    centre: np.ndarray  # (n, classes) probabilities of the centre crop
    ten_crop: np.ndarray  # (n, classes) mean of the ten crops' probabilities, or None
    skipped: dict  # path -> error


# The least probability a log loss takes (a softmax can round to 0): the same for evaluate and for
# a run's validation, so that evaluate --list RUN/val.txt gives the run's own validation loss.
PROBABILITY_FLOOR = 1e-12


def labelled_folder(data_dir, class_names):
    """DATA/<class>/... with folders matched to the model's classes: by class name, or, for a
    1000-class model, by WordNet id as ImageNet's own folders are named (n02123045/)."""
    folders = class_folders(data_dir)
    if not folders:
        raise DataError(f"{data_dir}: no class sub-folders; expected {data_dir}/<class name>/<images>")
    index = _model_class_index(class_names)
    hint = _split_hint(data_dir, folders)  # (an empty train/ beside val/ is a part still)
    folders = _without_empty_strangers(data_dir, folders, index)
    _refuse_foreign_classes(data_dir, folders, class_names, index, hint)
    _say_folders_of_one_class(data_dir, folders, index, class_names)
    files = list_labelled(data_dir, folders, empty_ok=True)  # a class with no images has no figures, not an error
    return _labelled_as_the_model(files, class_names, index)


def _without_empty_strangers(data_dir, folders, index):
    """The folders less those that are not the model's classes and hold no image: nothing to
    score, so left out with a warning (as an empty class of the model is), not refused."""
    empty = [name for name in folders if folder_class(index, name) is None and not holds_images(Path(data_dir) / name)]
    if not empty:
        return folders
    warn_user(f"{data_dir}: {len(empty)} folder(s) with no images and named as no class of this model, left out: "
              f"{quoted_names(empty)}")
    left_out = set(empty)
    kept = [name for name in folders if name not in left_out]
    if not kept:
        raise DataError(f"{data_dir}: none of its class folders holds an image")
    return kept


def as_the_models_classes(files, class_names):
    """Labelled files whose labels index `class_names`, the model's: files that know their own
    classes (a load_dataset split) are matched to the model's by name, as folders are; a split
    of digit_7..digit_9 scored against digit_0..digit_9 had read 0 as digit_0."""
    names = getattr(files, "class_names", None)  # (LabelledFiles or alike)
    if names is None:
        if len(files) and files.labels.max() >= len(class_names):
            raise DataError(f"the labels go up to {files.labels.max()}; this model has {len(class_names)} classes")
        return files
    if list(names) == list(class_names):
        return files
    index = _model_class_index(class_names)
    _refuse_foreign_classes(_their_folder(files.paths, names), names, class_names, index)
    return _labelled_as_the_model(files, class_names, index)


def _their_folder(paths, names):
    """The folder labelled files were listed from, the parent of their class folders, to name in a message."""
    try:
        common = Path(os.path.commonpath([Path(path).parent for path in paths]))
    except ValueError:  # none, or on different drives
        return "the labelled files"
    return common.parent if common.name in names else common  # (all of one class)


def _model_class_index(class_names):
    """{name: model class index}; a 1000-class model's WordNet ids too, as ImageNet's own folders are named."""
    index = class_index(class_names)
    if len(class_names) == len(imagenet.wordnet_ids()):
        index.update({wordnet_id: position for position, wordnet_id in enumerate(imagenet.wordnet_ids())})
    return index


def _refuse_foreign_classes(where, names, class_names, index, hint=""):
    """Classes that are not the model's (or name two of its classes) are refused, all named at once."""
    imagenet_model = len(class_names) == len(imagenet.wordnet_ids())
    _refuse_ambiguous_folders(where, names, class_names, imagenet_model)
    unknown = [name for name in names if folder_class(index, name) is None]
    if unknown:
        near = (_closest_hint(unknown, class_names, imagenet.wordnet_ids() if imagenet_model else ())
                + _case_hint(unknown, class_names))
        raise DataError(f"{where}: folder(s) {quoted_names(unknown)} are not classes of this model "
                        f"(e.g. {quoted_names(class_names[:3])}" +
                        (", or WordNet ids such as 'n01440764')" if len(class_names) == 1000 else ")") +
                        near + _unnamed_hint(class_names)
                        + _fine_tune_hint(imagenet_model and not near and len(unknown) == len(names)) + hint)


def _fine_tune_hint(classes_of_their_own):
    """The ImageNet model given folders of the user's own classes, none near one of its own (not
    typos): the way to score such classes."""
    return ("; none is an ImageNet class: evaluate a model fine-tuned on these folders (alexft finetune DATA_DIR, "
            "then its run's model.npz as the weights)" if classes_of_their_own else "")


def _unnamed_hint(class_names):
    """A model whose classes are only numbered (a weights file without names; a Keras model
    copied by keras.models.clone_model, which keeps no attributes of its own)."""
    if len(class_names) == len(imagenet.wordnet_ids()) or list(class_names) != default_class_names(len(class_names)):
        return ""
    return ("; the model names no classes: give it their names (weights convert --class-names FILE; in Python "
            "model.class_names = [...], which keras.models.clone_model does not copy)")


def _labelled_as_the_model(files, class_names, index):
    labels = np.array([folder_class(index, files.class_names[label]) for label in files.labels], np.int32)
    return LabelledFiles(files.paths, labels, list(class_names))


def _refuse_ambiguous_folders(data_dir, folders, class_names, imagenet_model):
    """A folder named as two classes ("crane", ImageNet's bird and machine) would be scored as
    one of them, unsaid: refused, naming both and how to tell them apart."""
    positions_of = _repeated_names(class_names)
    said = []
    for folder in folders:
        positions = positions_of.get(folder)
        if positions:
            which = " and ".join(str(position) for position in positions)
            if imagenet_model:
                ids = [imagenet.wordnet_ids()[position] for position in positions]
                advice = f"name the folder by the WordNet id of the one it holds ({' or '.join(ids)})"
            else:
                advice = "give the classes distinct names (alexft weights convert --class-names)"
            said.append(f"folder {folder!r} names {len(positions)} classes of this model ({which}); {advice}")
    if said:  # all at once: a fix for one should not meet the next
        raise DataError(f"{data_dir}: " + "; ".join(said))


def _repeated_names(class_names):
    """{name: its positions} for the names several classes share."""
    positions_of = collections.defaultdict(list)
    for position, name in enumerate(class_names):
        positions_of[name].append(position)
    return {name: positions for name, positions in positions_of.items() if len(positions) > 1}


def _case_hint(unknown, class_names):
    """Folders named as classes but for their case ('Digit_0' for 'digit_0'): matched exactly, so said."""
    by_case = {}
    for name in class_names:
        by_case.setdefault(name.casefold(), name)
    meant = [by_case[name.casefold()] for name in unknown if name.casefold() in by_case]
    if not meant:
        return ""
    repeated = _repeated_names(class_names)
    shared = [name for name in meant if name in repeated]
    return (f"; class names match in their case: did you mean {quoted_names(meant)}?"
            + (f" ({quoted_names(shared)} names several classes: name such a folder by its WordNet id)" if shared else ""))


def _closest_hint(unknown, class_names, wordnet_ids=(), shown=3):
    """For folders named near a class ('tabby_cat', 'tabby' or 'Space Shuttle' for ImageNet's
    'tabby, tabby cat' and 'space shuttle'), the class names they may mean: one of a class's
    comma-separated synonyms, with '_' or '-' for spaces and in any case, else a close spelling;
    `wordnet_ids` too, for an ImageNet model ('N02123045'). Folders only their case keeps from a
    class are _case_hint's."""
    by_case = {name.casefold() for name in class_names}
    candidates = {}  # a name or synonym, as written loosely -> the class names it is part of
    for name in (*class_names, *wordnet_ids):
        for synonym in {name, *name.split(", ")}:
            candidates.setdefault(_loosely(synonym), []).append(name)
    said = []
    for folder in unknown[:4 * shown]:  # (a wrong data folder may hold thousands: a few examples do)
        close = [] if folder.casefold() in by_case else \
            difflib.get_close_matches(_loosely(folder), list(candidates), n=1, cutoff=0.8)
        if close:
            meant = list(dict.fromkeys(candidates[close[0]]))
            said.append(f"{' or '.join(map(repr, meant[:2]))} for {folder!r}")
    return f"; closest class names: {', '.join(said[:shown])}" if said else ""


def _loosely(name):
    return " ".join(name.casefold().replace("_", " ").replace("-", " ").split())


def _say_folders_of_one_class(data_dir, folders, index, class_names):
    """Two folders naming one class (its WordNet id and its name, or two Unicode forms of it)
    are scored as that class together: said, as the counts would otherwise surprise."""
    folders_of = collections.defaultdict(list)
    for folder in folders:
        folders_of[folder_class(index, folder)].append(folder)
    for position, named in sorted(folders_of.items()):
        if len(named) > 1:
            warn_user(f"{data_dir}: folders {quoted_names(named)} {'both' if len(named) == 2 else 'all'} name class "
                      f"{class_names[position]!r}: their images are scored together")


def _split_hint(data_dir, folders):
    """A train/val (or train/test) layout given whole: the images to measure are in one part
    (part names in any case, as fine-tuning reads them), other folders beside them or not."""
    by_part = {name.lower(): name for name in folders}
    held_out = [by_part[part] for part in ("test",) + VALIDATION_NAMES if part in by_part]
    if held_out and (set(by_part) <= set(SPLIT_NAMES) or "train" in by_part):
        parts = sorted(name for name in folders if name.lower() in SPLIT_NAMES)
        return f"; for a layout of {', '.join(parts)}, evaluate " + " or ".join(
            str(Path(data_dir) / name) for name in held_out)
    return ""


def labelled_list(list_file, root, num_classes=None):
    """Caffe's list format (ILSVRC val.txt): `relative/path label_index` per line; labels are
    checked against `num_classes` when it is given. A list none of whose files is under
    `root` is refused: the images are elsewhere (the usual cause: --root not given)."""
    paths, labels = [], []
    # (names that are not UTF-8 are their own bytes, as a run's val.txt writes them; a Windows
    # editor's byte-order mark is not part of the first name)
    raw = Path(list_file).read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{list_file}: UTF-16 text (as Windows' Notepad saves 'Unicode'); save it as UTF-8")
    if b"\0" in raw[:4096]:  # an image (or other binary file) given where the list goes: no line of it is text
        from .image_files import signature_format

        kind = signature_format(raw)
        raise DataError(f"{list_file}: {f'a {kind} image' if kind else 'binary data'}, not a text list of "
                        "'path label' lines")
    text = raw.decode("utf-8-sig", errors="surrogateescape")
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        line = line.rstrip()
        cut = max(line.rfind(" "), line.rfind("\t"))  # the last space, as Caffe's reader; or a tab
        relative, label = line[:max(cut, 0)].rstrip(" \t"), line[cut + 1:]  # (spaces lined up: one separator)
        if not relative or not label.lstrip("-").isdigit() or not 0 <= int(label) < (num_classes or float("inf")):
            expected = f"a label in 0..{num_classes - 1}" if num_classes else "a class index (0 or more) as its label"
            raise DataError(f"{list_file}:{number}: expected 'path label' with {expected}, got {line!r}")
        paths.append(Path(root) / relative)
        labels.append(int(label))
    if not paths:
        raise DataError(f"{list_file}: no images listed")
    looked_at = paths[:1000]  # enough to tell a wrong root, without a stat per image of a long list
    if not any(path.exists() for path in looked_at):
        which = "its listed images" if len(looked_at) == len(paths) else f"the first {len(looked_at):,} images it lists"
        raise DataError(f"{list_file}: none of {which} is in {Path(root).absolute()} (the first: {paths[0]}); "
                        "--root names the folder the listed paths are relative to")
    return LabelledFiles(paths, np.array(labels, np.int32))


def predict_labelled(predictor, files, ten_crop=False, batch_size=32, progress=None, on_skip=None):
    """Run the model once over `files`; return Predictions (bad files skipped and named).
    `on_skip(message)` is told of each bad file as it is met: a long run, or one interrupted,
    names them before its end."""
    used, labels, centre, averaged, skipped = [], [], [], [], {}
    results = predict_views(predictor, files.paths, ten_crop=ten_crop, batch_size=batch_size, progress=progress,
                            desc="evaluate")
    for (path, views, error), label in zip(results, files.labels):
        if error is not None:
            skipped[str(path)] = error
            if on_skip is not None:
                on_skip(error)
            continue
        used.append(path)
        labels.append(label)
        centre.append(views[CENTRE_VIEW] if ten_crop else views[0])
        if ten_crop:
            averaged.append(views.mean(axis=0))
    if not used and not skipped:  # (a split of val_split=0)
        raise DataError("no images to evaluate: the labelled files given hold none (a split of val_split=0 holds none)")
    if not used:
        raise DataError(f"no usable images: none of the {len(skipped)} could be read (the first: {next(iter(skipped.values()))})")
    return Predictions(used, np.array(labels), np.array(centre), np.array(averaged) if ten_crop else None, skipped)


def metrics(probabilities, labels, class_names):
    """Top-1/top-5, mean per-class accuracy, log loss, per-class P/R/F1, confusion matrix."""
    count, classes = probabilities.shape
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((classes, classes), np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    support = confusion.sum(axis=1)
    true_positive = np.diag(confusion)
    precision = _ratio(true_positive, confusion.sum(axis=0))
    recall = _ratio(true_positive, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    present = support > 0
    ranks = (probabilities > probabilities[np.arange(count), labels][:, None]).sum(axis=1)
    result = dict(
        images=int(count),
        top1=float((predicted == labels).mean()),
        top5=float((ranks < 5).mean()) if classes > 5 else None,  # (of five classes or fewer: always 1)
        mean_class_accuracy=float(recall[present].mean()),
        # (at least 0: a float32 softmax can give 1 + 1e-7 for a sure answer, printed as -0.0000)
        log_loss=max(0.0, float(-np.log(np.maximum(probabilities[np.arange(count), labels], PROBABILITY_FLOOR)).mean())),
        per_class=[dict(name=name, precision=float(p), recall=float(r), f1=float(f), support=int(s))
                   for name, p, r, f, s in zip(class_names, precision, recall, f1, support) if s or confusion[:, class_names.index(name)].any()],
        most_confused=_most_confused(confusion, class_names),
    )
    return result, confusion


def _ratio(numerator, denominator):
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def _most_confused(confusion, class_names, top=10):
    off_diagonal = confusion.copy()
    np.fill_diagonal(off_diagonal, 0)
    pairs = np.argwhere(off_diagonal > 0)
    ordered = sorted(pairs.tolist(), key=lambda pair: -off_diagonal[pair[0], pair[1]])[:top]
    return [dict(true=class_names[t], predicted=class_names[p], count=int(off_diagonal[t, p])) for t, p in ordered]


@keywords_hinted
def evaluate(predictor, files, ten_crop=False, batch_size=32, progress=None, report=None):
    """Evaluate on labelled files; return the metrics dict (centre, and ten_crop when asked).

    `files`: LabelledFiles (e.g. `load_dataset(...).val`), or a folder laid out as
    <class>/<images> whose folder names are the predictor's classes, as `alexft evaluate DATA` reads.
    """
    check_count(batch_size, "batch_size")
    check_flags(ten_crop=ten_crop)
    predictor = as_predictor(predictor)  # (a Keras model of alexft's: alexft.AlexNet's, a loaded .keras file)
    if isinstance(files, (str, os.PathLike)):
        folder = Path(files)
        if report is not None and is_within(Path(report), folder):  # it would be read as a class next time
            raise ValueError(f"report {report} is inside {folder}, the class folders being evaluated; "
                             "choose a folder outside it")
        files = labelled_folder(folder, predictor.class_names)
        said = loose_images_warning(folder, "evaluate")
        if said:
            warn_user(said)
    elif not (hasattr(files, "paths") and hasattr(files, "labels")):  # LabelledFiles or alike
        raise TypeError(f"evaluate takes a folder of <class>/<images> or labelled files (e.g. "
                        f"alexft.load_dataset(folder).val), not {type(files).__name__}")
    else:
        files = as_the_models_classes(files, predictor.class_names)
    with said_in_python_words({}):  # (--report as report)
        if report is not None:  # before the work, which would be lost (it was refused after it)
            check_report_folder(report)
        evaluation = measure(predictor, files, ten_crop, batch_size, progress)
        if report is not None:
            evaluation.write_report(report)
    return evaluation.summary


@dataclass
class Evaluation:
    """The figures of one pass (`summary`) and what the report shows beyond them."""

    summary: dict
    predictions: Predictions
    probabilities: np.ndarray  # the protocol the report shows: the ten crops when run
    confusion: np.ndarray
    class_names: list

    def write_report(self, folder):
        write_report(Path(folder), self.summary, self.predictions, self.probabilities, self.confusion,
                     self.class_names)


def measure(predictor, files, ten_crop=False, batch_size=32, progress=None, on_skip=None):
    """One pass over labelled files: an Evaluation, its report not written yet (the command
    prints the figures first, so a report that cannot be written loses none of them).
    `on_skip`: as predict_labelled's."""
    predictions = predict_labelled(predictor, files, ten_crop, batch_size, progress, on_skip)
    names = predictor.class_names
    said = _classes_left_unread(files.labels, predictions.labels, names)
    if said:
        warn_user(said)
    centre, confusion = metrics(predictions.centre, predictions.labels, names)
    summary = dict(images=len(predictions.paths), skipped=len(predictions.skipped), skipped_files=predictions.skipped,
                   centre=centre)
    probabilities = predictions.centre
    if ten_crop:
        summary["ten_crop"], confusion = metrics(predictions.ten_crop, predictions.labels, names)
        probabilities = predictions.ten_crop
    return Evaluation(summary, predictions, probabilities, confusion, names)


def _classes_left_unread(listed, used, class_names, shown=3):
    """The warning for classes whose every listed image could not be read, or None: they are
    in no figure (an empty folder is said when listed), and the mean class accuracy, over the
    classes scored, would read as if they were not asked."""
    listed_counts = collections.Counter(np.asarray(listed).tolist())
    unread = sorted(set(listed_counts) - set(np.asarray(used).tolist()))
    if not unread:
        return None
    named = ", ".join(f"{class_names[label]!r} ({listed_counts[label]} image{'s' if listed_counts[label] > 1 else ''})"
                      for label in unread[:shown]) + (", ..." if len(unread) > shown else "")
    return (f"{len(unread)} class(es) of which no image could be read: {named}; they are in no figure "
            f"(the mean class accuracy is over the {len(set(np.asarray(used).tolist()))} classes scored)")


REPORT_FILES = ("metrics.json", "per_class.csv", "misclassified.csv", "confusion_matrix.csv", "confusion_matrix.png",
                "top_losses.png")


def check_report_folder(folder):
    """Refuse, before any work, a report folder that cannot be written or holds files of the
    user's under a report file's name."""
    check_writable(Path(folder) / "metrics.json")
    refuse_foreign_files(folder)


def refuse_foreign_files(folder):
    """A report replaces an earlier report's files, never a file of the user's that has one of
    their names (your own metrics.json): a folder holding such a file without an alexft
    metrics.json is refused."""
    folder = Path(folder)
    taken = [name for name in REPORT_FILES if (folder / name).exists()]
    if taken and not _earlier_report(folder / "metrics.json"):
        one = len(taken) == 1
        raise AlexftError(f"{folder}: {', '.join(taken)} there {'is' if one else 'are'} not from an alexft report, and "
                          f"the report would replace {'it' if one else 'them'}; choose another --report folder")


def _earlier_report(metrics):
    try:
        written = json.loads(metrics.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(written, dict) and {"images", "centre", "report_protocol"} <= written.keys()


def write_report(folder, summary, predictions, probabilities, confusion, class_names):
    """The report's files, made in a scratch folder inside `folder` and moved over the previous
    report's only when all are written: Ctrl-C, a kill or a full disk midway leaves the earlier
    report whole, never one file of each run."""
    folder = Path(folder)
    refuse_foreign_files(folder)
    made = missing_folders(folder)  # removed again when no report is written: no empty folder is left
    try:
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(folder, shared=True, prefix="report")  # what a killed run left
        scratch = temporary_path(folder / "report")
        scratch.mkdir()
    except OSError as failure:
        remove_empty(made)
        raise AlexftError(f"{folder}: the report could not be written ({write_failure_cause(failure)})") from None
    written = False
    try:
        _write_report_files(scratch, summary, predictions, probabilities, confusion, class_names)
        for name in REPORT_FILES:
            os.replace(scratch / name, folder / name)
        written = True
    except OSError as failure:
        kept = ("an earlier report there is as it was" if not made else
                "nothing was left there" if not any(folder.glob("[!.]*")) else "part of it is there")
        raise AlexftError(f"{folder}: the report could not be written ({write_failure_cause(failure)}); {kept}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if not written:
            remove_empty(made)


def _write_report_files(folder, summary, predictions, probabilities, confusion, class_names):
    from . import plots

    # The per-image files and figures show one protocol, the ten crops when they were run;
    # each says which (metrics.json holds both protocols' figures, each under its name).
    protocol = "ten_crop" if "ten_crop" in summary else "centre"
    (folder / "metrics.json").write_text(json_text(dict(summary, report_protocol=protocol), indent=1)
                                         + "\n", encoding="utf-8")
    with open(folder / "per_class.csv", "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        writer = csv.DictWriter(handle, ["protocol", "name", "precision", "recall", "f1", "support"])
        writer.writeheader()
        writer.writerows(dict(row, protocol=protocol) for row in summary[protocol]["per_class"])
    predicted = probabilities.argmax(axis=1)
    losses = -np.log(np.maximum(probabilities[np.arange(len(predicted)), predictions.labels], PROBABILITY_FLOOR))
    wrong = np.flatnonzero(predicted != predictions.labels)
    with open(folder / "misclassified.csv", "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        writer = csv.writer(handle)
        writer.writerow(["protocol", "path", "true", "predicted", "p_true", "p_predicted", "loss"])
        for index in wrong[np.argsort(-losses[wrong])]:
            writer.writerow([protocol, str(predictions.paths[index]), class_names[predictions.labels[index]], class_names[predicted[index]],
                             f"{probabilities[index, predictions.labels[index]]:.6f}", f"{probabilities[index, predicted[index]]:.6f}",
                             f"{losses[index]:.6f}"])
    # The classes that occur, as true labels or answers, as in the figure: a 1000-class model
    # measured on 5 classes had a 2 MB table of 1000x1000, nearly all of it zeros.
    used = sorted(set(predictions.labels.tolist()) | set(predicted.tolist()))
    with open(folder / "confusion_matrix.csv", "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        writer = csv.writer(handle)  # rows: true class, columns: predicted class, counts
        writer.writerow([f"true \\ predicted ({protocol})"] + [class_names[i] for i in used])
        writer.writerows([class_names[i]] + row for i, row in zip(used, confusion[np.ix_(used, used)].tolist()))
    plots.confusion_matrix(confusion[np.ix_(used, used)], [class_names[i] for i in used], folder / "confusion_matrix.png",
                           protocol)
    worst = np.argsort(-losses)[:16]
    captions = [f"{protocol} true: {plots.short_label(class_names[predictions.labels[i]], 30)}\n"
                f"pred: {plots.short_label(class_names[predicted[i]], 30)} (p {probabilities[i, predicted[i]]:.2f})"
                for i in worst]
    plots.contact_sheet([predictions.paths[i] for i in worst], captions, folder / "top_losses.png")
