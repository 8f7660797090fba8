"""`alexft evaluate` and `alexft features` on a model fine-tuned on scikit-learn's digits."""
import csv
import json
import os
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from alexft import weights
from alexft.weights import imagenet_class_names
from alexft.data import DataError
from alexft.evaluation import labelled_folder, labelled_list, metrics
from alexft import model as network
from alexft.features import extract_features, feature_recipe, layer_outputs
from alexft.model import InferenceFunction, build_alexnet, truncated
from alexft.preprocess import image_views
from alexft.cli import main
from fixtures import alexft_notes, photo_paths, write_digits_folder
from test_preprocess import bad_images


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


HELD_OUT = 100


@pytest.fixture(scope="module")
def held_out_folder(tmp_path_factory, digits_folder):
    """10 digits per class that fc8_run never saw (it trained on the first 30 of the same shuffle)."""
    folder = write_digits_folder(tmp_path_factory.mktemp("held_out") / "data", per_class=HELD_OUT // 10, start=30)
    seen = {path.relative_to(digits_folder) for path in digits_folder.rglob("*.png")}  # named by sample index
    assert seen and not seen & {path.relative_to(folder) for path in folder.rglob("*.png")}
    return folder


@pytest.fixture(scope="module")
def evaluation(fc8_run, held_out_folder, tmp_path_factory):
    _, run_folder = fc8_run
    report = tmp_path_factory.mktemp("report")
    result = run("evaluate", held_out_folder, "--weights", run_folder / "model.npz", "--ten-crop", "--report", report, "--json")
    assert result.exit_code == 0, result.output
    assert f"report written to {report}" in result.stderr  # where it went, off stdout's JSON
    return json.loads(result.stdout), report, run_folder / "model.npz"


@pytest.fixture(scope="module")
def centre_evaluation(fc8_run, held_out_folder, tmp_path_factory):
    """The same evaluation of the centre crops alone, as --json prints it (the centre figures of
    `evaluation` differ from these in their last digits: its batches hold the ten crops)."""
    _, run_folder = fc8_run
    report = tmp_path_factory.mktemp("centre_report")
    result = run("evaluate", held_out_folder, "--weights", run_folder / "model.npz", "--report", report, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_top1_equals_the_accuracy_of_classify_json(evaluation, held_out_folder):
    summary, _, model = evaluation
    assert summary["images"] == HELD_OUT and summary["skipped"] == 0
    for protocol, flags in (("centre", []), ("ten_crop", ["--ten-crop"])):
        result = run("classify", held_out_folder, "--json", "--top-k", 1, "--weights", model, *flags)
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        correct = [line["predictions"][0]["label"] == line["path"].split("/")[-2] for line in lines]
        assert len(lines) == HELD_OUT
        assert summary[protocol]["top1"] == pytest.approx(np.mean(correct))


def test_metrics_are_consistent(evaluation):
    summary, _, model = evaluation
    # What was measured with, so that two results saved from --json can be told apart (a helper's could not).
    assert summary["measured_with"] == {"weights": str(model), "runtime": "tensorflow", "precision": "float32"}
    for protocol in ("centre", "ten_crop"):
        m = summary[protocol]
        assert 0 <= m["top1"] <= m["top5"] <= 1
        assert sum(row["support"] for row in m["per_class"]) == HELD_OUT
        recalls = [row["recall"] for row in m["per_class"]]
        assert m["mean_class_accuracy"] == pytest.approx(np.mean(recalls))
        assert m["top1"] > 0.6  # a trained model, on images it never saw (0.86 here); chance is 0.1


def test_metrics_against_hand_computed_values():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4], [0.3, 0.3, 0.4], [0.2, 0.7, 0.1]])
    labels = np.array([0, 2, 2, 1])
    result, confusion = metrics(probabilities, labels, ["a", "b", "c"])
    assert result["top1"] == pytest.approx(0.75) and result["top5"] is None
    five = np.eye(5)[[0, 1, 2, 3, 4, 0]] * 0.5 + 0.1  # five classes: every label is among the top five
    assert metrics(five, np.array([1, 1, 2, 3, 4, 4]), list("abcde"))[0]["top5"] is None  # (it said 100%)
    assert metrics(np.hstack([five, np.zeros((6, 1))]), np.array([5, 1, 2, 3, 4, 4]), list("abcdef"))[0]["top5"] == \
        pytest.approx(5 / 6)
    assert confusion.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert result["mean_class_accuracy"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert result["log_loss"] == pytest.approx(-np.mean(np.log([0.7, 0.4, 0.4, 0.7])))
    b = next(row for row in result["per_class"] if row["name"] == "b")
    assert (b["precision"], b["recall"], b["support"]) == (pytest.approx(0.5), pytest.approx(1.0), 1)
    assert result["most_confused"] == [{"true": "c", "predicted": "b", "count": 1}]
    # A float32 softmax may give 1 + 1e-7 for a sure answer: the log loss printed -0.0000.
    sure, _ = metrics(np.array([[np.float32(1.0000001), 0.0], [0.0, np.float32(1.0000001)]]), np.array([0, 1]), ["a", "b"])
    assert sure["log_loss"] == 0.0 and f"{sure['log_loss']:.4f}" == "0.0000"


def test_report_files_are_well_formed(evaluation):
    summary, report, _ = evaluation
    assert json.loads((report / "metrics.json").read_text())["ten_crop"]["top1"] == summary["ten_crop"]["top1"]
    assert json.loads((report / "metrics.json").read_text())["measured_with"] == summary["measured_with"]  # the record kept
    with open(report / "per_class.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["name"] for row in rows] == [f"digit_{d}" for d in range(10)]
    # Every file says which protocol it shows: the ten crops, which were asked for.
    assert {row["protocol"] for row in rows} == {"ten_crop"}
    assert json.loads((report / "metrics.json").read_text())["report_protocol"] == "ten_crop"
    with open(report / "misclassified.csv") as handle:
        wrong = list(csv.DictReader(handle))
    assert {row["protocol"] for row in wrong} <= {"ten_crop"}
    assert len(wrong) == round(HELD_OUT * (1 - summary["ten_crop"]["top1"]))
    assert all(row["true"] != row["predicted"] for row in wrong)
    losses = [float(row["loss"]) for row in wrong]
    assert losses == sorted(losses, reverse=True)
    with open(report / "confusion_matrix.csv") as handle:
        table = list(csv.reader(handle))
    assert table[0][0] == "true \\ predicted (ten_crop)"
    counts = np.array([row[1:] for row in table[1:]], int)
    assert counts.shape == (10, 10) and counts.sum() == HELD_OUT
    assert np.trace(counts) == round(HELD_OUT * summary["ten_crop"]["top1"])
    confusion = cv2.imread(str(report / "confusion_matrix.png"))
    sheet = cv2.imread(str(report / "top_losses.png"))
    assert confusion.shape[:2] == (800, 800)  # 0.45 inch a cell and 3.5 for labels and the colour bar, at 100 dpi
    assert sheet.shape[:2] == (1088, 960)  # a 4x4 grid of 3x3.4-inch cells at 80 dpi


def test_a_report_on_a_few_of_imagenets_classes_shows_those_that_occur_legibly(canonical_weights_file, tmp_path):
    """A helper's report of 5 true classes under the 1000-class model had a 1000x1000 table
    (2 MB) beside a figure of the 12 classes that occurred, and titles and captions with
    ImageNet's long names that ran into each other. The table now holds the classes the figure
    shows; ticks and captions carry a name's first synonym."""
    import alexft
    from alexft.plots import short_label

    data = tmp_path / "data"
    for wordnet_id, photo in (("n02123045", "chelsea"), ("n01440764", "coffee")):
        (data / wordnet_id).mkdir(parents=True)
        shutil.copy(photo_paths()[photo], data / wordnet_id / f"{photo}.png")
    predictor = alexft.load_predictor(canonical_weights_file, download=False)
    figures = alexft.evaluate(predictor, data, report=tmp_path / "report")
    with open(tmp_path / "report" / "confusion_matrix.csv") as handle:
        table = list(csv.reader(handle))
    with open(tmp_path / "report" / "misclassified.csv") as handle:
        answered = {row["predicted"] for row in csv.DictReader(handle)}
    occurring = {"tabby, tabby cat", "tench, Tinca tinca"} | answered
    assert sorted(table[0][1:]) == sorted(row[0] for row in table[1:]) == sorted(occurring)
    assert sum(int(count) for row in table[1:] for count in row[1:]) == figures["images"] == 2
    assert short_label("great white shark, white shark, man-eater, man-eating shark") == "great white shark"
    assert short_label("tabby, tabby cat") == "tabby, tabby cat"
    assert short_label("a" * 30) == "a" * 23 + "…" and short_label("a" * 30, 30) == "a" * 30


def test_confusion_matrix_grows_for_many_classes(tmp_path):
    from alexft.plots import confusion_matrix

    rng = np.random.default_rng(0)
    confusion_matrix(rng.integers(0, 5, (100, 100)), [f"class number {i}" for i in range(100)], tmp_path / "cm.png")
    assert cv2.imread(str(tmp_path / "cm.png")).shape[:2] == (1900, 1900)


def test_characters_the_font_lacks_are_said_once_in_alexfts_words_not_matplotlibs(tmp_path, monkeypatch):
    """A class named in a script matplotlib's fonts lack ('单') put matplotlib's UserWarning, with
    alexft's source file and line, on stderr twice per report. U+E000 (private use) is in no font."""
    import warnings

    from alexft import plots
    from alexft.plots import confusion_matrix

    names = ["\ue000 private", "plain", "\ue001 two"]
    monkeypatch.setattr(plots, "_GLYPHS_SAID", set())  # (what this process said before: none of them)
    filters = list(warnings.filters)
    with warnings.catch_warnings(record=True) as heard:
        warnings.simplefilter("always")
        with alexft_notes() as said:
            confusion_matrix(np.eye(3, dtype=int), names, tmp_path / "cm.png")
            confusion_matrix(np.eye(3, dtype=int), names, tmp_path / "again.png")
    assert cv2.imread(str(tmp_path / "cm.png")) is not None and cv2.imread(str(tmp_path / "again.png")) is not None
    assert [str(w.message) for w in heard if "Glyph" in str(w.message)] == []
    assert warnings.filters == filters  # (the process's filters, changed in turn with the decoding threads, restored)
    assert len(said) == 1 and said[0].startswith(f"the figures draw {repr(names[0][0] + names[2][0])} of the class names as boxes"), said
    plots._GLYPHS_SAID.discard("\ue000")  # (the process-wide memory: a new character is said again)
    with alexft_notes() as said:
        confusion_matrix(np.eye(3, dtype=int), names, tmp_path / "third.png")
    assert len(said) == 1 and said[0].startswith(f"the figures draw {repr(names[0][0])} of"), said


def test_an_empty_class_folder_is_left_out_of_an_evaluation_with_a_warning(tmp_path, caplog):
    """Measuring, unlike learning, needs no image of every class: one empty folder among many
    is named and left out; the other classes keep their own labels."""
    write_digits_folder(tmp_path / "data", per_class=2, classes=[0, 2])
    for name in ("digit_1", "digit_3"):
        (tmp_path / "data" / name).mkdir()
    class_names = [f"digit_{i}" for i in range(4)]
    with alexft_notes() as said:
        files = labelled_folder(tmp_path / "data", class_names)
    assert sorted(path.parent.name for path in files.paths) == ["digit_0"] * 2 + ["digit_2"] * 2
    assert all(class_names[label] == path.parent.name for path, label in zip(files.paths, files.labels))
    assert said == [f"{tmp_path / 'data'}: 2 class folder(s) with no images: 'digit_1', 'digit_3'"]
    for name in ("digit_0", "digit_2"):
        shutil.rmtree(tmp_path / "data" / name)
        (tmp_path / "data" / name).mkdir()
    with pytest.raises(DataError, match="none of its class folders holds an image"):
        labelled_folder(tmp_path / "data", class_names)


def test_an_empty_folder_that_is_no_class_of_the_model_is_left_out_not_refused(tmp_path):
    """docs/data.md: an empty class folder is named in a warning and left out. One named as no
    class of the model (a folder made ahead, 'empty class') refused the whole evaluation; with
    an image in it, it is still refused, and so is one of photos alexft cannot read."""
    write_digits_folder(tmp_path / "data", per_class=2, classes=[0, 2])
    (tmp_path / "data" / "empty class" / "nested").mkdir(parents=True)
    class_names = [f"digit_{i}" for i in range(3)]
    with alexft_notes() as said:
        files = labelled_folder(tmp_path / "data", class_names)
    assert sorted(path.parent.name for path in files.paths) == ["digit_0"] * 2 + ["digit_2"] * 2
    assert said == [f"{tmp_path / 'data'}: 1 folder(s) with no images and named as no class of this model, left out: "
                    "'empty class'"]
    (tmp_path / "data" / "empty class" / "nested" / "IMG_1.HEIC").write_bytes(b"\0" * 64)
    with pytest.raises(DataError, match="folder\\(s\\) 'empty class' are not classes of this model"):
        labelled_folder(tmp_path / "data", class_names)
    for name in ("digit_0", "digit_2"):
        shutil.rmtree(tmp_path / "data" / name)
    shutil.rmtree(tmp_path / "data" / "empty class" / "nested")
    with pytest.raises(DataError, match="none of its class folders holds an image"):
        labelled_folder(tmp_path / "data", class_names)


def test_folders_match_classes_in_either_unicode_form_and_a_train_val_folder_is_pointed_to_val(tmp_path):
    """A model trained on a Mac's 'café' (decomposed) measured on a Linux copy (composed) was
    told 'café' is not one of its classes, beside an identical-looking 'café'."""
    import unicodedata

    write_digits_folder(tmp_path / "data", per_class=1, classes=[0, 1])
    (tmp_path / "data" / "digit_1").rename(tmp_path / "data" / unicodedata.normalize("NFC", "café"))
    files = labelled_folder(tmp_path / "data", ["digit_0", unicodedata.normalize("NFD", "café")])
    assert files.labels.tolist() == [1, 0]  # café sorts first; its label is the model's
    (tmp_path / "split").mkdir()
    (tmp_path / "data").rename(tmp_path / "split" / "val")
    (tmp_path / "split" / "train").mkdir()
    with pytest.raises(DataError, match=f"are not classes of this model .*; for a layout of train, val, evaluate "
                                        f"{tmp_path / 'split' / 'val'}$"):
        labelled_folder(tmp_path / "split", ["digit_0", "café"])
    (tmp_path / "split" / "val").rename(tmp_path / "split" / "test")
    with pytest.raises(DataError, match=f"; for a layout of test, train, evaluate {tmp_path / 'split' / 'test'}$"):
        labelled_folder(tmp_path / "split", ["digit_0", "café"])
    (tmp_path / "data2" / "DIGIT_0").mkdir(parents=True)  # a class name in another case: named, not guessed
    (tmp_path / "data2" / "DIGIT_0" / "a.png").write_bytes(b"")  # (an empty folder of no class is left out)
    with pytest.raises(DataError, match=r"folder\(s\) 'DIGIT_0' are not classes of this model .*; class names match "
                                        r"in their case: did you mean 'digit_0'\?$"):
        labelled_folder(tmp_path / "data2", ["digit_0", "café"])
    (tmp_path / "split" / "test").rename(tmp_path / "split" / "Valid")  # part names in any case
    with pytest.raises(DataError, match=f"; for a layout of Valid, train, evaluate {tmp_path / 'split' / 'Valid'}$"):
        labelled_folder(tmp_path / "split", ["digit_0", "café"])
    (tmp_path / "split" / "old").mkdir()  # a folder beside the parts (it had hidden the hint)
    (tmp_path / "split" / "old" / "a.png").write_bytes(b"")  # (empty, it would be left out with a warning)
    with pytest.raises(DataError, match=f"'Valid', 'old' are not classes of this model .*; for a layout of "
                                        f"Valid, train, evaluate {tmp_path / 'split' / 'Valid'}$"):
        labelled_folder(tmp_path / "split", ["digit_0", "café"])
    # A folder named as two classes: ImageNet's "crane" is a bird (134) and a machine (517). It
    # was scored as the machine, unsaid.
    write_digits_folder(tmp_path / "cranes", per_class=1, classes=[0])
    (tmp_path / "cranes" / "digit_0").rename(tmp_path / "cranes" / "crane")
    names = imagenet_class_names()
    assert [position for position, name in enumerate(names) if name == "crane"] == [134, 517]
    with pytest.raises(DataError, match=r"folder 'crane' names 2 classes of this model \(134 and 517\); name the folder "
                                        r"by the WordNet id of the one it holds \(n02012849 or n03126707\)$"):
        labelled_folder(tmp_path / "cranes", names)
    (tmp_path / "cranes" / "crane").rename(tmp_path / "cranes" / "n02012849")
    assert labelled_folder(tmp_path / "cranes", names).labels.tolist() == [134]
    (tmp_path / "cranes" / "n02012849").rename(tmp_path / "cranes" / "x")
    with pytest.raises(DataError, match=r"folder 'x' names 2 classes of this model \(0 and 1\); give the classes "
                                        r"distinct names \(alexft weights convert --class-names\)$"):
        labelled_folder(tmp_path / "cranes", ["x", "x", "y"])
    (tmp_path / "cranes" / "y").mkdir()  # two such folders are named at once (they came one at a time)
    with pytest.raises(DataError, match=r": folder 'x' names 2 classes of this model \(0 and 2\); give .*; folder 'y' "
                                        r"names 2 classes of this model \(1 and 3\); give the classes distinct names"):
        labelled_folder(tmp_path / "cranes", ["x", "y", "x", "y"])
    (tmp_path / "cranes" / "y").rmdir()
    (tmp_path / "cranes" / "x").rename(tmp_path / "cranes" / "Crane")  # the case hint led to the refusal above
    with pytest.raises(DataError, match=r"did you mean 'crane'\? \('crane' names several classes: name such a folder by "
                                        r"its WordNet id\)$"):
        labelled_folder(tmp_path / "cranes", names)


def test_folders_named_near_a_class_are_told_its_name_and_two_folders_of_one_class_are_said(tmp_path, caplog):
    """A helper's 'tabby_cat' and 'Space Shuttle' were told of 'tench, Tinca tinca' (the first
    classes); ImageNet's name is 'tabby, tabby cat'. Its WordNet id folder beside an empty
    'sorrel' was scored with it, while a warning called 'sorrel' empty."""
    names = imagenet_class_names()
    data = tmp_path / "data"
    for folder in ("tabby_cat", "tabby", "Space Shuttle", "goldfsh", "kittens"):
        (data / folder).mkdir(parents=True)
        (data / folder / "a.png").write_bytes(b"")  # (a folder of no class with no image is left out, not refused)
    with pytest.raises(DataError) as caught:
        labelled_folder(data, names)
    said = str(caught.value)
    assert said.endswith("; closest class names: 'goldfish, Carassius auratus' for 'goldfsh', 'tabby, tabby cat' for "
                         "'tabby', 'tabby, tabby cat' for 'tabby_cat'; class names match in their case: did you mean "
                         "'space shuttle'?"), said
    assert "kittens" not in said.split("closest class names")[1]  # nothing near it: no guess
    for folder in ("tabby_cat", "tabby", "Space Shuttle", "goldfsh", "kittens"):
        shutil.rmtree(data / folder)
    (data / "N02123045").mkdir()  # a WordNet id in capitals: ImageNet's are lower case
    (data / "N02123045" / "a.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"; closest class names: 'n02123045' for 'N02123045'$"):
        labelled_folder(data, names)
    shutil.rmtree(data / "N02123045")
    write_digits_folder(data, per_class=1, classes=[0, 1])
    (data / "digit_0").rename(data / "n02389026")  # sorrel's WordNet id
    (data / "digit_1").rename(data / "sorrel")
    with alexft_notes() as said:
        files = labelled_folder(data, names)
    assert files.labels.tolist() == [339, 339]
    assert said == [f"{data}: folders 'n02389026', 'sorrel' both name class 'sorrel': their images are scored together"]


def test_list_file_evaluation_matches_the_folder(held_out_folder, tmp_path, evaluation):
    summary, _, model = evaluation
    class_names = weights.load(model).class_names
    files = labelled_folder(held_out_folder, class_names)
    lines = [f"{p.relative_to(held_out_folder).as_posix()} {label}" for p, label in zip(files.paths, files.labels)]
    (tmp_path / "val.txt").write_text("\n".join(lines) + "\n")
    result = run("evaluate", "--list", tmp_path / "val.txt", "--root", held_out_folder, "--weights", model, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["centre"]["top1"] == summary["centre"]["top1"]
    # A label past the model's classes is named with its line, once the model is known.
    (tmp_path / "eleven.txt").write_text(f"{lines[0]}\n{lines[1].split()[0]} 10\n")
    result = run("evaluate", "--list", tmp_path / "eleven.txt", "--root", held_out_folder, "--weights", model)
    assert result.exit_code == 1
    assert f"eleven.txt:2: expected 'path label' with a label in 0..9, got '{lines[1].split()[0]} 10'" in result.stderr
    # --root forgotten: the paths are looked for beside the list, where none is.
    result = run("evaluate", "--list", tmp_path / "val.txt", "--weights", model)
    assert result.exit_code == 1
    assert (f"val.txt: none of its listed images is in {tmp_path} (the first: {tmp_path / lines[0].split()[0]}); "
            "--root names the folder the listed paths are relative to") in result.stderr
    # A Windows editor's byte-order mark, tabs and CRLF line ends: the same list (the mark had
    # become part of the first name, and a tab was refused).
    windows = tmp_path / "windows.txt"
    windows.write_bytes(b"\xef\xbb\xbf" + "".join(f"{line.replace(' ', chr(9))}\r\n" for line in lines).encode())
    lined_up = tmp_path / "lined_up.txt"  # labels in a column: spaces and tabs run together
    lined_up.write_text("".join(f"{line.replace(' ', ' ' * (1 + number % 3) + chr(9) * (number % 2))}\n"
                                for number, line in enumerate(lines)))
    listed = labelled_list(tmp_path / "val.txt", held_out_folder, 10)
    for variant in (windows, lined_up):
        read = labelled_list(variant, held_out_folder, 10)
        assert read.paths == listed.paths and read.labels.tolist() == listed.labels.tolist() and len(read) == len(lines)
    utf16 = tmp_path / "unicode.txt"
    utf16.write_text("\n".join(lines), encoding="utf-16")
    with pytest.raises(DataError, match=r"unicode.txt: UTF-16 text \(as Windows' Notepad saves 'Unicode'\); save it "
                                        r"as UTF-8$"):
        labelled_list(utf16, held_out_folder, 10)
    # An image given as the list: its bytes were quoted as a line ("got '\\udc89PNG'").
    image = next(held_out_folder.rglob("*.png"))
    with pytest.raises(DataError, match=rf"^{re.escape(str(image))}: a PNG image, not a text list of 'path label' lines$"):
        labelled_list(image, held_out_folder, 10)
    (tmp_path / "bad.txt").write_text("digit_0/x.png eleven\n")
    with pytest.raises(DataError, match=r"bad.txt:1: expected 'path label'"):
        labelled_list(tmp_path / "bad.txt", held_out_folder, 10)
    # Without a class count, -1 was called not "a whole-number label"; it is one, but no index.
    (tmp_path / "bad.txt").write_text("digit_0/x.png -1\n")
    with pytest.raises(DataError, match=r"bad.txt:1: expected 'path label' with a class index \(0 or more\) as its "
                                        r"label, got 'digit_0/x.png -1'"):
        labelled_list(tmp_path / "bad.txt", held_out_folder)


def test_a_model_that_names_no_classes_is_said_to_when_folders_are_not_its_classes(fc8_run, small_digits_folder,
                                                                                    tmp_path):
    """keras.models.clone_model keeps no attributes of a model's own: a fine-tuned model's copy
    was told "folder(s) 'digit_0', ... are not classes of this model (e.g. 'class 0', ...)",
    which did not say why."""
    import keras

    import alexft

    _, run_folder = fc8_run
    data = tmp_path / "data"
    for name in ("digit_0", "digit_1"):
        shutil.copytree(small_digits_folder / name, data / name)
    model = alexft.AlexNet(weights=run_folder / "model.npz")
    copy = keras.models.clone_model(model)
    with pytest.raises(DataError, match=r"are not classes of this model \(e.g. 'class 0', 'class 1', 'class 2'\); "
                                        r"the model names no classes: give it their names \(weights convert "
                                        r"--class-names FILE; in Python model.class_names = \[\.\.\.\], which "
                                        r"keras.models.clone_model does not copy\)$"):
        alexft.evaluate(copy, data)
    copy.class_names = model.class_names[:3]  # a wrong count is said, not taken for "no names"
    with pytest.warns(alexft.AlexftWarning, match=r"^model.class_names holds 3 names for the model's 10 outputs: not "
                                                  r"used$"), pytest.raises(DataError, match="names no classes"):
        alexft.evaluate(copy, data)
    copy.class_names = model.class_names
    assert alexft.evaluate(copy, data)["images"] == 12
    with pytest.raises(DataError, match=r"not classes of this model \(e.g. 'digit_0', 'digit_1', 'digit_2'\)$"):
        alexft.evaluate(model, tmp_path / "data" / "..")  # named classes: no such hint


def test_bad_files_are_skipped_and_unknown_folders_refused(fc8_run, small_digits_folder, tmp_path):
    _, run_folder = fc8_run
    data = tmp_path / "data"
    shutil.copytree(small_digits_folder, data)
    (data / "digit_1" / "cut.jpg").write_bytes(bad_images()["cut.jpg"][0])
    result = run("evaluate", data, "--weights", run_folder / "model.npz", "--json")
    assert result.exit_code == 1  # the metrics of the others, and the contract's "an input could not be used"
    summary = json.loads(result.stdout)
    assert summary["images"] == 60 and summary["skipped"] == 1
    assert f"error: {data / 'digit_1' / 'cut.jpg'}: truncated JPEG" in result.stderr
    # Classes none of whose images could be read were in no figure, unsaid: the mean class
    # accuracy, over the others, read as the whole set's.
    for name in ("digit_2", "digit_5"):
        for image in (data / name).iterdir():
            image.write_bytes(bad_images()["cut.jpg"][0])
    result = run("evaluate", data, "--weights", run_folder / "model.npz", "--json")
    assert result.exit_code == 1 and json.loads(result.stdout)["images"] == 48
    assert ("alexft: warning: 2 class(es) of which no image could be read: 'digit_2' (6 images), 'digit_5' (6 images); "
            "they are in no figure (the mean class accuracy is over the 8 classes scored)") in result.stderr, result.stderr
    (data / "cats").mkdir()
    (data / "cats" / "tabby.png").write_bytes((data / "digit_0").joinpath(sorted(os.listdir(data / "digit_0"))[0]).read_bytes())
    result = run("evaluate", data, "--weights", run_folder / "model.npz")
    assert result.exit_code == 1 and "folder(s) 'cats' are not classes of this model" in result.stderr
    # Nothing readable at all: the error names a file and why, not only a count.
    broken = tmp_path / "broken"
    for name in ("digit_1", "digit_2"):
        (broken / name).mkdir(parents=True)
        (broken / name / "cut.jpg").write_bytes(bad_images()["cut.jpg"][0])
    result = run("evaluate", broken, "--weights", run_folder / "model.npz")
    assert result.exit_code == 1
    assert (f"no usable images: none of the 2 could be read (the first: {broken / 'digit_1' / 'cut.jpg'}: "
            "truncated JPEG") in result.stderr


def _interrupted_after_twelve(results):
    """`results` (a generator function), stopped by a Ctrl-C after its twelfth item."""
    def interrupted(*args, **kwargs):
        for number, result in enumerate(results(*args, **kwargs)):
            if number == 12:
                raise KeyboardInterrupt
            yield result

    return interrupted


def test_a_broken_image_is_named_when_met_so_an_interrupted_evaluation_or_features_names_it_too(
        fc8_run, small_digits_folder, tmp_path, monkeypatch):
    from alexft import evaluation, features

    _, run_folder = fc8_run
    data = tmp_path / "data"
    shutil.copytree(small_digits_folder, data)
    (data / "digit_0" / "cut.jpg").write_bytes(bad_images()["cut.jpg"][0])  # the 7th of 61 images
    monkeypatch.setattr(evaluation, "predict_views", _interrupted_after_twelve(evaluation.predict_views))
    result = run("evaluate", data, "--weights", run_folder / "model.npz", "--batch-size", 4, "--no-progress")
    assert result.exit_code == 130
    assert f"error: {data / 'digit_0' / 'cut.jpg'}: truncated JPEG" in result.stderr
    # features named them only at its end: after the bar's 100%, and never when stopped
    monkeypatch.setattr(features, "layer_outputs", _interrupted_after_twelve(features.layer_outputs))
    result = run("features", data, "--layer", "fc7", "--output", tmp_path / "f.npz", "--weights", run_folder / "model.npz",
                 "--batch-size", 4, "--no-progress")
    assert result.exit_code == 130 and not (tmp_path / "f.npz").exists()
    assert result.stderr.count(f"error: {data / 'digit_0' / 'cut.jpg'}: truncated JPEG") == 1, result.stderr


def test_weights_info_names_the_run_a_model_was_fine_tuned_in(fc8_run, digits_folder, tmp_path):
    _, run_folder = fc8_run
    result = run("weights", "info", run_folder / "model.npz")
    assert result.exit_code == 0, result.output
    assert f"source: fine-tuned by alexft (run folder {run_folder}: fc8 trained on {digits_folder})" in result.stdout
    shutil.copy(run_folder / "model.npz", tmp_path / "model.npz")  # away from its run: nothing tells
    assert "source: unknown" in run("weights", "info", tmp_path / "model.npz").stdout


def test_features_match_the_models_intermediate_activations(fc8_run, small_digits_folder, canonical_weights_file, tmp_path):
    _, run_folder = fc8_run
    model = build_alexnet(num_classes=10)
    weights.assign(model, weights.load(run_folder / "model.npz"))
    fc7 = truncated(model, "fc7")
    recipes = []
    for flags, ten_crop in (([], False), (["--ten-crop"], True)):
        output = tmp_path / f"features{len(flags)}.npz"
        result = run("features", small_digits_folder, "--layer", "fc7", "--output", output, "--weights", run_folder / "model.npz", *flags)
        assert result.exit_code == 0, result.output
        with np.load(output, allow_pickle=False) as saved:
            features, paths, labels = saved["features"], saved["paths"], saved["labels"]
            assert list(saved["class_names"]) == [f"digit_{d}" for d in range(10)]
            recipes.append(json.loads(str(saved["recipe"])))
        assert {key: recipes[-1][key] for key in ("layer", "ten_crop", "mean", "float_resize", "precision")} == {
            "layer": "fc7", "ten_crop": ten_crop, "mean": "the mean pixel", "float_resize": False, "precision": "float32"}
        assert features.shape == (60, 4096) and len(paths) == 60
        for index in (0, 17, 59):
            expected = fc7(image_views(paths[index], ten_crop=ten_crop)).numpy().mean(axis=0)
            np.testing.assert_allclose(features[index], expected, rtol=1e-4, atol=1e-4)
            assert labels[index] == int(paths[index].split("/")[-2][-1])
    # The same weights in both files (the recipe does not depend on how many images it was written
    # for: one class's folder serves). fc7's features depend on conv1-fc7 alone, which the run
    # kept as the base weights hold them: those agree, though their fc8 differs.
    assert recipes[0]["weights_sha256"] == recipes[1]["weights_sha256"]
    other = tmp_path / "base.npz"
    assert run("features", small_digits_folder / "digit_3", "--layer", "fc7", "--output", other, "--weights",
               canonical_weights_file, "--resize", "float").exit_code == 0
    recipe = json.loads(str(np.load(other)["recipe"]))
    assert recipe["float_resize"] is True and recipe["weights_sha256"] == recipes[0]["weights_sha256"]
    assert feature_recipe(fc7, "fc7", False)["weights_sha256"] == recipes[0]["weights_sha256"]  # the API's too
    fc7.get_layer("fc7").bias.assign(fc7.get_layer("fc7").bias + 1)  # any value of a layer used is told apart
    assert feature_recipe(fc7, "fc7", False)["weights_sha256"] != recipes[0]["weights_sha256"]


def test_features_need_no_layers_above_the_one_asked_for(canonical_params, canonical_weights_file, small_digits_folder,
                                                         tmp_path):
    """A headless file (a feature extractor's, saved without fc8) writes the full file's fc7
    features, bit for bit, with its recipe: their shards merge."""
    headless = weights.save(weights.WeightSet({name: arrays for name, arrays in canonical_params.items() if name != "fc8"}),
                            tmp_path / "headless.npz")
    saved = {}
    for source in (canonical_weights_file, headless):
        output = tmp_path / f"{Path(source).stem}-fc7.npz"
        result = run("features", small_digits_folder / "digit_3", "--layer", "fc7", "-o", output, "--weights", source)
        assert result.exit_code == 0, result.output
        saved[source] = np.load(output)
    full, own = saved[canonical_weights_file], saved[headless]
    assert own["features"].shape == (6, 4096) and np.array_equal(own["features"], full["features"])
    assert list(own["paths"]) == list(full["paths"]) and str(own["recipe"]) == str(full["recipe"])


def test_ten_crops_of_a_layers_maps_are_refused(canonical_weights_file, tmp_path):
    """The ten crops' conv or pool maps do not line up position by position: their mean is no feature."""
    photo = photo_paths()["chelsea"]
    refused = run("features", photo, "--layer", "pool5", "--ten-crop", "-o", tmp_path / "f.npz")
    assert refused.exit_code == 2 and "--ten-crop averages the ten crops' outputs, which suits vectors (fc6, fc7, fc8) " \
        "only: the crops' pool5 maps do not line up position by position; leave it out for pool5" in refused.output
    model = build_alexnet(num_classes=10, seed=0)
    with pytest.raises(ValueError, match="ten_crop=True averages the ten crops' outputs"):
        extract_features(model, [photo], "conv5", tmp_path / "f.npz", ten_crop=True)
    assert not (tmp_path / "f.npz").exists()


def test_features_of_class_folders_keep_a_class_without_images(canonical_weights_file, small_digits_folder, tmp_path,
                                                              caplog):
    """As evaluate does: the empty class is named in a warning, and keeps its label."""
    data = tmp_path / "data"
    shutil.copytree(small_digits_folder, data)
    for image in (data / "digit_5").iterdir():
        image.unlink()
    result = run("features", data, "--layer", "fc8", "-o", tmp_path / "f.npz", "--weights", canonical_weights_file)
    assert result.exit_code == 0, result.output
    assert f"alexft: warning: {data}: 1 class folder(s) with no images: 'digit_5'" in result.stderr.splitlines()
    with np.load(tmp_path / "f.npz") as saved:
        assert list(saved["class_names"]) == [f"digit_{d}" for d in range(10)] and len(saved["paths"]) == 54
        assert 5 not in saved["labels"] and 6 in saved["labels"]
    # Two such folders are plain images: said, where the labels were dropped unsaid.
    write_digits_folder(tmp_path / "more", per_class=1, classes=[1, 2])
    result = run("features", tmp_path / "more", data / "digit_0", "--layer", "fc8", "-o", tmp_path / "g.npz",
                 "--weights", canonical_weights_file)
    assert result.exit_code == 0 and "alexft: note: 2 inputs are read as plain images, without class labels: labels come from " \
        f"one folder laid out as <class>/<images> (such as {tmp_path / 'more'}) given alone" in result.stderr
    assert sorted(np.load(tmp_path / "g.npz").files) == ["features", "paths", "recipe"]
    result = run("features", data / "digit_0", data / "digit_1", "--layer", "fc8", "-o", tmp_path / "h.npz", "--force",
                 "--weights", canonical_weights_file)  # two classes' own folders: their parent has the labels
    assert result.exit_code == 0 and "alexft: note: 2 folders are read as plain images, without class labels: for labels, give " \
        f"their parent folder alone ({data}), laid out as <class>/<images>" in result.stderr, result.stderr
    # Two folders of a working folder that holds much else (a helper's `photos bad big`): its
    # other sub-folder holds no images, so it is no <class>/<images> layout, and is not advised.
    for name in ("photos", "bad"):
        shutil.copytree(data / "digit_0", tmp_path / "work" / name)
    (tmp_path / "work" / "cache").mkdir()
    (tmp_path / "work" / "cache" / "store.npz").write_bytes(b"")
    result = run("features", tmp_path / "work" / "photos", tmp_path / "work" / "bad", "--layer", "fc8", "-o",
                 tmp_path / "i.npz", "--weights", canonical_weights_file)
    assert result.exit_code == 0 and "note:" not in result.stderr, result.stderr


def test_long_feature_runs_use_the_fused_lrn_on_full_batches_only(monkeypatch):
    calls = []
    call = InferenceFunction.__call__
    monkeypatch.setattr(InferenceFunction, "__call__",
                        lambda self, views, fused_lrn=False: calls.append((len(views), fused_lrn)) or call(self, views, fused_lrn))
    pool5 = truncated(build_alexnet(num_classes=10, seed=0), "pool5")
    photos = sorted(photo_paths().values())[:5]

    def features(threshold):
        monkeypatch.setattr(network, "FUSED_LRN_MIN_VIEWS", threshold)
        calls.clear()
        return np.stack([values for _, values in layer_outputs(pool5, photos, False, print, batch_size=2)])

    fused = features(5)
    assert calls == [(2, True), (2, True), (1, False)]  # the short last batch: no new compile
    plain = features(6)
    assert calls == [(2, False), (2, False), (1, False)]
    np.testing.assert_allclose(fused, plain, rtol=1e-5, atol=1e-5 * np.abs(plain).max())


def test_api_names_stay_functions_after_their_modules_are_imported():
    import importlib

    import alexft

    for name in ("evaluate", "finetune", "classify", "extract_features", "export_model"):
        module = alexft._EXPORTS[name] if isinstance(alexft._EXPORTS[name], str) else alexft._EXPORTS[name][0]
        importlib.import_module(f"alexft.{module}")
        assert callable(getattr(alexft, name)), f"alexft.{name} became the module alexft.{module}"


def _report_of(tmp_path, images, seed):
    """write_report's arguments for `images` labelled at random among 3 classes: a report whose
    figures differ with `seed`."""
    from alexft.evaluation import Predictions, metrics as metrics_of

    rng = np.random.default_rng(seed)
    names = ["cat", "dog", "fox"]
    labels = rng.integers(0, 3, len(images))
    probabilities = rng.dirichlet(np.ones(3), len(images)).astype(np.float32)
    centre, confusion = metrics_of(probabilities, labels, names)
    summary = dict(images=len(images), skipped=0, skipped_files={}, centre=centre)
    return summary, Predictions(images, labels, probabilities, None, {}), probabilities, confusion, names


def _files(folder):
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_an_interrupted_or_failed_report_leaves_the_earlier_one_whole(tmp_path, monkeypatch):
    """Before, the six files were rewritten one by one in place: Ctrl-C in the figures, a kill
    or a full disk left the new metrics.json beside the previous run's figures, a report that
    contradicts itself. Now an earlier report stays as it was until a new one is complete."""
    import errno

    from alexft import plots
    from alexft.errors import AlexftError
    from alexft.evaluation import REPORT_FILES, write_report

    images = list(photo_paths().values())[:5]
    folder = tmp_path / "report"
    write_report(folder, *_report_of(tmp_path, images, seed=1))
    earlier = _files(folder)
    assert sorted(earlier) == sorted(REPORT_FILES)

    def interrupted(*args):
        raise KeyboardInterrupt

    def disk_full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(plots, "contact_sheet", interrupted)  # the last file written
        with pytest.raises(KeyboardInterrupt):
            write_report(folder, *_report_of(tmp_path, images, seed=2))
        assert _files(folder) == earlier  # nor any scratch left
        patched.setattr(plots, "contact_sheet", disk_full)
        with pytest.raises(AlexftError, match=f"^{folder}: the report could not be written \\(no space left on the "
                                              "device\\); an earlier report there is as it was$"):
            write_report(folder, *_report_of(tmp_path, images, seed=2))
        assert _files(folder) == earlier

    (folder / ".report.tmp-999999999").mkdir()  # what a kill -9 midway leaves (no such process)
    (folder / ".report.tmp-999999999" / "metrics.json").write_text("{}")
    (folder / "notes.txt").write_text("the user's own")
    write_report(folder, *_report_of(tmp_path, images, seed=2))
    now = _files(folder)
    assert sorted(now) == sorted(REPORT_FILES + ("notes.txt",))  # the stale scratch is gone, the user's file kept
    assert now["metrics.json"] != earlier["metrics.json"] and now["per_class.csv"] != earlier["per_class.csv"]
    assert json.loads(now["metrics.json"])["images"] == 5

    # From Python too, a file of the user's under a report's name is never replaced.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "per_class.csv").write_text("class,accuracy\ncat,0.9\n")
    with pytest.raises(AlexftError, match="per_class.csv there is not from an alexft report"):
        write_report(mine, *_report_of(tmp_path, images, seed=3))
    assert _files(mine) == {"per_class.csv": b"class,accuracy\ncat,0.9\n"}


def test_a_report_that_cannot_be_written_loses_none_of_the_figures(centre_evaluation, evaluation, held_out_folder,
                                                                   tmp_path, monkeypatch):
    """The figures of a long evaluation were printed only after the report was written: a full
    disk under the report lost them all to a one-line error. Now they are printed, then the
    report's failure is named, exit 1, and the report folder holds no half of one."""
    import errno

    from alexft import plots

    _, _, model = evaluation

    def disk_full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(plots, "contact_sheet", disk_full)
    report = tmp_path / "report"
    # The centre crops alone: the ten crops' seconds change nothing in what is printed or written when.
    result = run("evaluate", held_out_folder, "--weights", model, "--report", report, "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == centre_evaluation
    assert result.stderr.splitlines()[-1] == (f"error: {report}: the report could not be written (no space left on the "
                                              "device); nothing was left there")
    assert not report.exists()  # made for the report, it is removed again (it had stayed, empty)


def test_the_python_evaluate_refuses_a_report_folder_before_the_work(evaluation, held_out_folder, tmp_path, monkeypatch):
    """A report folder holding a metrics.json of the user's was refused only after the whole
    evaluation (hours on ImageNet's val set), and in the command's words (--report)."""
    import alexft
    from alexft import evaluation as evaluating
    from alexft.errors import AlexftError

    _, _, model = evaluation
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.json").write_text('{"accuracy": 0.93}')
    (tmp_path / "afile").write_text("a file")
    measured = []
    monkeypatch.setattr(evaluating, "measure", lambda *args: measured.append(args))
    predictor = alexft.load_predictor(model, download=False)
    for report, said in ((mine, r"mine: metrics\.json there is not from an alexft report, and the report would "
                                r"replace it; choose another report folder$"),
                         (tmp_path / "afile" / "report", r"afile/report/metrics\.json: cannot be written")):
        with pytest.raises(AlexftError, match=said):
            alexft.evaluate(predictor, held_out_folder, report=report)
    assert not measured and (mine / "metrics.json").read_text() == '{"accuracy": 0.93}'


def test_the_python_evaluate_takes_a_folder_as_the_command_does(evaluation, held_out_folder):
    import alexft

    summary, _, model = evaluation
    predictor = alexft.load_predictor(model, download=False)
    # Both protocols once; the folder named by a str need not take the ten crops again.
    for given, protocols in ((held_out_folder, ("centre", "ten_crop")), (str(held_out_folder), ("centre",))):
        figures = alexft.evaluate(predictor, given, ten_crop="ten_crop" in protocols)
        assert figures["images"] == HELD_OUT
        for protocol in protocols:
            assert figures[protocol]["top1"] == pytest.approx(summary[protocol]["top1"])
    with pytest.raises(TypeError, match=r"evaluate takes a folder of <class>/<images> or labelled files \(e.g. "
                                        r"alexft.load_dataset\(folder\).val\), not list"):
        alexft.evaluate(predictor, [held_out_folder / "digit_0"])
    with pytest.raises(ValueError, match=f"report {held_out_folder / 'report'} is inside {held_out_folder}"):
        alexft.evaluate(predictor, held_out_folder, report=held_out_folder / "report")
    assert not (held_out_folder / "report").exists()


def test_the_python_evaluate_warns_of_images_beside_the_class_folders(fc8_run, small_digits_folder, tmp_path, caplog):
    import alexft

    _, run_folder = fc8_run
    shutil.copytree(small_digits_folder, tmp_path / "data")
    loose = next((tmp_path / "data").glob("*/*.png"))
    shutil.copy(loose, tmp_path / "data" / "stray.png")
    with alexft_notes() as said:
        figures = alexft.evaluate(alexft.load_predictor(run_folder / "model.npz", download=False), tmp_path / "data")
    assert figures["images"] == len(list(small_digits_folder.glob("*/*.png")))
    assert said == [f"{tmp_path / 'data'}: 1 image(s) beside the class folders belong to no class and are left out "
                    "(e.g. stray.png); evaluate reads <class>/<images>"]


def test_a_split_of_some_classes_is_scored_against_the_models_classes_by_name(evaluation, held_out_folder, tmp_path):
    """load_dataset's split of digit_7..digit_9 labels them 0..2; scored against the model's
    digit_0..digit_9 they are its classes 7..9, as a folder is matched by name."""
    import alexft
    from alexft.data import LabelledFiles

    _, _, model = evaluation
    some = tmp_path / "some"
    for name in ("digit_7", "digit_8", "digit_9"):
        shutil.copytree(held_out_folder / name, some / name)
    split = alexft.load_dataset(some, val_split=0.5).val
    assert set(split.labels) == {0, 1, 2}
    predictor = alexft.load_predictor(model, download=False)
    probabilities = np.concatenate([predictor.probabilities(image_views(path)) for path in split.paths])
    predicted = [predictor.class_names[index] for index in probabilities.argmax(axis=1)]
    expected = np.mean([name == path.parent.name for name, path in zip(predicted, split.paths)])
    assert expected > 0.5  # the fine-tuned model knows these digits: a misreading would show
    assert alexft.evaluate(predictor, split)["centre"]["top1"] == pytest.approx(expected)
    from alexft.evaluation import as_the_models_classes  # an ImageNet model's classes, without building one

    with pytest.raises(DataError, match=rf"^{some}: folder\(s\) 'digit_7', 'digit_8', 'digit_9' are not "
                                        r"classes of this model \(e.g. 'tench"):
        as_the_models_classes(split, imagenet_class_names())
    with pytest.raises(DataError, match=rf"^{some}: folder\(s\) 'digit_7', "):  # images of one class alone
        as_the_models_classes(split.subset(np.flatnonzero(split.labels == 2)), imagenet_class_names())
    with pytest.raises(DataError, match=r"^no images to evaluate: the labelled files given hold none \(a split of "
                                        r"val_split=0 holds none\)$"):  # (was StopIteration)
        alexft.evaluate(predictor, alexft.load_dataset(some, val_split=0).val)
    unnamed = LabelledFiles(split.paths, split.labels + 8)  # labels of no known classes: taken as the model's
    with pytest.raises(DataError, match="the labels go up to 10; this model has 10 classes"):
        alexft.evaluate(predictor, unnamed)


def test_a_runs_validation_split_is_listed_so_evaluate_measures_it_again(fc8_run, digits_folder):
    """--val-split holds images out of no folder of their own: the run lists them in val.txt,
    and evaluate --list gives the best epoch's own validation figures."""
    summary, run_folder = fc8_run
    listed = (run_folder / "val.txt").read_text(encoding="utf-8").splitlines()
    assert len(listed) == summary["val_images"] > 0
    assert all(not Path(line.rpartition(" ")[0]).is_absolute() for line in listed)
    result = run("evaluate", "--list", run_folder / "val.txt", "--root", digits_folder, "--weights",
                 run_folder / "model.npz", "--json", "--no-progress")
    assert result.exit_code == 0, result.output
    measured = json.loads(result.stdout)
    assert measured["images"] == summary["val_images"]
    assert measured["centre"]["top1"] == pytest.approx(summary["best"]["val_accuracy"])
    assert measured["centre"]["log_loss"] == pytest.approx(summary["best"]["val_loss"], abs=1e-4)


def test_val_txt_leaves_out_the_held_out_images_found_broken(small_digits_folder, canonical_weights_file, tmp_path):
    """The split is drawn before any image is read, so a broken file can be held out: val.txt
    listed it, and evaluate --list RUN/val.txt then exited 1 ("1 of 4 images could not be
    used") where the run had measured the others (helper-97's trial)."""
    import alexft
    from alexft.train import finetune

    data = tmp_path / "data"
    shutil.copytree(small_digits_folder, data)
    held_out = alexft.load_dataset(data, val_split=0.34, seed=0).val.paths  # (the run's split: its seed is 0)
    broken = held_out[0]
    broken.write_bytes(bad_images()["cut.jpg"][0])
    summary = finetune(data, weights=canonical_weights_file, epochs=1, lr=0.0002, batch_size=16, val_split=0.34, seed=0,
                       output=tmp_path / "run", progress=False, log=lambda message: None)
    assert [row["path"] for row in json.loads((tmp_path / "run" / "broken_files.json").read_text())] == [str(broken)]
    listed = [line.rpartition(" ")[0] for line in (tmp_path / "run" / "val.txt").read_text().splitlines()]
    assert sorted(listed) == sorted(os.path.relpath(path, data) for path in held_out[1:])
    assert summary["val_images"] == len(held_out) - 1
    result = run("evaluate", "--list", tmp_path / "run" / "val.txt", "--root", data, "--weights",
                 tmp_path / "run" / "model.npz", "--json", "--no-progress")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["centre"]["top1"] == pytest.approx(summary["best"]["val_accuracy"])


def test_val_txt_gives_a_confident_runs_own_validation_loss(small_digits_folder, canonical_weights_file, tmp_path):
    """A run at too high a rate answers wrong with near-certainty, where a probability rounds
    to 0 and the log loss's floor decides it: evaluate floored at 1e-15, validation at 1e-12,
    and gave 21.86 for a run's 19.40 (a helper's trial). Here fc7's features are 40 times
    larger than the weights' (a rate of 0.05 on them is caught as divergence and recovered)."""
    import alexft
    from alexft.train import finetune
    from alexft.weights import WeightSet, load, save

    params = dict(load(canonical_weights_file).params)
    params["fc7"] = tuple(40 * array for array in params["fc7"])
    base = save(WeightSet(params), tmp_path / "fc7_x40.npz")
    summary = finetune(small_digits_folder, weights=base, epochs=3, lr=0.0002, batch_size=16,
                       val_split=0.34, output=tmp_path / "run", progress=False, log=lambda message: None)
    listed = [line.rpartition(" ") for line in (tmp_path / "run" / "val.txt").read_text().splitlines()]
    predictor = alexft.load_predictor(tmp_path / "run" / "model.npz", download=False)
    picked = [predictor.probabilities(image_views(small_digits_folder / path))[0, int(label)] for path, _, label in listed]
    assert min(picked) < 1e-12  # the case this is about: a probability under the floor
    result = run("evaluate", "--list", tmp_path / "run" / "val.txt", "--root", small_digits_folder, "--weights",
                 tmp_path / "run" / "model.npz", "--json", "--no-progress")
    assert result.exit_code == 0, result.output
    measured = json.loads(result.stdout)["centre"]
    assert measured["top1"] == pytest.approx(summary["best"]["val_accuracy"])
    assert measured["log_loss"] == pytest.approx(summary["best"]["val_loss"], rel=1e-5)


def test_a_ctrl_c_swallowed_while_the_report_is_written_still_stops_the_command_and_prints_no_traceback(
        canonical_weights_file, tmp_path, monkeypatch):
    """Ctrl-C while the report's figures were drawn landed in a weakref callback (Matplotlib's and
    TensorFlow's run many): Python printed "Exception ignored ... KeyboardInterrupt" and a traceback
    and dropped it, and the command ended as if never stopped, exit 0 (2 of 25 timed tries). The
    stop is now honoured when the command ends (the report, written whole, stays), unprinted."""
    import os
    import signal
    import time
    import weakref

    from alexft import evaluation

    data = tmp_path / "data"
    (data / "n02123045").mkdir(parents=True)
    shutil.copy(photo_paths()["chelsea"], data / "n02123045" / "chelsea.png")
    write_report = evaluation.Evaluation.write_report

    def drawn_with_a_ctrl_c_in_a_callback(self, folder):
        class Drawing:
            pass

        def collected(reference):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler runs here, inside the callback, whose exception Python drops

        drawing = Drawing()
        watched = weakref.ref(drawing, collected)
        del drawing  # the callback runs now
        assert watched() is None
        write_report(self, folder)

    monkeypatch.setattr(evaluation.Evaluation, "write_report", drawn_with_a_ctrl_c_in_a_callback)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as at a terminal, also under nohup
    try:
        result = run("evaluate", data, "--weights", canonical_weights_file, "--report", tmp_path / "report")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert result.exit_code == 130, result.output
    assert result.stderr.splitlines()[-3:] == [f"alexft: report written to {tmp_path / 'report'}",
                                               "alexft: the stop came while the report was written; it was finished first",
                                               "alexft: interrupted"]
    assert "Exception ignored" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert (tmp_path / "report" / "metrics.json").is_file()
