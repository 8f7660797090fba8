"""Class folders, splits and the broken-file ledger (no TensorFlow needed)."""
import hashlib
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from alexft.data import BrokenFiles, DataError, load_dataset, quoted_names, stratified_split
from fixtures import alexft_notes


def make_tree(root, layout):
    for relative in layout:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(relative.encode())  # each its own bytes: equal ones are a leak warned of
    return root


def test_classes_are_sorted_folder_names_and_files_are_recursive(tmp_path):
    make_tree(tmp_path, ["zebra/a.jpg", "ant/x/b.png", "ant/c.jpg", "ant/notes.txt", ".git/d.jpg"])
    dataset = load_dataset(tmp_path, val_split=0)
    assert dataset.class_names == ["ant", "zebra"]
    assert [p.relative_to(tmp_path).as_posix() for p in dataset.train.paths] == ["ant/c.jpg", "ant/x/b.png", "zebra/a.jpg"]
    assert dataset.train.labels.tolist() == [0, 0, 1] and len(dataset.val) == 0


def test_a_dataset_is_shown_by_its_counts_not_its_every_path(tmp_path):
    """print(load_dataset(...)) listed every path and label (5 KB for 80 images, pages for more)."""
    make_tree(tmp_path, [f"class_{c}/{i}.jpg" for c in range(7) for i in range(40)])
    dataset = load_dataset(tmp_path, val_split=0.25)
    assert repr(dataset) == ("Dataset(7 classes ['class_0', 'class_1', 'class_2', 'class_3', 'class_4', ...]: "
                             "210 training and 70 validation images)")
    first = dataset.train.paths[0]
    assert repr(dataset.train) == f"LabelledFiles(210 images of 7 classes, first {str(first)!r})"
    assert str(dataset.val.subset([])) == "LabelledFiles(0 images of 7 classes)"


def test_a_dataset_assembled_from_links_keeps_every_image(tmp_path):
    """A class folder that is a link, and links inside one to folders elsewhere (a split made of
    links, as torchvision users build them): the images behind the inner links were left out."""
    make_tree(tmp_path / "store", ["cats1/a.jpg", "cats2/b.jpg", "dogs/c.png"])
    make_tree(tmp_path / "data", ["cat/own.jpg"])
    (tmp_path / "data" / "cat" / "first").symlink_to(tmp_path / "store" / "cats1")
    (tmp_path / "data" / "cat" / "second").symlink_to(tmp_path / "store" / "cats2")
    (tmp_path / "data" / "dog").symlink_to(tmp_path / "store" / "dogs")
    dataset = load_dataset(tmp_path / "data", val_split=0)
    assert dataset.class_names == ["cat", "dog"]
    assert [p.relative_to(tmp_path / "data").as_posix() for p in dataset.train.paths] == [
        "cat/first/a.jpg", "cat/own.jpg", "cat/second/b.jpg", "dog/c.png"]
    assert dataset.train.labels.tolist() == [0, 0, 0, 1]


def test_links_that_make_two_classes_list_one_folder_are_refused(tmp_path):
    """A user's two class folders linked to the same place trained its 40 images under both
    labels; exit 0."""
    make_tree(tmp_path / "elsewhere", ["digit_4/x.png"])
    make_tree(tmp_path / "dup", ["other/y.png"])
    (tmp_path / "dup" / "four").symlink_to(tmp_path / "elsewhere" / "digit_4")
    (tmp_path / "dup" / "also_four").symlink_to(tmp_path / "elsewhere" / "digit_4")
    make_tree(tmp_path / "outside", ["shared/z.png"])
    make_tree(tmp_path / "two", ["a/1.jpg", "b/2.jpg"])
    (tmp_path / "two" / "a" / "more").symlink_to(tmp_path / "outside" / "shared")
    (tmp_path / "two" / "b" / "more").symlink_to(tmp_path / "outside" / "shared")
    for data, said in [("dup", "classes 'also_four' and 'four' both reach one folder, as also_four and four"),
                       ("two", "classes 'a' and 'b' both reach one folder, as a/more and b/more")]:
        with pytest.raises(DataError, match=f"{data}: {said} \\(through a symbolic link\\); its images would be "
                                            "labelled as both: each class needs its own"):
            load_dataset(tmp_path / data)
    # Links into the data folder itself are not followed, as the image search does not follow them:
    # a link back to the data folder, or to another class, leaves each class its own images.
    make_tree(tmp_path / "loop", ["a/1.jpg", "b/2.jpg"])
    (tmp_path / "loop" / "a" / "back").symlink_to(tmp_path / "loop")
    (tmp_path / "loop" / "a" / "sibling").symlink_to(tmp_path / "loop" / "b")
    dataset = load_dataset(tmp_path / "loop", val_split=0)
    assert [path.relative_to(tmp_path / "loop").as_posix() for path in dataset.train.paths] == ["a/1.jpg", "b/2.jpg"]


def test_other_names_of_the_split_parts_are_read_as_parts_not_classes(tmp_path, caplog):
    """A user's train/ + validation/ trained two classes, "train" and "validation"; train/ alone
    was "only one class (train)", and a test/ beside train/ and val/ was left out in silence."""

    for held_out in ("validation", "valid"):
        make_tree(tmp_path / held_out, [f"train/cat/{i}.jpg" for i in range(3)] + [f"train/dog/{i}.jpg" for i in range(3)]
                  + [f"{held_out}/dog/v.jpg"])
        dataset = load_dataset(tmp_path / held_out)
        assert dataset.class_names == ["cat", "dog"] and len(dataset.train) == 6
        assert dataset.val.paths == [tmp_path / held_out / held_out / "dog" / "v.jpg"]
    make_tree(tmp_path / "alone", [f"train/{name}/{i}.jpg" for name in ("cat", "dog") for i in range(10)])
    dataset = load_dataset(tmp_path / "alone", val_split=0.2)
    assert dataset.class_names == ["cat", "dog"] and (len(dataset.train), len(dataset.val)) == (16, 4)
    for layout in (["train/cat/1.jpg", "train/dog/2.jpg", "val/cat/3.jpg", "test/cat/4.jpg"],
                   ["train/cat/1.jpg", "train/dog/2.jpg", "test/cat/4.jpg"]):
        folder = tmp_path / f"with_test_{len(layout)}"
        make_tree(folder, layout)
        with alexft_notes() as said:
            dataset = load_dataset(folder, val_split=0)
        assert dataset.class_names == ["cat", "dog"] and all(p.relative_to(folder).parts[0] == "train" for p in dataset.train.paths)
        assert f"{folder / 'test'}: not used in fine-tuning" in " ".join(said)
        assert f"measure the fine-tuned model on it with alexft evaluate {folder / 'test'}" in " ".join(said)
    make_tree(tmp_path / "trains", ["train/1.jpg", "bus/2.jpg"])  # a class named train, no parts
    assert load_dataset(tmp_path / "trains", val_split=0).class_names == ["bus", "train"]
    # Classes named train and test (or val) holding their images: refused as "train: no class
    # sub-folders" after two warnings that read them as parts.
    for beside in ("test", "val"):
        make_tree(tmp_path / f"train_{beside}", ["train/1.jpg", f"{beside}/2.jpg", "other/3.jpg"])
        with alexft_notes() as said:
            assert load_dataset(tmp_path / f"train_{beside}", val_split=0).class_names == sorted(["other", beside, "train"])
        assert said == []
    # train/ of class folders beside another folder (a re-trial's notes/, a run folder made inside the
    # parent) was read as two classes "notes" and "train": the parts are read, the rest named.
    for layout, held_out, others in ((["train/cat/1.jpg", "train/dog/2.jpg", "notes/x.png"], 0, ["notes"]),
                                     (["train/cat/1.jpg", "train/dog/2.jpg", "val/cat/3.jpg", "notes/x.png",
                                       "run1/curves.png", "validation/dog/4.jpg"], 1, ["notes", "run1", "validation"])):
        folder = tmp_path / f"extra_{len(layout)}"
        make_tree(folder, layout)
        with alexft_notes() as said:
            dataset = load_dataset(folder, val_split=0)
        assert dataset.class_names == ["cat", "dog"] and len(dataset.val) == held_out
        parts = "train/ and val/" if held_out else "train/"
        assert f"{folder}: {quoted_names(others)} left out: fine-tuning reads the parts {parts} only" in said


def test_split_parts_are_found_in_any_case(tmp_path, caplog):
    """Train/ + Val/ (as datasets made on Windows or macOS name them) were read as two classes
    "Train" and "Val"; on a case-blind disk they were read as parts but named as left out."""

    make_tree(tmp_path / "caps", ["Train/cat/1.jpg", "Train/dog/2.jpg", "Val/dog/3.jpg", "TEST/cat/4.jpg"])
    with alexft_notes() as said:
        dataset = load_dataset(tmp_path / "caps")
    assert dataset.class_names == ["cat", "dog"] and len(dataset.train) == 2
    assert dataset.val.paths == [tmp_path / "caps" / "Val" / "dog" / "3.jpg"]
    assert f"{tmp_path / 'caps' / 'TEST'}: not used in fine-tuning, which trains on Train/ and validates on Val/" in " ".join(said)
    assert "left out" not in " ".join(said)
    # Two folders differing in case only: the lower-case one is the part, the other is named.
    make_tree(tmp_path / "both", ["train/cat/1.jpg", "train/dog/2.jpg", "Train/cat/3.jpg", "Validation/dog/4.jpg"])
    with alexft_notes() as said:
        dataset = load_dataset(tmp_path / "both")
    assert [p.relative_to(tmp_path / "both").parts[0] for p in dataset.train.paths] == ["train", "train"]
    assert dataset.val.paths == [tmp_path / "both" / "Validation" / "dog" / "4.jpg"]
    assert f"{quoted_names(['Train'])} left out: fine-tuning reads the parts train/ and Validation/ only" in " ".join(said)


def test_a_split_holding_out_more_than_asked_is_said(tmp_path):
    """Every class of two or more images gives one to validation: on 6 images a class
    --val-split 0.1 held out a sixth, unsaid (3 a class: a third). Said when the share is 1.5
    times the one asked; not for larger classes, nor for a validation folder, where a share
    other than the default is said to be unused."""
    from types import SimpleNamespace

    from alexft.train_setup import report_split

    def said(per_class, val_split, layout=None):
        folder = tmp_path / f"{per_class}_{val_split}_{layout}"
        make_tree(folder, layout or [f"c{label}/{i}.jpg" for label in range(4) for i in range(per_class)])
        messages = []
        report_split(load_dataset(folder, val_split=val_split), SimpleNamespace(val_split=val_split), messages.append)
        return [message for message in messages if message.startswith("note:")]

    assert said(6, 0.1) == ["note: --val-split 0.1 holds out 4 of 24 images (17%): every class of two or more "
                            "images gives at least one to validation"]
    assert said(3, 0.1)[0].startswith("note: --val-split 0.1 holds out 4 of 12 images (33%)")
    assert said(20, 0.1) == [] and said(6, 0.2) == [] and said(6, 0) == []
    layout = ["train/a/1.jpg", "train/a/2.jpg", "train/b/3.jpg", "train/b/4.jpg", "val/a/5.jpg", "val/b/6.jpg"]
    assert said(2, 0.1, layout) == []
    # A share asked for where validation is a folder of its own went unsaid.
    assert said(2, 0.3, layout) == ["note: --val-split 0.3 is not used: the validation images come from a folder of "
                                    "their own (a val/ part, or --val-dir)"]


def test_train_and_val_subfolders_are_used_and_matched_by_name(tmp_path):
    make_tree(tmp_path, ["train/cat/1.jpg", "train/dog/2.jpg", "val/dog/3.jpg"])
    dataset = load_dataset(tmp_path)
    assert dataset.class_names == ["cat", "dog"]
    assert dataset.val.labels.tolist() == [1]
    # A validation folder given as well: which one was meant is asked, not guessed (the train/
    # and val/ folders were once taken as two classes and every class called unknown).
    make_tree(tmp_path / "other", ["dog/5.jpg"])
    with pytest.raises(DataError, match=r"holds train/ and val/, and a validation folder was given too .*other"):
        load_dataset(tmp_path, val_dir=tmp_path / "other")
    assert load_dataset(tmp_path / "train", val_dir=tmp_path / "other").val.labels.tolist() == [1]
    make_tree(tmp_path, ["val/cow/4.jpg"])
    with pytest.raises(DataError, match="cow not among the training classes$"):
        load_dataset(tmp_path)
    make_tree(tmp_path / "third", ["Dog/6.jpg"])  # a near miss is pointed at
    with pytest.raises(DataError, match=r"Dog not among the training classes \('Dog': did you mean 'dog'\?\)$"):
        load_dataset(tmp_path / "train", val_dir=tmp_path / "third")


def test_what_a_mac_or_a_phone_leaves_in_a_dataset(tmp_path, caplog):
    """A Mac's zip adds __MACOSX/ beside the class folders (it stopped the run as an empty
    class); an iPhone's photos are HEIC, which alexft does not read (they were dropped in
    silence); macOS writes 'café' decomposed (NFD), other systems composed (NFC)."""
    import unicodedata

    composed, decomposed = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    make_tree(tmp_path / "data", ["cat/1.jpg", "cat/2.HEIC", "cat/sub/3.avif", "cat/.4.heic", f"{decomposed}/5.jfif",
                                  "__MACOSX/cat/._1.jpg", "dog/6.png", "dog/old.pcx"])  # (a .pcx was dropped unsaid)
    make_tree(tmp_path / "val", [f"{composed}/7.jpg", "cat/8.jpg"])
    with alexft_notes() as said:
        dataset = load_dataset(tmp_path / "data", val_dir=tmp_path / "val")
    assert dataset.class_names == [decomposed, "cat", "dog"]
    assert [path.name for path in dataset.train.paths] == ["5.jfif", "1.jpg", "6.png"]
    assert dataset.val.labels.tolist() == [0, 1]  # café matched whatever its form
    assert (f"{tmp_path / 'data'}: 3 photo(s) in formats alexft does not read are left out (e.g. cat/2.HEIC); "
            "convert them to JPEG or PNG") in said
    # Two folders differing only in form are two classes (a Mac's copy merged with a Linux one):
    # each matches only itself, never the other.
    make_tree(tmp_path / "data", [f"{composed}/9.jpg"])
    make_tree(tmp_path / "val", [f"{decomposed}/10.jpg"])
    both = load_dataset(tmp_path / "data", val_dir=tmp_path / "val")
    assert both.class_names == sorted([composed, decomposed, "cat", "dog"])
    assert [both.class_names[label] for label in both.val.labels] == sorted([composed, decomposed, "cat"])
    (tmp_path / "val" / decomposed / "10.jpg").unlink()
    (tmp_path / "val" / decomposed).rmdir()
    (tmp_path / "data" / composed / "9.jpg").unlink()
    (tmp_path / "data" / composed).rmdir()
    make_tree(tmp_path / "data", ["elk/a.heic"])
    with pytest.raises(DataError, match=r"data: class folder\(s\) 'elk' hold only photos in formats alexft does not read "
                                        r"\(e.g. elk/a.heic\); convert them to JPEG or PNG$"):
        load_dataset(tmp_path / "data")
    (tmp_path / "data" / "elk" / "a.heic").rename(tmp_path / "data" / "elk" / "notes.txt")
    with pytest.raises(DataError, match=r"data/elk: class folder has no images$"):  # not blamed on cat's HEIC
        load_dataset(tmp_path / "data")


def test_stratified_split_is_seeded_and_keeps_every_class_in_both():
    labels = np.repeat(np.arange(3), [10, 4, 2])
    train, val = stratified_split(labels, 0.25, seed=7)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(16))
    assert [int((labels[val] == c).sum()) for c in range(3)] == [2, 1, 1]
    assert all((labels[train] == c).any() for c in range(3))
    again = stratified_split(labels, 0.25, seed=7)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])
    assert not np.array_equal(val, stratified_split(labels, 0.25, seed=8)[1])


@pytest.mark.parametrize(
    "layout, message",
    [
        ([], "no class sub-folders"),
        (["only/a.jpg"], "only one class"),
        (["cat/a.jpg", "dog/readme.txt"], "dog: class folder has no images"),
        # Every empty one named at once, not one per run.
        (["cat/a.jpg", "dog/readme.txt", "elk/x.txt", "fox/y.txt"],
         "3 class folders have no images: 'dog', 'elk', 'fox'; each class needs some"),
        (["cat/readme.txt", "dog/readme.txt"], "none of its class folders holds an image"),
    ],
)
def test_unusable_layouts_get_clear_errors(tmp_path, layout, message):
    make_tree(tmp_path, layout)
    with pytest.raises(DataError, match=message):
        load_dataset(tmp_path)


def test_broken_file_ledger_tolerates_a_fraction(tmp_path):
    ledger = BrokenFiles(max_fraction=0.1)
    ledger.add("a.jpg", "a.jpg: truncated JPEG")
    ledger.check(10)  # 1 of 10 is within 10%
    ledger.add("b.jpg", "b.jpg: empty file")
    with pytest.raises(DataError, match="2 of 10 images are broken"):
        ledger.check(10)
    ledger.write(tmp_path / "broken.json")
    assert "b.jpg: empty file" in (tmp_path / "broken.json").read_text()


def test_broken_files_are_said_once_each_and_at_most_twenty():
    said = []
    ledger = BrokenFiles(say=said.append)
    for epoch in range(2):  # a file read again (the next epoch) is not said again
        for index in range(25):
            ledger.add(f"{index}.jpg", f"{index}.jpg: empty file")
    assert said[:2] == ["skipped: 0.jpg: empty file", "skipped: 1.jpg: empty file"] and len(said) == 20
    assert said[-1] == "skipped: 19.jpg: empty file; more are only listed in broken_files.json"
    assert len(ledger.errors) == 25


def test_the_stratified_split_is_the_per_class_rule_and_fast_for_many_classes():
    """Reference: each class's indices in ascending order, shuffled by one generator class after
    class, round(fraction * n) to validation (at least one of two or more, never all)."""
    from alexft.data import stratified_split

    def reference(labels, fraction, seed):
        rng = np.random.default_rng([seed, 0x5EED])
        train, val = [], []
        for label in np.unique(labels):
            members = np.flatnonzero(labels == label)
            rng.shuffle(members)
            count = int(round(fraction * len(members)))
            if fraction > 0 and len(members) >= 2:
                count = min(max(count, 1), len(members) - 1)
            val.extend(members[:count])
            train.extend(members[count:])
        return sorted(train), sorted(val)

    rng = np.random.default_rng(1)
    for count, classes in ((7, 3), (5000, 50), (20000, 700)):
        labels = rng.integers(0, classes, count).astype(np.int32)
        for fraction in (0, 0.1, 0.5):
            train, val = stratified_split(labels, fraction, seed=3)
            assert (train.tolist(), val.tolist()) == reference(labels, fraction, 3)
    many = np.repeat(np.arange(10_000, dtype=np.int32), 12)  # 10,000 classes: was minutes, now a fraction of a second
    train, val = stratified_split(many, 0.1, seed=0)
    assert len(val) == 10_000 and len(train) + len(val) == len(many)


def test_images_beside_the_class_folders_are_named_as_left_out(tmp_path, caplog):
    make_tree(tmp_path / "flat", ["cat/1.jpg", "dog/2.jpg", "stray.jpg", "notes.txt"])
    make_tree(tmp_path / "split", ["train/cat/1.jpg", "train/dog/2.jpg", "train/a.png", "val/dog/3.jpg",
                                   "val/b.png", "val/c.png", "readme.jpg"])
    with alexft_notes() as said:
        assert load_dataset(tmp_path / "flat", val_split=0).train.paths[-1].name == "2.jpg"
    assert said == [f"{tmp_path / 'flat'}: 1 image(s) beside the class folders belong to no class and are left out "
                    "(e.g. stray.jpg); fine-tuning reads <class>/<images>"]
    with alexft_notes() as said:
        assert len(load_dataset(tmp_path / "split").train) == 2
    left_out = "beside the class folders belong to no class and are left out"
    assert said == [
        f"{tmp_path / 'split'}: 1 image(s) {left_out} (e.g. readme.jpg); fine-tuning reads <class>/<images>",
        f"{tmp_path / 'split' / 'train'}: 1 image(s) {left_out} (e.g. a.png); fine-tuning reads <class>/<images>",
        f"{tmp_path / 'split' / 'val'}: 2 image(s) {left_out} (e.g. b.png); fine-tuning reads <class>/<images>"]
    make_tree(tmp_path / "images_only", ["a.jpg", "b.jpg"])  # no layout at all: the error alone says so
    with alexft_notes() as said, pytest.raises(DataError, match="no class sub-folders"):
        load_dataset(tmp_path / "images_only")
    assert said == []


def test_folders_that_cannot_be_listed_and_dangling_links_in_a_dataset_are_named(tmp_path, caplog, monkeypatch):
    """The search skipped a folder without read permission in silence (simulated: the tests may
    run as root); a dangling link with an image's name is listed, so that reading it reports it."""
    import os

    make_tree(tmp_path / "data", ["cat/1.jpg", "cat/old/2.jpg", "dog/3.png"])
    (tmp_path / "data" / "dog" / "4.png").symlink_to("gone.png")
    locked = tmp_path / "data" / "cat" / "old"
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != locked and real_access(path, mode, **kw))
    with alexft_notes() as said:
        dataset = load_dataset(tmp_path / "data", val_split=0)
    assert f"{tmp_path / 'data'}: cannot read 'cat/old' (permission denied); the images in them are left out" in said
    assert (tmp_path / "data" / "dog" / "4.png") in dataset.train.paths


def test_a_class_folder_not_named_in_utf_8_is_refused_before_training(tmp_path):
    """A user's run on such a folder finished, and its model then failed in classify's LiteRT
    copy, in export and in evaluate's report, which hold class names as text."""
    import os

    make_tree(tmp_path / "data", ["cat/1.jpg", "dog/2.jpg"])
    os.rename(tmp_path / "data" / "dog", os.fsencode(tmp_path / "data") + b"/d\xfdg")
    with pytest.raises(DataError, match=r"data: class folder b'd\\xfdg' is not named in UTF-8; rename it"):
        load_dataset(tmp_path / "data")


def test_validation_images_that_are_training_images_too_are_warned_of(tmp_path, monkeypatch):
    """A helper's val/ held byte-identical copies of training photos: validation accuracy was
    measured on images the model trained on, without a word; and one filed under another class."""
    import shutil
    from types import SimpleNamespace

    from alexft import overlap
    from alexft.train_setup import report_split

    def warned(val_dir):
        said = []
        report_split(load_dataset(train, val_dir=val_dir), SimpleNamespace(val_split=0.1), said.append)
        return [message for message in said if "training image" in message and " too " in message]

    train, val = tmp_path / "photos", tmp_path / "held_out"
    for index, name in enumerate(["cat/a.jpg", "cat/b.jpg", "dog/c.jpg", "dog/d.jpg"]):
        (train / name).parent.mkdir(parents=True, exist_ok=True)
        (train / name).write_bytes(bytes([index]) * (100 + index))
    (val / "cat").mkdir(parents=True)
    (val / "dog").mkdir()
    (val / "cat" / "e.jpg").write_bytes(b"\xff" * 100)  # the size of a.jpg, other bytes: not the same
    (val / "dog" / "f.jpg").write_bytes(b"\x07" * 90)
    assert warned(val) == []
    shutil.copy(train / "dog" / "d.jpg", val / "dog" / "copy of d.jpg")  # the same bytes, another name
    assert warned(val) == [
        f"warning: 1 of the 3 validation images is a training image too (e.g. {val / 'dog' / 'copy of d.jpg'}, the "
        f"same bytes as {train / 'dog' / 'd.jpg'}): accuracy there says little about images the model has not seen; "
        "remove them from one of the folders"]
    shutil.copy(train / "cat" / "b.jpg", val / "dog" / "b.jpg")  # and one filed under another class
    assert warned(val)[0].endswith(
        f"remove them from one of the folders; 1 of them is filed under another class there (e.g. "
        f"{val / 'dog' / 'b.jpg'} in 'dog', {train / 'cat' / 'b.jpg'} in 'cat')")
    assert warned(train) == [  # the training folder given as the validation folder
        f"warning: 4 of the 4 validation images are training images too (e.g. {train / 'cat' / 'a.jpg'}): accuracy "
        "there says little about images the model has not seen; is the validation folder the data folder?"]
    # A split of one folder is compared too: a photo copied within the folder (here under
    # another name in its class) landed on both sides unsaid.
    shutil.copy(train / "cat" / "a.jpg", train / "cat" / "z.jpg")
    sides = {}
    for seed in range(20):  # (the copies fall on the two sides of a 50% split, or on one)
        split = load_dataset(train, val_split=0.5, seed=seed)
        together = {path.name for path in split.train.paths} & {"a.jpg", "z.jpg"}
        sides[len(together)] = (split, overlap.overlap_warnings(split))
    assert 1 in sides and len(sides) > 1, sides.keys()
    assert re.match(r"warning: 1 of the \d validation images is a training image too \(e.g. .*cat/[az].jpg, the same bytes "
                    r"as .*cat/[az].jpg\): .*; remove the copies from the folder$", sides[1][1][0]) and len(sides[1][1]) == 1
    assert all(said == [] for together, (split, said) in sides.items() if together != 1)
    # Training images whose bytes are filed under two classes: one label is wrong, said with
    # or without validation images (the copy in cat/ stays: within a class a copy is no mistake).
    shutil.copy(train / "cat" / "b.jpg", train / "dog" / "b again.jpg")
    said = []
    report_split(load_dataset(train, val_split=0), SimpleNamespace(val_split=0), said.append)
    assert said[-1] == (f"warning: 1 image(s) are filed under two classes or more, the same bytes in each (e.g. "
                        f"{train / 'cat' / 'b.jpg'} in 'cat', {train / 'dog' / 'b again.jpg'} in 'dog'): one of the "
                        "labels is wrong; remove the copy from the class it is not")
    # Each file is looked at once for both checks (each had its own stat of every training image)
    split, stats, stat = load_dataset(train, val_split=0.5, seed=1), [], os.stat
    with monkeypatch.context() as patch:
        patch.setattr(overlap, "file_sha256", lambda path: hashlib.sha256(Path(path).read_bytes()).hexdigest())
        patch.setattr(os, "stat", lambda path, *args, **kwargs: stats.append(str(path)) or stat(path, *args, **kwargs))
        overlap.overlap_warnings(split)
    listed = sorted(map(str, list(split.train.paths) + list(split.val.paths)))
    assert sorted(path for path in stats if path in listed) == listed
    monkeypatch.setattr(overlap, "MAX_HASHED", 1)  # the content check stops, and says so
    assert overlap.shared_images([train / "dog" / "d.jpg"], [val / "dog" / "copy of d.jpg"]) == ([], False)


def test_load_dataset_refuses_a_validation_share_out_of_range(tmp_path):
    """-0.1 and 1.5 had split off all but one image of each class for validation, unsaid."""
    import alexft
    from alexft.train_options import OptionsError

    root = tmp_path / "data"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for index in range(10):
            cv2.imwrite(str(root / name / f"{index}.png"), np.full((8, 8, 3), index * 20, np.uint8))
    assert len(alexft.load_dataset(root, val_split="0.2").val) == 4  # two of each class's ten
    for wrong in (-0.1, 1.5, "a fifth"):
        with pytest.raises(OptionsError, match=r"^val_split must be a number in \[0, 1\), got "):
            alexft.load_dataset(root, val_split=wrong)


def test_a_split_given_to_features_is_refused_not_labelled_by_its_parts(tmp_path):
    """`features ds/` on ds/train/<class>/ and ds/val/<class>/ had labelled every image 'train'
    or 'val'; folders named train/ and val/ that hold images themselves are still two classes."""
    from alexft.data import images_with_labels

    split, classes = tmp_path / "ds", tmp_path / "vehicles"
    for part in ("train", "val"):
        for name in ("cat", "dog"):
            (split / part / name).mkdir(parents=True)
            cv2.imwrite(str(split / part / name / "0.png"), np.zeros((8, 8, 3), np.uint8))
        (classes / part).mkdir(parents=True)
        cv2.imwrite(str(classes / part / "0.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match=rf"^{split}: holds train/, val/, the parts of a split, each with class folders; "
                                        rf".* \(alexft features {split / 'train'} -o train.npz; alexft features "
                                        rf"{split / 'val'} -o val.npz\)$"):
        images_with_labels([split])
    paths, labels, names = images_with_labels([split / "train"])
    assert names == ["cat", "dog"] and list(labels) == [0, 1]
    # Another folder beside the parts (an empty one, an old class) had turned the refusal off:
    # the images were labelled 'train', 'val' and 'old', exit 0. train/ beside test/ alone too.
    (split / "old" / "cat").mkdir(parents=True)
    cv2.imwrite(str(split / "old" / "cat" / "0.png"), np.zeros((8, 8, 3), np.uint8))
    (split / "empty").mkdir()
    with pytest.raises(DataError, match=rf"^{split}: holds train/, val/, the parts of a split, each with class folders "
                                        rf"\(and 'empty', 'old' beside them\); .* -o val.npz\)$"):
        images_with_labels([split])
    (split / "val").rename(split / "test")
    with pytest.raises(DataError, match=rf"^{split}: holds train/, test/, the parts of a split, .* -o test.npz\)$"):
        images_with_labels([split])
    # A stray photo beside the parts' class folders had turned it off too (finetune reads the split).
    for part in ("train", "test"):
        cv2.imwrite(str(split / part / "stray.png"), np.zeros((8, 8, 3), np.uint8))
        with pytest.raises(DataError, match=rf"^{split}: holds train/, test/, the parts of a split"):
            images_with_labels([split])
    # A class named train whose photos are in sub-folders, among other classes: read as classes.
    for name in ("bus/day", "car/day", "train/day", "train/night"):
        (tmp_path / "vehicles2" / name).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "vehicles2" / name / "0.png"), np.zeros((8, 8, 3), np.uint8))
    paths, labels, names = images_with_labels([tmp_path / "vehicles2"])
    assert names == ["bus", "car", "train"] and list(labels) == [0, 1, 2, 2]
    paths, labels, names = images_with_labels([classes])
    assert names == ["train", "val"] and list(labels) == [0, 1]
