"""alexft.weights.caffe: reading bvlc_alexnet.caffemodel, checked against files written by protobuf itself."""
import math

import numpy as np
import pytest
from caffemodel import (RawBlob, message_classes, tiny_caffe_params, tiny_params, to_caffe_layout,
                        unknown_fields_bytes, write_caffemodel)

from alexft.weights.caffe import looks_like_caffemodel, read_caffemodel
from alexft.errors import WeightsError


@pytest.fixture(scope="module")
def tiny():
    return tiny_params(seed=3)


def assert_same_params(actual, expected):
    assert sorted(actual) == sorted(expected)
    for name, arrays in expected.items():
        for got, want in zip(actual[name], arrays):
            assert got.dtype == np.float32 and got.flags.c_contiguous
            assert got.shape == want.shape, name
            np.testing.assert_array_equal(got, want, err_msg=name)


# --- the writer itself ----------------------------------------------------------------------


def test_writer_packs_data_only_when_asked():
    """Field 5 (data) as one length-delimited field (tag 0x2a) or one fixed32 per value (0x2d)."""
    packed = message_classes(True)["BlobProto"](data=[1.0, 2.0]).SerializeToString()
    unpacked = message_classes(False)["BlobProto"](data=[1.0, 2.0]).SerializeToString()
    assert packed == b"\x2a\x08" + np.array([1, 2], "<f4").tobytes()
    assert unpacked == b"\x2d" + np.array(1, "<f4").tobytes() + b"\x2d" + np.array(2, "<f4").tobytes()


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "unpacked"])
@pytest.mark.parametrize("shape_encoding", ["shape", "legacy"])
@pytest.mark.parametrize("form", ["new", "v1"])
def test_round_trip(tmp_path, tiny, form, shape_encoding, packed):
    path = write_caffemodel(tmp_path / "tiny.caffemodel", to_caffe_layout(tiny), form=form,
                            shape_encoding=shape_encoding, packed=packed)
    assert_same_params(read_caffemodel(path), tiny)


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "unpacked"])
def test_double_data(tmp_path, tiny, packed):
    path = write_caffemodel(tmp_path / "double.caffemodel", to_caffe_layout(tiny), dtype="double", packed=packed)
    assert_same_params(read_caffemodel(path), tiny)


def test_only_the_eight_layers_and_no_net_name(tmp_path, tiny):
    path = write_caffemodel(tmp_path / "bare.caffemodel", to_caffe_layout(tiny), extra_layers=False, net_name=None)
    assert_same_params(read_caffemodel(path), tiny)


def test_unknown_fields_of_every_wire_type_are_skipped(tmp_path, tiny):
    path = write_caffemodel(tmp_path / "tiny.caffemodel", to_caffe_layout(tiny))
    path.write_bytes(unknown_fields_bytes() + path.read_bytes() + unknown_fields_bytes())
    assert_same_params(read_caffemodel(path), tiny)


def test_arrays_are_copies_independent_of_the_file(tmp_path, tiny):
    path = write_caffemodel(tmp_path / "tiny.caffemodel", to_caffe_layout(tiny))
    params = read_caffemodel(path)
    path.write_bytes(b"\0" * path.stat().st_size)
    path.unlink()
    assert_same_params(params, tiny)


def test_full_size_canonical_file(canonical_caffemodel, canonical_params):
    params = read_caffemodel(canonical_caffemodel)
    assert_same_params(params, {name: tuple(arrays) for name, arrays in canonical_params.items()})


# --- the layout conversion, checked from Caffe's definitions -----------------------------------


@pytest.fixture(scope="module")
def tiny_caffe(tmp_path_factory):
    """(Caffe-layout params, what read_caffemodel makes of them)."""
    caffe = tiny_caffe_params(seed=5)
    path = write_caffemodel(tmp_path_factory.mktemp("tiny") / "tiny.caffemodel", caffe)
    return caffe, read_caffemodel(path)


def test_fc6_sees_pool5_as_caffe_does(tiny_caffe):
    caffe, params = tiny_caffe
    pool5 = np.random.default_rng(0).standard_normal((8, 6, 6)).astype(np.float32)  # (C, H, W), batch of one
    caffe_output = caffe["fc6"][0] @ pool5.reshape(-1)  # Caffe flattens NCHW: c*36 + h*6 + w
    alexft_output = pool5.transpose(1, 2, 0).reshape(-1) @ params["fc6"][0]  # alexft flattens NHWC
    np.testing.assert_allclose(alexft_output, caffe_output, rtol=1e-5, atol=1e-5)


def test_fc7_and_fc8_are_transposed(tiny_caffe):
    caffe, params = tiny_caffe
    x = np.random.default_rng(1).standard_normal(10).astype(np.float32)
    for name in ("fc7", "fc8"):
        np.testing.assert_allclose(x @ params[name][0], caffe[name][0] @ x, rtol=1e-5, atol=1e-5)


def caffe_conv_value(weights, inputs, groups, o, y0, x0):
    """Caffe's grouped convolution at output (o, y0, x0), stride 1, no padding, from its definition."""
    outputs, cin = weights.shape[:2]
    g = o // (outputs // groups)
    kh, kw = weights.shape[2:]
    return sum(weights[o, c, y, x] * inputs[g * cin + c, y0 + y, x0 + x]
               for c in range(cin) for y in range(kh) for x in range(kw))


@pytest.mark.parametrize("name, groups", [("conv2", 2), ("conv3", 1), ("conv5", 2)])
def test_grouped_convolution_matches_caffe(tiny_caffe, name, groups):
    import tensorflow as tf

    caffe, params = tiny_caffe
    weights = caffe[name][0]
    kernel = params[name][0]  # (kh, kw, in/group, out)
    outputs, cin = weights.shape[:2]
    inputs = np.random.default_rng(2).standard_normal((cin * groups, 5, 5)).astype(np.float32)  # CHW
    points = [(0, 0, 0), (outputs - 1, 2, 1), (outputs // 2, 1, 2)]  # (output channel, y, x)
    for o, y0, x0 in points:
        g = o // (outputs // groups)
        expected = caffe_conv_value(weights, inputs, groups, o, y0, x0)
        from_kernel = sum(kernel[y, x, c, o] * inputs[g * cin + c, y0 + y, x0 + x]
                          for c in range(cin) for y in range(kernel.shape[0]) for x in range(kernel.shape[1]))
        assert from_kernel == pytest.approx(expected, rel=1e-5, abs=1e-5)
    # And as alexft computes it: split channels, one HWIO conv per group, concatenate.
    nhwc = tf.constant(inputs.transpose(1, 2, 0)[None])
    per_group = zip(tf.split(nhwc, groups, axis=-1), tf.split(tf.constant(kernel), groups, axis=-1))
    result = tf.concat([tf.nn.conv2d(x, k, strides=1, padding="VALID") for x, k in per_group], axis=-1)[0].numpy()
    for o, y0, x0 in points:
        assert result[y0, x0, o] == pytest.approx(caffe_conv_value(weights, inputs, groups, o, y0, x0),
                                                   rel=1e-4, abs=1e-4)


# --- bad inputs ------------------------------------------------------------------------------


def read_error(path):
    with pytest.raises(WeightsError) as caught:
        read_caffemodel(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    return message


@pytest.fixture
def tiny_file(tmp_path, tiny):
    return write_caffemodel(tmp_path / "tiny.caffemodel", to_caffe_layout(tiny))


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes(tmp_path, seed):
    path = tmp_path / "random.caffemodel"
    path.write_bytes(np.random.default_rng(seed).bytes(5000))
    read_error(path)


def test_truncated_files(tmp_path, tiny_file):
    content = tiny_file.read_bytes()
    cut = tmp_path / "cut.caffemodel"
    for size in list(range(1, len(content), 37)) + [len(content) - 1]:
        cut.write_bytes(content[:size])
        read_error(cut)
    fc6 = content.index(b"fc6")
    cut.write_bytes(content[:fc6 + 500])  # inside fc6's weights
    assert "truncated" in read_error(cut)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.caffemodel"
    path.write_bytes(b"")
    assert "empty" in read_error(path)


def test_html_page(tmp_path):
    path = tmp_path / "bvlc_alexnet.caffemodel"
    path.write_text("\n<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head></html>\n")
    assert "HTML" in read_error(path)


@pytest.mark.parametrize("form", ["new", "v1"])
def test_missing_layers_are_named_with_the_layers_found(tmp_path, tiny, form):
    caffe = to_caffe_layout(tiny)
    del caffe["fc7"], caffe["fc8"]
    caffe["fc_8"] = [np.zeros((5, 10), np.float32), np.zeros(5, np.float32)]
    message = read_error(write_caffemodel(tmp_path / "m.caffemodel", caffe, form=form))
    assert "fc7, fc8" in message and "'fc_8'" in message and "'conv1'" in message and "'prob'" in message


def test_no_layers(tmp_path):
    path = tmp_path / "net.caffemodel"
    path.write_bytes(message_classes(True)["NetParameter"](name="AlexNet").SerializeToString())
    assert "no layers" in read_error(path)


def test_duplicate_layer(tmp_path, tiny):
    caffe = to_caffe_layout(tiny)
    path = write_caffemodel(tmp_path / "dup.caffemodel", caffe)
    again = write_caffemodel(tmp_path / "conv1.caffemodel", {"conv1": caffe["conv1"]},
                             extra_layers=False, net_name=None)
    path.write_bytes(path.read_bytes() + again.read_bytes())  # concatenated messages merge: conv1 twice
    assert "conv1 appears more than once" in read_error(path)


@pytest.mark.parametrize("count", [1, 3])
def test_wrong_blob_count(tmp_path, tiny, count):
    caffe = to_caffe_layout(tiny)
    caffe["fc8"] = (caffe["fc8"] * 2)[:count]
    assert f"fc8 has {count} blob(s)" in read_error(write_caffemodel(tmp_path / "b.caffemodel", caffe))


@pytest.mark.parametrize("shape_encoding", ["shape", "legacy"])
def test_data_length_not_matching_shape(tmp_path, tiny, shape_encoding):
    caffe = to_caffe_layout(tiny)
    caffe["fc7"][0] = RawBlob((10, 10), np.zeros(99))
    path = write_caffemodel(tmp_path / "n.caffemodel", caffe, shape_encoding=shape_encoding)
    assert "99 values" in read_error(path)


@pytest.mark.parametrize("layer, blob, shape, cause", [
    ("conv3", 0, (8, 54), "4-D"),
    ("fc7", 0, (2, 5, 10), "inner-product weights"),
    ("fc6", 0, (10, 8 * 35), "square"),
    ("fc6", 0, (10, 7 * 36), "square"),
    ("fc8", 1, (5, 2), "biases"),
    ("fc8", 1, (5, -2), "negative"),
])
def test_shapes_the_conversion_cannot_handle(tmp_path, tiny, layer, blob, shape, cause):
    caffe = to_caffe_layout(tiny)
    caffe[layer][blob] = RawBlob(shape, np.zeros(abs(math.prod(shape))))
    message = read_error(write_caffemodel(tmp_path / "s.caffemodel", caffe))
    assert layer in message and cause in message


@pytest.mark.parametrize("content, cause", [
    (b"\x0b\x08\x01\x0c", "group"),  # field 1 as a group
    (b"\x0f\x00", "wire type 7"),
    (b"\x00\x01", "field number 0"),
    (b"\xa2\x06\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "longer than 10 bytes"),
    (b"\x08\x01", "wire type 0"),  # name as a number
])
def test_malformed_protobuf(tmp_path, content, cause):
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(content)
    assert cause in read_error(path)


def test_other_files(tmp_path):
    np.save(tmp_path / "weights.npy", np.zeros(3))
    np.savez(tmp_path / "weights.npz", a=np.zeros(3))
    for name in ("weights.npy", "weights.npz"):
        read_error(tmp_path / name)
    assert "not found" in read_error(tmp_path / "missing.caffemodel")
    assert "folder" in read_error(tmp_path)


# --- looks_like_caffemodel -------------------------------------------------------------------


@pytest.mark.parametrize("options", [{"form": "new"}, {"form": "v1"}, {"net_name": None},
                                     {"net_name": None, "form": "v1"}, {"net_name": "Réseau"}])
def test_recognises_caffemodels(tmp_path, tiny, options):
    path = write_caffemodel(tmp_path / "tiny.caffemodel", to_caffe_layout(tiny), **options)
    content = path.read_bytes()
    for size in (4, 9, 16, 64):
        assert looks_like_caffemodel(content[:size]), content[:size]


@pytest.mark.parametrize("head", [
    b"", b"\x93NUMPY\x01\x00v\x00{'descr'", b"PK\x03\x04\x14\x00\x00\x00", b"\x89HDF\r\n\x1a\n",
    b"<!DOCTYPE html><html>", b'name: "AlexNet"\nlayer {', b"\n\n<html>\n<head>", b"\n\x05ab\x00cd\x12",
    b"\x0a\x07AlexNet\x0a\x03abc",
])
def test_rejects_other_heads(head):
    assert not looks_like_caffemodel(head)


def test_rarely_accepts_random_bytes():
    rng = np.random.default_rng(0)
    accepted = sum(looks_like_caffemodel(rng.bytes(64)) for _ in range(10000))
    assert accepted < 100  # < 1%
