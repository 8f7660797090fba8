"""The feature store: a second fine-tuning run on the same images computes nothing the first
one computed, and nothing stored is used unless it belongs to these weights and these files."""
import hashlib
import os
import pickle
import re
import shutil
import sys
import subprocess

import numpy as np
import pytest

from alexft import features as features_module
from alexft import weights
from alexft.data import BrokenFiles
from alexft.feature_store import FeatureStore, StoreSettingError, prefix_identity
from alexft.features import view_features
from alexft.model import build_alexnet, truncated
from alexft.preprocess import image_views, images_below
from alexft.train import finetune

TRAINING = dict(epochs=2, lr=0.001, batch_size=8, val_split=0.2, progress=False)


@pytest.fixture(autouse=True)
def own_store(tmp_path, monkeypatch):
    """A store of this test's own, where the cache folder puts it by default."""
    monkeypatch.delenv("ALEXFT_FEATURE_STORE")


@pytest.fixture
def network_calls(monkeypatch):
    """How often the frozen part runs on a batch of views."""
    calls = []

    class Counted(features_module.InferenceFunction):
        def __call__(self, views, *args, **kwargs):
            calls.append(len(views))
            return super().__call__(views, *args, **kwargs)

    monkeypatch.setattr(features_module, "InferenceFunction", Counted)
    return calls


@pytest.fixture(scope="module")
def prefix(canonical_weights_file):
    model = build_alexnet(1000)
    weights.assign(model, weights.load(canonical_weights_file))
    return truncated(model, "fc7")


def entries(root):
    return sorted(root.glob("*/*/*.npy"))


def test_a_second_run_computes_nothing_and_trains_the_same_model(small_digits_folder, canonical_weights_file, tmp_path,
                                                                 network_calls, prefix):
    said = []
    first = finetune(small_digits_folder, weights=canonical_weights_file, output=tmp_path / "a", log=said.append, **TRAINING)
    images = len(images_below(small_digits_folder))
    assert sum(network_calls) == 10 * images  # ten views of each, all computed
    assert f"feature store: 0 images' features reused, {images} added" in " ".join(said)
    stored = entries(tmp_path / "cache" / "features")
    assert len(stored) == images and all(path.stat().st_size == 10 * 4096 * 4 + 128 for path in stored)

    network_calls.clear()
    said.clear()
    second = finetune(small_digits_folder, weights=canonical_weights_file, output=tmp_path / "b", log=said.append, **TRAINING)
    assert network_calls == []
    assert f"feature store: {images} images' features reused, 0 added" in " ".join(said)
    assert second["val_accuracy"] == first["val_accuracy"] and second["train_loss"] == first["train_loss"]
    a, b = weights.load(tmp_path / "a" / "model.npz"), weights.load(tmp_path / "b" / "model.npz")
    for layer in ("fc8",):
        for one, other in zip(a.params[layer], b.params[layer]):
            np.testing.assert_array_equal(one, other)

    # What was stored is fc7 of Caffe's ten views, computed here by Keras' own predict.
    path = images_below(small_digits_folder)[7]
    expected = prefix.predict(image_views(path, ten_crop=True), verbose=0)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (entry,) = [stored_path for stored_path in stored if stored_path.stem == digest]
    np.testing.assert_allclose(np.load(entry), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_an_interrupted_caching_keeps_what_it_computed(small_digits_folder, canonical_weights_file, tmp_path,
                                                       monkeypatch):
    calls_before_ctrl_c, network_calls = 1, []  # Ctrl-C after the first 32 of the 50 training images
    finished_first = False

    class Interrupted(features_module.InferenceFunction):
        def __call__(self, *args, **kwargs):
            if len(network_calls) == calls_before_ctrl_c and not finished_first:
                raise KeyboardInterrupt
            network_calls.append(1)
            return super().__call__(*args, **kwargs)

    monkeypatch.setattr(features_module, "InferenceFunction", Interrupted)
    said = []
    with pytest.raises(KeyboardInterrupt):
        finetune(small_digits_folder, weights=canonical_weights_file, output=tmp_path / "a", log=said.append, **TRAINING)
    assert len(entries(tmp_path / "cache" / "features")) == 32  # the batch computed before Ctrl-C
    assert said[-1].startswith("feature store: the 32 images' features computed before the interruption are kept")

    finished_first = True
    said.clear()
    finetune(small_digits_folder, weights=canonical_weights_file, output=tmp_path / "a", log=said.append, **TRAINING)
    images = len(images_below(small_digits_folder))
    assert f"feature store: 32 images' features reused, {images - 32} added" in " ".join(said), \
        [line for line in said if "store" in line]


def _store(prefix, said=None):
    return FeatureStore.for_prefix(prefix, "fc7", say=(said.append if said is not None else None))


def test_features_follow_the_file_contents_not_the_paths(small_digits_folder, prefix, tmp_path, network_calls,
                                                        monkeypatch, capsys):
    paths = images_below(small_digits_folder)[:12]
    hashed, digest = [], features_module.file_digest
    monkeypatch.setattr(features_module, "file_digest", lambda path: hashed.append(path))
    first, kept = view_features(prefix, paths, BrokenFiles(), store=_store(prefix))
    assert list(kept) == list(range(12)) and sum(network_calls) == 120
    assert hashed == []  # an empty store is not looked in: no file is read twice
    monkeypatch.setattr(features_module, "file_digest", digest)

    # Copied elsewhere under other names, one file's bytes changed, and one file broken:
    # only the changed file is computed, the broken one is named, the rest is read back.
    moved = []
    for index, path in enumerate(paths):
        moved.append(tmp_path / "elsewhere" / f"{index:03d}{path.suffix}")
        moved[-1].parent.mkdir(exist_ok=True)
        shutil.copyfile(path, moved[-1])
    shutil.copyfile(images_below(small_digits_folder)[40], moved[3])
    moved[5].write_bytes(b"not an image")
    network_calls.clear()
    ledger = BrokenFiles(max_fraction=1)
    capsys.readouterr()
    again, kept = view_features(prefix, moved, ledger, store=_store(prefix), progress=True, desc="caching")
    assert network_calls == [10] and list(ledger.errors) == [str(moved[5])]
    # The bar counts the two images computed, and says where the other ten came from.
    assert "caching (10 of 12 stored)" in capsys.readouterr().err
    assert list(kept) == [index for index in range(12) if index != 5]
    unchanged = [row for row, index in enumerate(kept) if index != 3]
    np.testing.assert_array_equal(again[unchanged], first[[index for index in kept if index != 3]])
    fresh, _ = view_features(prefix, [moved[3]], BrokenFiles())
    np.testing.assert_array_equal(again[list(kept).index(3)], fresh[0])


def test_other_frozen_weights_or_layers_have_their_own_entries(canonical_params):
    def identity(params, layer="fc7"):
        model = build_alexnet(1000)
        weights.assign(model, weights.WeightSet(params))
        return prefix_identity(truncated(model, layer), layer)

    base = identity(canonical_params)
    changed_conv1 = {**canonical_params, "conv1": (canonical_params["conv1"][0].copy(), canonical_params["conv1"][1])}
    changed_conv1["conv1"][0].flat[123] += 1e-6
    changed_fc8 = {**canonical_params, "fc8": (canonical_params["fc8"][0] * 2, canonical_params["fc8"][1])}
    assert identity(changed_conv1) != base  # one weight of a frozen layer
    assert identity(changed_fc8) == base  # the trained layer is not part of the features
    assert identity(canonical_params, "fc6") != base


class _WritesAFile:
    def __reduce__(self):
        return (open, ("/tmp/alexft-store-pickle-ran", "w"))


def test_damaged_or_foreign_entries_are_computed_again_and_never_unpickled(small_digits_folder, prefix, tmp_path,
                                                                           network_calls):
    paths = images_below(small_digits_folder)[:4]
    first, _ = view_features(prefix, paths, BrokenFiles(), store=_store(prefix))
    stored = entries(tmp_path / "cache" / "features")
    stored[0].write_bytes(stored[0].read_bytes()[:1000])  # cut short
    np.save(stored[1], np.zeros((10, 4096), np.float64))  # another dtype
    np.save(stored[2], np.zeros((9, 4096), np.float32))  # another shape
    with open(stored[3], "wb") as handle:
        pickle.dump(np.array([_WritesAFile()], dtype=object), handle)
    if os.path.exists("/tmp/alexft-store-pickle-ran"):
        os.unlink("/tmp/alexft-store-pickle-ran")
    left_by_a_kill, being_written = (stored[0].parent / f".{stored[0].stem}.{pid}.tmp" for pid in (1, 2))
    for path in (left_by_a_kill, being_written):
        path.write_bytes(b"half")
    os.utime(left_by_a_kill, (1, 1))
    network_calls.clear()
    store = _store(prefix)
    again, _ = view_features(prefix, paths, BrokenFiles(), store=store)
    store.trim()  # as a run does once its features are cached
    assert sum(network_calls) == 40 and store.read == 0 and store.written == 4
    assert not left_by_a_kill.exists() and being_written.exists()  # another run's may be in progress
    assert not os.path.exists("/tmp/alexft-store-pickle-ran")
    np.testing.assert_array_equal(again, first)
    assert all(np.load(path).shape == (10, 4096) for path in entries(tmp_path / "cache" / "features"))


def test_the_store_keeps_within_its_limit_dropping_the_least_recently_used(small_digits_folder, prefix, tmp_path,
                                                                          monkeypatch, network_calls):
    paths = images_below(small_digits_folder)
    entry = 10 * 4096 * 4 + 128
    monkeypatch.setenv("ALEXFT_FEATURE_STORE_GB", str(10.5 * entry / 1e9))  # room for ten entries
    root = tmp_path / "cache" / "features"
    yours = [root / "notes.npy", root / "ab" / "cd" / "yours.npy", root / ("e" * 31) / "ab" / f"{'a' * 64}.npy"]
    for path in yours:  # $ALEXFT_FEATURE_STORE may name a folder holding files of the user's
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.zeros(50_000, np.float32))
        os.utime(path, (1, 1))
    for chunk in (paths[:6], paths[6:12]):
        store = _store(prefix)
        view_features(prefix, chunk, BrokenFiles(), store=store)
        store.trim()
    names = {path.stem for path in entries(root) if path not in yours}
    assert len(names) == 10  # the first set's two oldest entries went
    assert all(path.exists() for path in yours)
    store = _store(prefix)
    view_features(prefix, paths[6:12], BrokenFiles(), store=store)
    assert store.read == 6

    # A set larger than the whole store is not kept at all, and the user is told once.
    said = []
    store = _store(prefix, said)
    store.fits(len(paths))
    view_features(prefix, paths[12:30], BrokenFiles(), store=store)
    assert store.written == 0 and len(said) == 1 and "not kept for the next run" in said[0]
    assert {path.stem for path in entries(root) if path not in yours} == names


def test_a_store_that_cannot_be_written_never_stops_the_work(small_digits_folder, prefix, tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("ALEXFT_FEATURE_STORE", str(tmp_path / "a-file"))
    said = []
    store = _store(prefix, said)
    features, kept = view_features(prefix, images_below(small_digits_folder)[:3], BrokenFiles(), store=store)
    assert len(kept) == 3 and store.written == 0
    assert len(said) == 1 and said[0].startswith(f"feature store: cannot write to {tmp_path / 'a-file'}")


def test_a_write_cut_short_is_said_as_such(tmp_path):
    """A disk that filled during a write gave "cannot write to STORE (40960 requested and 30688
    written)", numpy's words for a short write, which name no cause. A file size limit cuts the
    write short here as a full disk does (in a child process, where the limit stays)."""
    script = """if True:
        import resource, signal, sys
        import numpy as np
        from alexft.feature_store import FeatureStore
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        store = FeatureStore(sys.argv[1], "0" * 32, (10, 4096), limit=10**9, say=print)
        kept = store.save("ab" * 32, np.ones((10, 4096), np.float32))
        assert kept.shape == (10, 4096) and not store.writable and store.written == 0
    """
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "store")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(re.escape(f"feature store: cannot write to {tmp_path / 'store'} (a write was cut short: the disk "
                                  "is full, or a quota or file size limit was reached (") + r"\d+ requested and \d+ written"
                        + re.escape(")); this run goes on without keeping its features\n"), done.stdout), done.stdout
    assert [path.name for path in (tmp_path / "store").rglob("*") if path.is_file()] == []


def test_the_store_can_be_turned_off_and_its_limit_must_be_a_number(prefix, monkeypatch):
    monkeypatch.setenv("ALEXFT_FEATURE_STORE", "off")
    assert _store(prefix) is None
    monkeypatch.setenv("ALEXFT_FEATURE_STORE", "")
    for bad in ("ten", "-1", "nan"):
        monkeypatch.setenv("ALEXFT_FEATURE_STORE_GB", bad)
        with pytest.raises(StoreSettingError, match=f"ALEXFT_FEATURE_STORE_GB='{bad}': expected a number of gigabytes"):
            _store(prefix)


def test_an_image_edited_after_it_was_looked_up_is_kept_under_its_new_content(small_digits_folder, prefix, tmp_path,
                                                                               monkeypatch):
    paths = []
    for index, source in enumerate(images_below(small_digits_folder)[:3]):
        paths.append(tmp_path / f"{index}{source.suffix}")
        shutil.copyfile(source, paths[-1])
    original, edit = paths[1].read_bytes(), images_below(small_digits_folder)[50].read_bytes()
    looked_up = features_module.file_digest

    def then_edited(path):  # the user saves an edit between the look-up and the decoding
        digest = looked_up(path)
        if path == paths[1]:
            path.write_bytes(edit)
        return digest

    view_features(prefix, paths[:1], BrokenFiles(), store=_store(prefix))  # the store is looked in from now on
    monkeypatch.setattr(features_module, "file_digest", then_edited)
    store = _store(prefix)
    features, _ = view_features(prefix, paths, BrokenFiles(), store=store)
    stored = {path.stem for path in entries(tmp_path / "cache" / "features")}
    sha = lambda data: hashlib.sha256(data).hexdigest()  # noqa: E731
    assert (store.read, store.written) == (1, 2) and sha(original) not in stored
    assert stored == {sha(paths[0].read_bytes()), sha(edit), sha(paths[2].read_bytes())}
    again = _store(prefix)
    assert np.array_equal(again.load(sha(edit)), features[1])


def test_the_first_entry_written_for_an_image_stays_and_later_writers_use_it(tmp_path):
    first, second = (FeatureStore(tmp_path, "f" * 64, (10, 4), limit=10**6) for _ in range(2))
    digest = "0" * 64
    ours, theirs = np.full((10, 4), 1, np.float32), np.full((10, 4), 2, np.float32)
    assert first.save(digest, ours) is ours
    np.testing.assert_array_equal(second.save(digest, theirs), ours)  # computed meanwhile by another run
    assert (first.written, second.written) == (1, 0)  # the log counts entries added, not attempts
    # ... and says what the second did: it had said "0 reused, 0 added" of images it computed (a helper's two runs).
    assert second.describe().startswith("feature store: 0 images' features reused, 0 added, 1 computed here but stored "
                                        "first (by another run, or as a copy of the image in this one; the stored values "
                                        "used) (")
    assert ", 1 added (" in first.describe() and "computed here" not in first.describe()
    np.testing.assert_array_equal(second.load(digest), ours)
    assert not list(tmp_path.rglob("*.tmp"))
    entry = next(tmp_path.rglob("*.npy"))
    entry.write_bytes(b"damaged")
    np.testing.assert_array_equal(second.save(digest, theirs), theirs)  # a damaged entry is replaced
    np.testing.assert_array_equal(first.load(digest), theirs)
    assert entry.stat().st_mode & 0o777 == 0o666 & ~_umask()  # readable by others as the user's files are


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
