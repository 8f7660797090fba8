"""Reading, checking, assigning and saving weights; the legacy pickle is never trusted."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from alexft import weights
from alexft.errors import WeightsError
from alexft.model import build_alexnet
from fixtures import CANONICAL_SHAPES, random_params
from py2pickle import npy_header, python2_npy_bytes, write_python2_npy

NUMPY_TEST_DATA = Path(np.__file__).parent / "lib" / "tests" / "data"


def small_dict_file(path, params=None):
    """A Python-2 pickled layer dict with tiny arrays: enough for pickle-level checks."""
    params = params or {"conv1": [np.ones((2, 2), np.float32), np.zeros(2, np.float32)]}
    return write_python2_npy(path, params)


def test_canonical_python2_file_loads_every_layer_exactly(canonical_weights_file, canonical_params):
    loaded = weights.load(canonical_weights_file)
    assert list(loaded.params) == list(CANONICAL_SHAPES)
    for name, (kernel, bias) in canonical_params.items():
        np.testing.assert_array_equal(loaded.params[name][0], kernel)
        np.testing.assert_array_equal(loaded.params[name][1], bias)
        assert loaded.params[name][0].dtype == np.float32
    assert loaded.num_classes == 1000 and loaded.class_names is None


def test_fixture_is_what_numpy_itself_reads_as_a_python2_file(tmp_path):
    # The hand-built stream is read by numpy's own (unsafe) loader the way the original is.
    params = {"fc8": [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(3, np.float32)]}
    path = small_dict_file(tmp_path / "small.npy", params)
    content = np.load(path, allow_pickle=True, encoding="latin1").item()
    np.testing.assert_array_equal(content["fc8"][0], params["fc8"][0])
    with pytest.raises(UnicodeError):  # the Python 3 default fails, as documented
        np.load(path, allow_pickle=True).item()


def malicious_npy(path, marker):
    """An object .npy whose pickle creates `marker` when unpickled unsafely."""
    code = f"open({str(marker)!r}, 'w').write('pwned')".encode()
    stream = b"\x80\x02c__builtin__\neval\nq\x01U" + bytes([len(code)]) + code + b"\x85R."
    path.write_bytes(npy_header() + stream)
    return path


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "created-by-pickle"
    path = malicious_npy(tmp_path / "evil.npy", marker)
    # Control: numpy's unsafe path really would run it (in another process).
    subprocess.run(
        [sys.executable, "-c", f"import numpy; numpy.load({str(path)!r}, allow_pickle=True, encoding='latin1')"],
        check=True,
    )
    assert marker.exists()
    marker.unlink()
    with pytest.raises(WeightsError, match=r"evil\.npy: unsafe or corrupt pickle: refused to load __builtin__\.eval"):
        weights.load(path)
    assert not marker.exists()


def test_numpy_shipped_python2_object_file_is_refused_by_its_global(tmp_path):
    # A genuine Python 2 file from numpy's test data that references __builtin__.xrange.
    with pytest.raises(WeightsError, match=r"refused to load __builtin__\.xrange"):
        weights.load(NUMPY_TEST_DATA / "py2-objarr.npy")


def test_plain_array_npy_is_not_taken_for_weights():
    with pytest.raises(WeightsError, match=r"win64python2\.npy: \.npy holds a plain float64 array"):
        weights.load(NUMPY_TEST_DATA / "win64python2.npy")


@pytest.mark.parametrize(
    "content, cause",
    [
        (b"", "weights file is empty"),
        (b"<!DOCTYPE html><html><body>Not Found</body></html>", "HTML/XML page"),
        (b"\x00\x01garbage" * 10, "not a weights file"),
        (b"\x93NUMPY\x01\x00\xff\xff{'descr'", "corrupt .npy header"),
        # A line break alone: it had been taken for a Caffe model's first field ("corrupt protobuf").
        (b"\n", r"not a weights file \(it starts with b'\\n'\); expected \.npy, \.npz or \.caffemodel$"),
    ],
)
@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_files_that_are_not_weights_get_one_line_errors(tmp_path, content, cause, suffix):
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=cause) as caught:
        weights.load(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_truncated_legacy_file_is_an_error(tmp_path):
    data = python2_npy_bytes({"fc7": [np.ones((64, 64), np.float32), np.ones(64, np.float32)]})
    path = tmp_path / "cut.npy"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=r"cut\.npy: .*(truncated|corrupt|ends early)"):
        weights.load(path)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(WeightsError, match="weights file not found"):
        weights.load(tmp_path / "nope.npy")


def with_change(params, layer, index, value):
    changed = {name: list(pair) for name, pair in params.items()}
    if value is None:
        del changed[layer]
    else:
        changed[layer][index] = value
    return changed


@pytest.mark.parametrize(
    "layer, index, value, message",
    [
        ("conv3", 0, None, "missing layer.s. conv3"),
        ("conv2", 0, np.zeros((5, 5, 96, 256), np.float32),
         r"conv2 weights have shape \(5, 5, 96, 256\); this model needs \(5, 5, 48, 256\) \(an ungrouped"),
        ("fc6", 1, np.zeros(4095, np.float32), r"fc6 biases have shape \(4095,\); this model needs \(4096,\)"),
        ("conv1", 0, np.zeros((11, 11, 3, 96), np.float64), "conv1 weights are float64, expected float32"),
        ("fc7", 1, np.full(4096, np.nan, np.float32), "fc7 biases contain NaN or infinite values"),
        ("conv4", 1, "not an array", "conv4 biases is a str, not an array"),
    ],
)
def test_schema_errors_name_the_layer_and_shapes(canonical_params, layer, index, value, message):
    with pytest.raises(WeightsError, match=message):
        weights.check(with_change(canonical_params, layer, index, value), "w.npy")


def test_unknown_layer_and_bad_structure_are_errors(tmp_path, canonical_params):
    params = dict(canonical_params, fc9=[np.zeros(1, np.float32)] * 2)
    with pytest.raises(WeightsError, match="unknown layer.s. fc9"):
        weights.check(params, "w.npy")
    path = tmp_path / "structure.npy"
    np.save(path, {"conv1": np.zeros(3, np.float32)}, allow_pickle=True)  # one array, not [W, b]
    with pytest.raises(WeightsError, match=r"structure\.npy: layer conv1 should be \[weights, biases\], got a ndarray"):
        weights.load(path)


def test_file_fc8_of_other_class_count_suggests_skip(canonical_params):
    with pytest.raises(WeightsError, match=r"fc8 weights have shape \(4096, 1000\); this model needs \(4096, 10\): skip fc8 to train a new classifier \(--skip fc8; skip=\[\"fc8\"\] in Python\)"):
        weights.check(canonical_params, "w.npy", num_classes=10)
    weights.check(canonical_params, "w.npy", num_classes=10, skip=("fc8",))


def test_npz_round_trip_keeps_arrays_and_class_names(tmp_path):
    params = {name: tuple(pair) for name, pair in random_params(seed=2, num_classes=3).items()}
    path = weights.save(weights.WeightSet(params, ["cat", "dog", "ëlk"]), tmp_path / "model.npz")
    loaded = weights.load(path)
    assert loaded.class_names == ["cat", "dog", "ëlk"] and loaded.num_classes == 3
    for name in params:
        np.testing.assert_array_equal(loaded.params[name][0], params[name][0])
    assert not list(tmp_path.glob(".*tmp*")), "the temporary file was left behind"
    # Shown by what it holds (its dataclass repr listed every array: 80,000 characters in a cell)
    assert repr(loaded) == (f"WeightSet(conv1, conv2, conv3, conv4, conv5, fc6, fc7, fc8, 3 classes named 'cat', 'dog', "
                            f"'ëlk' from {path})")
    assert repr(weights.WeightSet({"conv1": params["conv1"]})) == "WeightSet(conv1)"
    assert repr(weights.WeightSet(params, np.array(["a", "b", "c"]))).endswith("3 classes named 'a', 'b', 'c')")


def test_npz_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, **{"conv1/weights": np.array([{"a": 1}], dtype=object), "conv1/biases": np.zeros(1)})
    # Refused as what it is, not as damage ("corrupt or truncated .npz (ValueError: ...)").
    with pytest.raises(WeightsError, match=r"^\S*objects\.npz: not a weights file: conv1/weights\.npy holds Python "
                                           r"objects, which are never unpickled \(weights are arrays of numbers\)$"):
        weights.load(path)


def test_truncated_npz_is_an_error(tmp_path):
    params = {name: tuple(pair) for name, pair in random_params(seed=2, num_classes=3).items()}
    path = weights.save(weights.WeightSet(params), tmp_path / "model.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(WeightsError, match=rf"model\.npz: the file ends early \({len(data) // 3:,} bytes; an interrupted "
                                          r"download or copy\?\)$"):
        weights.load(path)


def test_python3_bytes_keys_are_normalised(tmp_path, canonical_params):
    path = tmp_path / "bytes_keys.npy"
    np.save(path, {name.encode(): pair for name, pair in canonical_params.items()}, allow_pickle=True)
    assert list(weights.load(path).params) == list(CANONICAL_SHAPES)


def test_skipped_layers_keep_their_fresh_init(canonical_weights_file):
    model = build_alexnet(num_classes=1000, seed=5)
    fresh_fc8 = model.get_layer("fc8").kernel.numpy().copy()
    loaded = weights.load(canonical_weights_file)
    assert weights.assign(model, loaded, skip=("fc8",)) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"]
    np.testing.assert_array_equal(model.get_layer("fc8").kernel.numpy(), fresh_fc8)
    np.testing.assert_array_equal(model.get_layer("fc7").kernel.numpy(), loaded.params["fc7"][0])


def test_assign_refuses_a_class_count_mismatch(canonical_weights_file):
    loaded = weights.load(canonical_weights_file)
    with pytest.raises(WeightsError, match=r"fc8 weights have shape \(4096, 1000\); this model needs \(4096, 7\): skip fc8 to train a new classifier \(--skip fc8"):
        weights.assign(build_alexnet(num_classes=7), loaded)


def test_npz_written_by_numpy_in_other_ways_reads_the_same(tmp_path):
    # Compressed members and Fortran-ordered arrays take other paths through the reader.
    rng = np.random.default_rng(3)
    arrays = {"fc6/weights": np.asfortranarray(rng.standard_normal((6, 4), dtype=np.float32)),
              "fc6/biases": rng.standard_normal(4, dtype=np.float32)}
    np.savez_compressed(tmp_path / "compressed.npz", **arrays, class_names=np.array(["a", "b", "c", "d"]))
    np.savez(tmp_path / "fortran.npz", **arrays)
    for path in (tmp_path / "compressed.npz", tmp_path / "fortran.npz"):
        params, class_names, file_format = weights.read(path)
        assert file_format == "npz"
        np.testing.assert_array_equal(params["fc6"][0], arrays["fc6/weights"])
        np.testing.assert_array_equal(params["fc6"][1], arrays["fc6/biases"])
    assert weights.read(tmp_path / "compressed.npz")[1] == ["a", "b", "c", "d"]


def test_class_names_must_match_fc8_in_load_and_info(tmp_path):
    from alexft.weights.tools import describe

    params = {name: tuple(pair) for name, pair in random_params(seed=4, num_classes=3).items()}
    path = weights.save(weights.WeightSet(params, ["cat", "dog"]), tmp_path / "named.npz")
    with pytest.raises(WeightsError, match=r"named\.npz: 2 class names for 3 fc8 outputs"):
        weights.load(path)
    assert describe(path)["problem"] == f"{path}: 2 class names for 3 fc8 outputs"


def test_a_damaged_byte_in_an_npz_is_refused_by_its_crc(tmp_path, monkeypatch):
    """The fast reader takes its arrays straight from the file; the zip's CRC-32s are what tell a
    damaged copy from a good one. Small chunks: members span many, whose CRCs are combined.
    (Every full-size load in the suite checks 8 MB chunks the same way.)"""
    import zipfile

    from alexft.weights import formats

    monkeypatch.setattr(formats, "READ_CHUNK", 4096)
    rng = np.random.default_rng(4)
    arrays = {"fc6/weights": rng.standard_normal((300, 70), dtype=np.float32),
              "fc6/biases": rng.standard_normal(70, dtype=np.float32),
              "fc7/weights": np.asfortranarray(rng.standard_normal((90, 50), dtype=np.float32)),
              "fc7/biases": rng.standard_normal(50, dtype=np.float32)}
    np.savez(tmp_path / "good.npz", **arrays)
    good = (tmp_path / "good.npz").read_bytes()
    params = weights.read(tmp_path / "good.npz")[0]  # every CRC matches, across chunks
    np.testing.assert_array_equal(params["fc7"][0], arrays["fc7/weights"])
    with zipfile.ZipFile(tmp_path / "good.npz") as archive:
        members = {info.filename: info for info in archive.infolist()}
    for member, position in [("fc6/weights.npy", 0.5), ("fc7/weights.npy", 0.3), ("fc7/biases.npy", 0.99)]:
        info = members[member]
        with open(tmp_path / "good.npz", "rb") as handle:  # the local header's lengths, as the reader takes them
            handle.seek(info.header_offset + 26)
            names, extra = int.from_bytes(handle.read(2), "little"), int.from_bytes(handle.read(2), "little")
        damaged = bytearray(good)
        damaged[info.header_offset + 30 + names + extra + int(info.file_size * position)] ^= 0x04  # one bit
        path = tmp_path / "damaged.npz"
        path.write_bytes(bytes(damaged))
        with pytest.raises(WeightsError, match=rf"damaged\.npz: corrupt or truncated \.npz \(ValueError: {member} is "
                                               r"damaged: its bytes do not match the archive's CRC-32\)"):
            weights.read(path)


def test_a_weights_files_digest_is_read_once_until_the_file_changes(tmp_path, monkeypatch):
    """--resume hashed the 233 MB base weights twice (before TensorFlow started and after),
    half a second each. The digest of a large file is remembered while its identity and times
    stay; rewritten (even with the same size and modification time), it is read again."""
    import hashlib

    from alexft.weights import download

    path = tmp_path / "w.npz"
    data = bytearray(np.random.default_rng(0).bytes(download.REMEMBERED_FROM + 1))
    path.write_bytes(bytes(data))
    assert download.file_sha256(path) == hashlib.sha256(data).hexdigest()
    opened = []
    real_open = open
    monkeypatch.setattr(download, "open", lambda *args, **kwargs: opened.append(args[0]) or real_open(*args, **kwargs),
                        raising=False)
    assert download.file_sha256(path) == hashlib.sha256(data).hexdigest() and opened == []
    assert download.file_digests(path)["sha1"] == hashlib.sha1(data).hexdigest() and opened == [path]  # only sha1 was new
    stat = path.stat()
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the same size and time: the change time still differs
    assert download.file_sha256(path) == hashlib.sha256(data).hexdigest() and len(opened) == 2
    small = tmp_path / "image.png"  # images (the feature store hashes thousands) are not remembered
    small.write_bytes(b"x" * 100)
    download.file_sha256(small), download.file_sha256(small)
    assert opened[2:] == [small, small]


def test_bytes_a_stalled_server_sent_are_kept_and_counted(tmp_path, monkeypatch):
    """A server that sent 2,000 bytes and then stalled: each read waited for a whole 1 MiB chunk,
    so the timeout lost what had come, and the message said "connection lost after 0 bytes ...
    no byte was received". What arrives is written as it arrives, counted, and kept to resume."""
    from alexft.weights import download
    from http_server import serving

    body = bytes(range(256)) * 16  # 4,096 bytes announced, half of them sent ("hang")
    monkeypatch.setattr(download, "ATTEMPTS", 1)
    with serving({"/w.npy": ("hang", body)}) as url:
        with pytest.raises(WeightsError, match=r"connection lost after 2,048 bytes \(.*kept 2,048 bytes in "):
            download.download_weights(f"{url}/w.npy", tmp_path / "w.npy", timeout=1)
    assert download.partial_path(tmp_path / "w.npy").read_bytes() == body[:2048]
