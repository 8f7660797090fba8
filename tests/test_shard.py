"""`--shard I/N`: N processes cover a collection exactly once, and their outputs merged
equal one process's."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from alexft.errors import AlexftError
from alexft.feature_files import FeatureFileError, OutputNameError, merge_features
from alexft.features import extract_features
from alexft.pipeline import shard
from alexft.cli import main
from fixtures import photo_paths


@pytest.mark.parametrize("count", range(1, 8))
def test_shards_cover_every_item_once_in_order(count):
    for size in range(0, 23):
        items = list(range(size))
        parts = [shard(items, index, count) for index in range(count)]
        assert sum(parts, []) == items
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_a_shard_outside_the_range_is_refused():
    with pytest.raises(ValueError, match="expected 0 <= index < count"):
        shard([1, 2], 2, 2)


def run(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shard_photos")
    for name, path in photo_paths().items():
        shutil.copy(path, folder / f"{name}{path.suffix}")
        shutil.copy(path, folder / f"{name}_copy{path.suffix}")
    (folder / "broken.jpg").write_bytes(b"not an image")
    return folder  # 13 files, one of them broken


def _json_lines(text):
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize("count", [3, 20])  # 20 shards for 13 files: some shards are empty
def test_classify_shards_merged_equal_one_run(photo_folder, canonical_weights_file, count):
    whole = run("classify", photo_folder, "--json", "--weights", canonical_weights_file)
    parts = [run("classify", photo_folder, "--json", "--shard", f"{index}/{count}", "--weights", canonical_weights_file)
             for index in range(count)]
    assert whole.exit_code == 1  # the broken file
    assert [part.exit_code for part in parts].count(1) == 1 and set(part.exit_code for part in parts) <= {0, 1}
    merged = _json_lines("".join(part.stdout for part in parts))
    expected = _json_lines(whole.stdout)
    assert [item["path"] for item in merged] == [item["path"] for item in expected] and len(expected) == 13
    for got, want in zip(merged, expected):
        assert got.get("error") == want.get("error")
        if "predictions" in want:
            assert [p["index"] for p in got["predictions"]] == [p["index"] for p in want["predictions"]]
            # Other batch sizes, so oneDNN may pick other kernels: float32 sums in another order.
            np.testing.assert_allclose([p["probability"] for p in got["predictions"]],
                                       [p["probability"] for p in want["predictions"]], rtol=1e-4)


def test_features_shards_merged_equal_one_run(small_digits_folder, canonical_weights_file, tmp_path):
    assert run("features", small_digits_folder, "--layer", "fc7", "--output", tmp_path / "whole.npz",
               "--weights", canonical_weights_file).exit_code == 0
    parts = [tmp_path / f"part{index}.npz" for index in range(4)]
    for index, part in enumerate(parts):
        result = run("features", small_digits_folder, "--layer", "fc7", "-o", part, "--shard", f"{index}/4",  # (-o as in cc)
                     "--weights", canonical_weights_file)
        assert result.exit_code == 0, result.output
    merge_features(parts, tmp_path / "merged.npz")
    with np.load(tmp_path / "whole.npz") as whole, np.load(tmp_path / "merged.npz") as merged:
        assert sorted(whole.files) == sorted(merged.files) == ["class_names", "features", "labels", "paths", "recipe"]
        for name in ("paths", "labels", "class_names", "recipe"):
            np.testing.assert_array_equal(merged[name], whole[name])
        assert len(whole["paths"]) == 60 and len(np.load(parts[1])["paths"]) == 15
        np.testing.assert_allclose(merged["features"], whole["features"], rtol=1e-4, atol=1e-6)  # other batch sizes


# Two machines given the same names in other orders (`find | xargs`): a file named on its own
# and inside a folder given too, and `more-b.png`, which sorts after `more/` part by part as
# a folder's listing does (character by character '-' comes before '/').
TYPED_ON = {"machine A": ["wide.png", "more/a.png", "cat.bmp", "more", "one.png", "chelsea.png", "more-b.png"],
            "machine B": ["more-b.png", "chelsea.png", "one.png", "more", "cat.bmp", "more/a.png", "wide.png"]}
IMAGES = ["wide.png", "cat.bmp", "one.png", "chelsea.png", "more-b.png", "more/a.png", "more/b.png"]


def _spec_shards(count):
    """The documented split, worked out here: the sorted list cut into `count` contiguous parts."""
    ordered = sorted(IMAGES, key=lambda name: Path(name).parts)
    return [ordered[len(ordered) * index // count:len(ordered) * (index + 1) // count] for index in range(count)]


@pytest.fixture(scope="module")
def typed_photos(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("typed_photos")
    (folder / "more").mkdir()
    photos = list(photo_paths().values())
    for name, photo in zip(IMAGES, photos + photos):
        Image.open(photo).convert("RGB").resize((64, 48)).save(folder / name)
    return folder


def test_classify_shards_are_of_the_sorted_inputs_whatever_order_typed(typed_photos, canonical_weights_file,
                                                                        monkeypatch):
    monkeypatch.chdir(typed_photos)  # relative names: machines in other working folders agree
    expected = _spec_shards(2)
    assert expected == [["cat.bmp", "chelsea.png", "more/a.png"], ["more/b.png", "more-b.png", "one.png", "wide.png"]]
    for machine, typed in TYPED_ON.items():
        for index, part in enumerate(expected):
            result = run("classify", *typed, "--json", "--shard", f"{index}/2", "--weights", canonical_weights_file)
            assert result.exit_code == 0, result.output
            assert [item["path"] for item in _json_lines(result.stdout)] == part, (machine, index)  # in sorted order


def test_features_shards_of_other_orders_merge_into_one_run(typed_photos, canonical_weights_file, tmp_path,
                                                            monkeypatch):
    monkeypatch.chdir(typed_photos)
    typed_a, typed_b = TYPED_ON.values()
    whole = run("features", *typed_a, "--layer", "fc7", "-o", tmp_path / "whole.npz", "--weights", canonical_weights_file)
    part0 = run("features", *typed_a, "--layer", "fc7", "-o", tmp_path / "part0.npz", "--shard", "0/2",
                "--weights", canonical_weights_file)
    part1 = run("features", *typed_b, "--layer", "fc7", "-o", tmp_path / "part1.npz", "--shard", "1/2",
                "--weights", canonical_weights_file)
    assert (whole.exit_code, part0.exit_code, part1.exit_code) == (0, 0, 0), whole.output + part0.output + part1.output
    merge_features([tmp_path / "part0.npz", tmp_path / "part1.npz"], tmp_path / "merged.npz")
    with np.load(tmp_path / "whole.npz") as one_run, np.load(tmp_path / "merged.npz") as merged:
        # Without --shard the order typed is kept (the folder's images where it was named).
        assert list(one_run["paths"]) == ["wide.png", "cat.bmp", "more/a.png", "more/b.png", "one.png", "chelsea.png",
                                          "more-b.png"]
        assert list(merged["paths"]) == sum(_spec_shards(2), [])
        assert sorted(merged.files) == sorted(one_run.files) and str(merged["recipe"]) == str(one_run["recipe"])
        row = {path: index for index, path in enumerate(one_run["paths"])}
        np.testing.assert_allclose(merged["features"], one_run["features"][[row[path] for path in merged["paths"]]],
                                   rtol=1e-4, atol=1e-6)  # other batch sizes


@pytest.mark.parametrize("command", [["classify"], ["features", "-o", "out.npz"]])
def test_standard_input_is_not_sharded(command, tmp_path, monkeypatch):
    """Each process's standard input is its own: no shard of it could be shared out."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, [*command, "-", "--shard", "0/2"], input=b"photo bytes")
    assert result.exit_code == 2
    assert "'-' (standard input) is each process's own" in result.output
    assert not (tmp_path / "out.npz").exists()


@pytest.mark.parametrize("value", ["3/3", "1/0", "a/2", "2", "-1/2"])
def test_a_bad_shard_is_a_usage_error(photo_folder, value):
    result = run("classify", photo_folder, "--shard", value)
    assert result.exit_code == 2
    assert "expected I/N with 0 <= I < N" in result.output


def test_merging_parts_that_do_not_belong_together_is_refused(tmp_path):
    np.savez(tmp_path / "a.npz", features=np.zeros((2, 3), np.float32), paths=np.array(["x", "y"]),
             labels=np.array([0, 1]), class_names=np.array(["cat", "dog"]))
    np.savez(tmp_path / "b.npz", features=np.zeros((1, 3), np.float32), paths=np.array(["z"]))
    np.savez(tmp_path / "c.npz", features=np.zeros((1, 3), np.float32), paths=np.array(["z"]),
             labels=np.array([0]), class_names=np.array(["cow", "dog"]))
    with pytest.raises(FeatureFileError, match=r"b.npz lacks class_names, labels, which the first part holds \(labelled "):
        merge_features([tmp_path / "a.npz", tmp_path / "b.npz"], tmp_path / "out.npz")
    with pytest.raises(FeatureFileError, match=r"a.npz holds class_names, labels, which the first part does not \("):
        merge_features([tmp_path / "b.npz", tmp_path / "a.npz"], tmp_path / "out.npz")
    # A part that is not there, cut short, or not a feature file: named, in alexft's words (was
    # zipfile's "File is not a zip file", naming no file, or a FileNotFoundError).
    whole = (tmp_path / "a.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(whole[:200])
    (tmp_path / "holed.npz").write_bytes(whole[:400] + whole[600:])  # bytes gone from its middle
    np.savez(tmp_path / "w.npz", conv1_w=np.zeros((2, 2), np.float32))
    for part, reason in (("gone.npz", "no such file"),
                         ("cut.npz", "corrupt or truncated .npz \\(File is not a zip file\\)"),
                         ("holed.npz", "corrupt or truncated .npz \\(its index points outside the file: bytes are "
                                       "missing from it\\)"),
                         ("w.npz", "not a feature file \\(no features and paths in it\\)")):
        with pytest.raises(AlexftError, match=f"^{re.escape(str(tmp_path / part))}: {reason}$"):
            merge_features([tmp_path / "a.npz", tmp_path / part], tmp_path / "out.npz")
    with pytest.raises(ValueError, match="other class names"):
        merge_features([tmp_path / "a.npz", tmp_path / "c.npz"], tmp_path / "out.npz")
    # Parts made from another layer, or with other crops: their features cannot stand side by side.
    recipe = {"layer": "fc7", "ten_crop": False, "weights_sha256": "ab", "mean": "the mean pixel", "float_resize": False,
              "precision": "float32"}
    for name, paths, changes in (("d", ["x"], {}), ("e", ["y"], {"layer": "fc6"}), ("f", ["y"], {"ten_crop": True}),
                                 ("g", ["x"], {})):
        np.savez(tmp_path / f"{name}.npz", features=np.zeros((1, 3), np.float32), paths=np.array(paths),
                 recipe=np.array(json.dumps(dict(recipe, **changes))))
    with pytest.raises(ValueError, match="e.npz was made differently from the first part: layer 'fc6', the first part's 'fc7'$"):
        merge_features([tmp_path / "d.npz", tmp_path / "e.npz"], tmp_path / "out.npz")
    with pytest.raises(ValueError, match="f.npz was made differently from the first part: ten_crop True, the first part's False$"):
        merge_features([tmp_path / "d.npz", tmp_path / "f.npz"], tmp_path / "out.npz")
    # Another layer with other members (conv1 unlabelled, fc7 labelled): the layer is what is said.
    np.savez(tmp_path / "h.npz", features=np.zeros((1, 3), np.float32), paths=np.array(["y"]), labels=np.array([0]),
             recipe=np.array(json.dumps(dict(recipe, layer="conv1"))))
    with pytest.raises(FeatureFileError, match="h.npz was made differently from the first part: layer 'conv1', the first part's 'fc7'$"):
        merge_features([tmp_path / "d.npz", tmp_path / "h.npz"], tmp_path / "out.npz")
    # bfloat16 from the same weights file: its digest differs with the precision, which is the cause said.
    np.savez(tmp_path / "i.npz", features=np.zeros((1, 3), np.float32), paths=np.array(["y"]),
             recipe=np.array(json.dumps(dict(recipe, precision="bfloat16", weights_sha256="cd"))))
    with pytest.raises(FeatureFileError, match="i.npz was made differently from the first part: precision 'bfloat16', the first part's 'float32'$"):
        merge_features([tmp_path / "d.npz", tmp_path / "i.npz"], tmp_path / "out.npz")
    # The same images twice: a part given twice, or parts of two runs.
    with pytest.raises(ValueError, match="d.npz is one of the parts; write the merged file under another name"):
        merge_features([tmp_path / "d.npz", tmp_path / "e.npz"], tmp_path / "d.npz")  # it was overwritten
    with pytest.raises(ValueError, match="d.npz is given twice"):
        merge_features([tmp_path / "d.npz", tmp_path / "d.npz"], tmp_path / "out.npz")
    with pytest.raises(ValueError, match="g.npz holds x, as .*d.npz does"):
        merge_features([tmp_path / "d.npz", tmp_path / "g.npz"], tmp_path / "out.npz")
    assert not (tmp_path / "out.npz").exists()


def test_feature_outputs_never_replace_another_kind_of_file(tmp_path):
    """The Python API guards its output as `features` does: a photo or a weights file named by
    mistake is refused before any work (the model is not even looked at), and an earlier feature
    file is replaced unless overwrite=False."""
    np.savez(tmp_path / "a.npz", features=np.ones((2, 3), np.float32), paths=np.array(["x", "y"]))
    np.savez(tmp_path / "weights.npz", conv1_w=np.zeros((2, 2), np.float32))
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n photo")
    (tmp_path / "folder.npz").mkdir()
    originals = {name: (tmp_path / name).read_bytes() for name in ("weights.npz", "photo.png")}
    for output, error, message in (("photo.png", OutputNameError, "photo.png: features are written as .npz; name the "
                                                                   "output so \\(e.g. .*/photo.npz\\)"),
                                   # a hidden file named only by the ending: "e.g. .npz.npz" was the advice
                                   (".npz", OutputNameError, "\\.npz: features are written as \\.npz; name the output "
                                                             "so \\(e.g. .*/features.npz\\)"),
                                   ("weights.npz", AlexftError, "weights.npz: exists and is not a feature file"),
                                   # a folder named as a file is a folder still, as for convert
                                   ("folder.npz", OutputNameError, "folder.npz/: is a folder; features are written as "
                                                                   "one \\.npz file: name it \\(e\\.g\\. .*folder.npz/features.npz\\)")):
        with pytest.raises(error, match=message):
            merge_features([tmp_path / "a.npz"], tmp_path / output)
        with pytest.raises(error, match=message):
            extract_features(None, [tmp_path / "photo.png"], "fc7", tmp_path / output)
    assert {name: (tmp_path / name).read_bytes() for name in originals} == originals
    for call in (merge_features, lambda inputs, output: extract_features(None, inputs, "fc7", output)):
        with pytest.raises(OutputNameError, match=r"later/: names a folder; features are written as one \.npz file: "
                                                  r"name it \(e\.g\. .*later/features\.npz\)"):
            call([tmp_path / "a.npz"], f"{tmp_path}/later/")  # typed as a folder, not made yet
    assert not (tmp_path / "later").exists()
    # A mistaken name's suggestion keeps its folder, and is never a name the weights lookup takes:
    # -o weights/bvlc_alexnet.npy suggested bvlc_alexnet.npz, which classify then took as weights.
    for output, suggested in (("weights/bvlc_alexnet.npy", "weights/bvlc_alexnet_features.npz"),
                              ("out/photo.png", "out/photo.npz")):
        with pytest.raises(OutputNameError, match=f"name the output so \\(e\\.g\\. {re.escape(str(tmp_path / suggested))}\\)$"):
            extract_features(None, [tmp_path / "photo.png"], "fc7", tmp_path / output)
    png = tmp_path / "png.npz"
    png.write_bytes((tmp_path / "photo.png").read_bytes())
    with pytest.raises(AlexftError, match=r"png\.npz: exists and is not a feature file \(a PNG image\), so it is not "
                                          r"replaced, even with overwrite=True; name another output"):
        extract_features(None, [tmp_path / "photo.png"], "fc7", png)
    np.savez(tmp_path / "b.npz", features=np.ones((2, 3), np.float32), paths=np.array(["z", "w"]))
    merge_features([tmp_path / "a.npz"], tmp_path / "out.npz")
    merge_features([tmp_path / "a.npz", tmp_path / "b.npz"], tmp_path / "out.npz")  # an earlier one is replaced
    with np.load(tmp_path / "out.npz") as merged:
        assert merged["features"].shape == (4, 3)
    with pytest.raises(AlexftError, match="out.npz: exists; pass overwrite=True to replace it"):
        merge_features([tmp_path / "a.npz"], tmp_path / "out.npz", overwrite=False)
    (tmp_path / "dangling.npz").symlink_to(tmp_path / "nowhere.npz")  # nothing to lose: replaced
    (tmp_path / "to_weights.npz").symlink_to(tmp_path / "weights.npz")  # judged by what it points at
    merge_features([tmp_path / "a.npz"], tmp_path / "dangling.npz")
    assert np.load(tmp_path / "dangling.npz")["features"].shape == (2, 3)
    with pytest.raises(AlexftError, match="to_weights.npz: exists and is not a feature file"):
        merge_features([tmp_path / "a.npz"], tmp_path / "to_weights.npz")
    merge_features([tmp_path / "a.npz"], tmp_path / "new" / "folder" / "out.npz")  # made, as extract_features does
    assert (tmp_path / "new" / "folder" / "out.npz").is_file()
    with pytest.raises(TypeError, match="merge_features takes feature files on disk; http://host/a.npz is not one"):
        merge_features(["http://host/a.npz"], tmp_path / "out.npz")
