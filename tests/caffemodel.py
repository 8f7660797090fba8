"""Test-side writer of Caffe `.caffemodel` files, independent of `alexft.weights.caffe`.

The messages are built at run time with Google's `protobuf` package from the field numbers
of BVLC/caffe's src/caffe/proto/caffe.proto (a subset: what a trained AlexNet holds, plus a
few fields the reader must skip), so the bytes come from protobuf's own serializer rather
than from the hand-written reader's understanding of the format.
"""
import math
from functools import lru_cache

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto

# (name, number, label, type, message/enum type name, packed?) per message; packed=None leaves
# proto2's default (unpacked); packed="variant" follows the writer's `packed` argument.
OPTIONAL, REPEATED = F.LABEL_OPTIONAL, F.LABEL_REPEATED
MESSAGES = {
    "BlobShape": [("dim", 1, REPEATED, F.TYPE_INT64, None, "variant")],
    "BlobProto": [
        ("shape", 7, OPTIONAL, F.TYPE_MESSAGE, "BlobShape", None),
        ("data", 5, REPEATED, F.TYPE_FLOAT, None, "variant"),
        ("diff", 6, REPEATED, F.TYPE_FLOAT, None, "variant"),
        ("double_data", 8, REPEATED, F.TYPE_DOUBLE, None, "variant"),
        ("num", 1, OPTIONAL, F.TYPE_INT32, None, None),
        ("channels", 2, OPTIONAL, F.TYPE_INT32, None, None),
        ("height", 3, OPTIONAL, F.TYPE_INT32, None, None),
        ("width", 4, OPTIONAL, F.TYPE_INT32, None, None),
    ],
    "ParamSpec": [
        ("lr_mult", 3, OPTIONAL, F.TYPE_FLOAT, None, None),
        ("decay_mult", 4, OPTIONAL, F.TYPE_FLOAT, None, None),
    ],
    "ConvolutionParameter": [
        ("num_output", 1, OPTIONAL, F.TYPE_UINT32, None, None),
        ("pad", 3, REPEATED, F.TYPE_UINT32, None, None),
        ("kernel_size", 4, REPEATED, F.TYPE_UINT32, None, None),
        ("group", 5, OPTIONAL, F.TYPE_UINT32, None, None),
        ("stride", 6, REPEATED, F.TYPE_UINT32, None, None),
    ],
    "LayerParameter": [
        ("name", 1, OPTIONAL, F.TYPE_STRING, None, None),
        ("type", 2, OPTIONAL, F.TYPE_STRING, None, None),
        ("bottom", 3, REPEATED, F.TYPE_STRING, None, None),
        ("top", 4, REPEATED, F.TYPE_STRING, None, None),
        ("loss_weight", 5, REPEATED, F.TYPE_FLOAT, None, None),  # unpacked: wire type 5 to skip
        ("param", 6, REPEATED, F.TYPE_MESSAGE, "ParamSpec", None),
        ("blobs", 7, REPEATED, F.TYPE_MESSAGE, "BlobProto", None),
        ("phase", 10, OPTIONAL, F.TYPE_ENUM, "Phase", None),
        ("convolution_param", 106, OPTIONAL, F.TYPE_MESSAGE, "ConvolutionParameter", None),
    ],
    "V1LayerParameter": [
        ("bottom", 2, REPEATED, F.TYPE_STRING, None, None),
        ("top", 3, REPEATED, F.TYPE_STRING, None, None),
        ("name", 4, OPTIONAL, F.TYPE_STRING, None, None),
        ("type", 5, OPTIONAL, F.TYPE_ENUM, "V1LayerParameter.LayerType", None),
        ("blobs", 6, REPEATED, F.TYPE_MESSAGE, "BlobProto", None),
        ("blobs_lr", 7, REPEATED, F.TYPE_FLOAT, None, None),
        ("weight_decay", 8, REPEATED, F.TYPE_FLOAT, None, None),
        ("convolution_param", 10, OPTIONAL, F.TYPE_MESSAGE, "ConvolutionParameter", None),
    ],
    "NetParameter": [
        ("name", 1, OPTIONAL, F.TYPE_STRING, None, None),
        ("layers", 2, REPEATED, F.TYPE_MESSAGE, "V1LayerParameter", None),
        ("layer", 100, REPEATED, F.TYPE_MESSAGE, "LayerParameter", None),
    ],
}
V1_LAYER_TYPES = {
    "NONE": 0, "CONVOLUTION": 4, "DATA": 5, "DROPOUT": 6, "INNER_PRODUCT": 14, "LRN": 15,
    "POOLING": 17, "RELU": 18, "SOFTMAX": 20,
}
V1_TYPE_OF = {
    "Data": "DATA", "Convolution": "CONVOLUTION", "ReLU": "RELU", "LRN": "LRN", "Pooling": "POOLING",
    "InnerProduct": "INNER_PRODUCT", "Dropout": "DROPOUT", "Softmax": "SOFTMAX",
}

# bvlc_alexnet's layers in order: (name, type, bottom, group of a convolution).
ALEXNET_LAYERS = [
    ("data", "Data", None, None),
    ("conv1", "Convolution", "data", 1), ("relu1", "ReLU", "conv1", None), ("norm1", "LRN", "conv1", None),
    ("pool1", "Pooling", "norm1", None),
    ("conv2", "Convolution", "pool1", 2), ("relu2", "ReLU", "conv2", None), ("norm2", "LRN", "conv2", None),
    ("pool2", "Pooling", "norm2", None),
    ("conv3", "Convolution", "pool2", 1), ("relu3", "ReLU", "conv3", None),
    ("conv4", "Convolution", "conv3", 2), ("relu4", "ReLU", "conv4", None),
    ("conv5", "Convolution", "conv4", 2), ("relu5", "ReLU", "conv5", None),
    ("pool5", "Pooling", "conv5", None),
    ("fc6", "InnerProduct", "pool5", None), ("relu6", "ReLU", "fc6", None), ("drop6", "Dropout", "fc6", None),
    ("fc7", "InnerProduct", "fc6", None), ("relu7", "ReLU", "fc7", None), ("drop7", "Dropout", "fc7", None),
    ("fc8", "InnerProduct", "fc7", None),
    ("prob", "Softmax", "fc8", None),
]


class RawBlob:
    """A blob written with exactly this shape and these values, consistent or not."""

    def __init__(self, shape, values):
        self.shape, self.values = tuple(shape), np.asarray(values, dtype=np.float32).ravel()


@lru_cache(maxsize=None)
def message_classes(packed):
    """{message name: class} for one packing of the repeated numbers (BlobProto.data, ...)."""
    file_proto = descriptor_pb2.FileDescriptorProto(name="caffe_subset.proto", package="caffe", syntax="proto2")
    phase = file_proto.enum_type.add(name="Phase")
    phase.value.add(name="TRAIN", number=0)
    phase.value.add(name="TEST", number=1)
    for message_name, fields in MESSAGES.items():
        message = file_proto.message_type.add(name=message_name)
        for name, number, label, field_type, type_name, packing in fields:
            field = message.field.add(name=name, number=number, label=label, type=field_type)
            if type_name:
                field.type_name = f".caffe.{type_name}"
            if packing == "variant":
                field.options.packed = packed
        if message_name == "V1LayerParameter":
            layer_type = message.enum_type.add(name="LayerType")
            for name, number in V1_LAYER_TYPES.items():
                layer_type.value.add(name=name, number=number)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{name}")) for name in MESSAGES}


def write_caffemodel(path, caffe_params, form="new", shape_encoding="shape", packed=True, extra_layers=True,
                     dtype="float", net_name="AlexNet"):
    """Write `{layer: [weights, biases, ...]}` in CAFFE layout as a NetParameter; returns `path`.

    form: "new" (NetParameter.layer = 100, LayerParameter) or "v1" (NetParameter.layers = 2,
    V1LayerParameter). shape_encoding: "shape" (BlobShape) or "legacy" (num, channels, height,
    width, padded with leading ones as old Caffe did). packed: packing of BlobProto.data /
    double_data / BlobShape.dim. dtype: "float" (data) or "double" (double_data).
    extra_layers adds AlexNet's blob-less layers (data, relu, norm, pool, dropout, softmax).
    net_name=None leaves the net unnamed, so the file starts with its first layer.
    Blobs are written in the order given; a RawBlob is written as is.
    """
    classes = message_classes(packed)
    net = classes["NetParameter"]()
    if net_name is not None:
        net.name = net_name
    written = set()
    for name, layer_type, bottom, group in ALEXNET_LAYERS:
        if name in caffe_params:
            _add_layer(net, classes, form, name, layer_type, bottom, group, caffe_params[name], shape_encoding, dtype)
            written.add(name)
        elif extra_layers and not name.startswith(("conv", "fc")):
            _add_layer(net, classes, form, name, layer_type, bottom, group, [], shape_encoding, dtype)
    for name in caffe_params:  # layers AlexNet does not have, e.g. a misnamed one
        if name not in written:
            _add_layer(net, classes, form, name, "InnerProduct", None, None, caffe_params[name], shape_encoding, dtype)
    with open(path, "wb") as handle:
        handle.write(net.SerializeToString())
    return path


def _add_layer(net, classes, form, name, layer_type, bottom, group, blobs, shape_encoding, dtype):
    if form == "new":
        layer = net.layer.add(name=name, type=layer_type)
        if blobs:
            layer.param.add(lr_mult=1, decay_mult=1)
            layer.param.add(lr_mult=2, decay_mult=0)
        if layer_type == "Softmax":
            layer.loss_weight.append(0.0)  # an unpacked float the reader must skip
        layer.phase = 1
    elif form == "v1":
        layer = net.layers.add(name=name, type=V1_TYPE_OF[layer_type])
        if blobs:
            layer.blobs_lr.extend([1.0, 2.0])
            layer.weight_decay.extend([1.0, 0.0])
    else:
        raise ValueError(f"unknown form {form!r}")
    if bottom:
        layer.bottom.append(bottom)
    layer.top.append(name)
    weight_shape = _values_and_shape(blobs[0])[1] if blobs else ()
    if group is not None and weight_shape:
        layer.convolution_param.num_output = weight_shape[0]
        layer.convolution_param.group = group
        layer.convolution_param.kernel_size.append(3)
    for blob in blobs:
        _fill_blob(layer.blobs.add(), blob, shape_encoding, dtype)


def _values_and_shape(blob):
    if isinstance(blob, RawBlob):
        return blob.values, blob.shape
    array = np.asarray(blob, dtype=np.float32)
    return array.ravel(), array.shape


def _fill_blob(message, blob, shape_encoding, dtype):
    values, shape = _values_and_shape(blob)
    if shape_encoding == "shape":
        message.shape.dim.extend(int(dim) for dim in shape)
    elif shape_encoding == "legacy":
        if len(shape) > 4:
            raise ValueError(f"legacy blobs are 4-D at most, got {shape}")
        message.num, message.channels, message.height, message.width = (1,) * (4 - len(shape)) + tuple(shape)
    else:
        raise ValueError(f"unknown shape encoding {shape_encoding!r}")
    target = message.data if dtype == "float" else message.double_data
    target.extend(values.tolist())


def unknown_fields_bytes():
    """A serialized message whose fields (50-54) NetParameter does not have, one per wire type.

    Appended to a NetParameter, protobuf parsers merge it in and must skip the fields.
    """
    file_proto = descriptor_pb2.FileDescriptorProto(name="unknown.proto", package="unknown", syntax="proto2")
    inner = file_proto.message_type.add(name="Inner")
    inner.field.add(name="value", number=1, label=OPTIONAL, type=F.TYPE_FLOAT)
    message = file_proto.message_type.add(name="Unknown")
    for name, number, field_type in [("count", 50, F.TYPE_UINT64), ("ratio", 51, F.TYPE_DOUBLE),
                                     ("scale", 52, F.TYPE_FLOAT), ("label", 53, F.TYPE_STRING),
                                     ("inner", 54, F.TYPE_MESSAGE)]:
        field = message.field.add(name=name, number=number, label=OPTIONAL, type=field_type)
        if field_type == F.TYPE_MESSAGE:
            field.type_name = ".unknown.Inner"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_proto)
    unknown = message_factory.GetMessageClass(pool.FindMessageTypeByName("unknown.Unknown"))
    return unknown(count=300, ratio=0.5, scale=2.0, label="conv1", inner={"value": 1.0}).SerializeToString()


# --- alexft layout -> Caffe layout, from the index definitions ------------------------------


def to_caffe_layout(params):
    """alexft `{layer: (W, b)}` -> Caffe `{layer: [W, b]}`.

    conv:  caffe[o, c, y, x] = alexft[y, x, c, o]
    fc:    caffe[o, i] = alexft[i, o]
    fc6:   caffe[o, c*H*W + h*W + w] = alexft[(h*W + w)*C + c, o], C = conv5 outputs, H = W.
    """
    caffe = {}
    channels = params["conv5"][0].shape[3]
    for name, (weights, biases) in params.items():
        if name.startswith("conv"):
            converted = np.einsum("yxco->ocyx", weights)
        elif name == "fc6":
            inputs, outputs = weights.shape
            side = math.isqrt(inputs // channels)
            # Row r = (h*W + w)*C + c is C-order over (h, w, c).
            by_position = weights.reshape(side, side, channels, outputs)
            converted = np.einsum("hwco->ochw", by_position).reshape(outputs, channels * side * side)
        else:
            converted = np.einsum("io->oi", weights)
        caffe[name] = [np.ascontiguousarray(converted, dtype=np.float32), np.asarray(biases, dtype=np.float32)]
    return caffe


def tiny_params(seed=0):
    """A small AlexNet-shaped network in alexft's layout: grouped conv2/4/5, conv5 out 8, fc6 in 8*36."""
    rng = np.random.default_rng(seed)
    shapes = {
        "conv1": (3, 3, 3, 4), "conv2": (3, 3, 2, 6), "conv3": (3, 3, 6, 8), "conv4": (3, 3, 4, 8),
        "conv5": (3, 3, 4, 8), "fc6": (8 * 36, 10), "fc7": (10, 10), "fc8": (10, 5),
    }
    return {name: (rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape[-1]).astype(np.float32))
            for name, shape in shapes.items()}


def tiny_caffe_params(seed=0):
    """A small network drawn directly in CAFFE layout (out, in/group, kh, kw) / (out, in)."""
    rng = np.random.default_rng(seed)
    shapes = {
        "conv1": (4, 3, 3, 3), "conv2": (6, 2, 3, 3), "conv3": (8, 6, 3, 3), "conv4": (8, 4, 3, 3),
        "conv5": (8, 4, 3, 3), "fc6": (10, 8 * 36), "fc7": (10, 10), "fc8": (5, 10),
    }
    return {name: [rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape[0]).astype(np.float32)]
            for name, shape in shapes.items()}


def write_canonical_caffemodel(path, params, **options):
    """Full-size `bvlc_alexnet.caffemodel` from alexft-layout params (e.g. fixtures.random_params(0))."""
    return write_caffemodel(path, to_caffe_layout(params), **options)
