"""Read Caffe's `bvlc_alexnet.caffemodel` without Caffe or compiled protobuf classes.

The format
----------
A `.caffemodel` is one protobuf `caffe.NetParameter` message (BVLC/caffe,
src/caffe/proto/caffe.proto). Only these fields matter here:

    NetParameter      name = 1 (string), layers = 2 (V1LayerParameter, old form),
                      layer = 100 (LayerParameter, current form)
    LayerParameter    name = 1, type = 2 (string), blobs = 7 (BlobProto)
    V1LayerParameter  name = 4, type = 5 (enum), blobs = 6 (BlobProto)
    BlobProto         num = 1, channels = 2, height = 3, width = 4 (legacy 4-D shape),
                      data = 5 (packed float), double_data = 8 (packed double),
                      shape = 7 (BlobShape)
    BlobShape         dim = 1 (packed int64)

The protobuf wire format is a sequence of (tag, value) pairs, tag = field << 3 | wire type:
0 varint, 1 fixed 8 bytes, 2 length-prefixed bytes (strings, sub-messages, packed arrays),
5 fixed 4 bytes. Unknown fields are skipped; groups (3, 4) are never used by Caffe and
mean the file is something else. Repeated numbers are accepted packed (one type-2 field)
or unpacked (one type-5/1/0 field per value), as any protobuf parser must.

The file is memory-mapped and float data is viewed in place with `np.frombuffer`, so the
233 MB model reads in a fraction of a second; every returned array is a copy, so the file
is closed on return.

The layout conversion
---------------------
Caffe's convolution weights are (out, in/group, kh, kw); alexft's are (kh, kw, in/group, out).
Both split groups the same way (the first half of the outputs sees the first half of the
inputs) and both expect BGR input, so a transpose is all it takes. Inner-product weights
are (out, in) in Caffe and (in, out) in alexft. fc6 also needs its rows reordered: Caffe
flattens pool5 as NCHW (input index c*H*W + h*W + w) while alexft flattens NHWC (row
(h*W + w)*C + c). Biases become 1-D. Legacy 4-D blobs carry leading ones: (1, 1, out, in)
for inner-product weights, (1, 1, 1, out) for biases.
"""
import codecs
import contextlib
import logging
import math
import mmap
import os
from pathlib import Path

import numpy as np

from ..errors import WeightsError
from .files import NPY_MAGIC, ZIP_MAGIC, open_weights_file, read_head

log = logging.getLogger("alexft")

CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
FC_LAYERS = ("fc6", "fc7", "fc8")
LAYERS = CONV_LAYERS + FC_LAYERS

# Wire types.
VARINT, FIXED64, BYTES, GROUP_START, GROUP_END, FIXED32 = 0, 1, 2, 3, 4, 5

# NetParameter fields.
NET_NAME, NET_V1_LAYERS, NET_LAYER = 1, 2, 100
# (name, type, blobs) field numbers of the two layer messages.
LAYER_FIELDS = {
    NET_LAYER: (1, 2, 7),  # LayerParameter
    NET_V1_LAYERS: (4, 5, 6),  # V1LayerParameter
}
# BlobProto fields.
BLOB_LEGACY_DIMS = (1, 2, 3, 4)  # num, channels, height, width
BLOB_DATA, BLOB_SHAPE, BLOB_DOUBLE_DATA = 5, 7, 8
SHAPE_DIM = 1

# NetParameter's fields and wire types, for recognising a file from its first bytes.
NET_FIELD_WIRE_TYPES = {
    1: {BYTES},  # name
    2: {BYTES},  # layers (V1LayerParameter)
    3: {BYTES},  # input
    4: {VARINT, BYTES},  # input_dim (unpacked or packed)
    5: {VARINT},  # force_backward
    6: {BYTES},  # state
    7: {VARINT},  # debug_info
    8: {BYTES},  # input_shape
    100: {BYTES},  # layer (LayerParameter)
}

STRING_NET_FIELDS = {1, 3}  # name, input
BOOL_NET_FIELDS = {5, 7}  # force_backward, debug_info
# A sub-message's plausible first fields: V1LayerParameter (V0 layer, bottom, top, name),
# LayerParameter (name, type, bottom, top), NetState (phase, level, stage), BlobShape (dim).
FIRST_FIELDS_OF_MESSAGE = {2: {1, 2, 3, 4}, 100: {1, 2, 3, 4}, 6: {1, 2, 3}, 8: {1}}
MAX_SMALL_FIELD = 4096  # bytes of any NetParameter field but the layers
REPEATED_NET_FIELDS = {2, 3, 4, 8, 100}

MAX_NAMES_SHOWN = 50
MEAN_SIDE = 256  # the mean image's height and width: the size images are resized to


class _FormatError(Exception):
    """The bytes are not a NetParameter we can use; the message says why, without the path."""


class _Truncated(_FormatError):
    """A value runs past the end of its message (or of the bytes available)."""


# --- public API --------------------------------------------------------------------------


def read_caffemodel(path, renames=None):
    """Read conv1-conv5 and fc6-fc8 from a `.caffemodel` as `{layer: (weights, biases)}`.

    Arrays are float32, C-contiguous, in alexft's layout (see the module docstring). Raises
    WeightsError with a one-line message starting with the path for any unusable file.
    Shapes are not checked against AlexNet's: only what the conversion needs.

    A layer stored under another name (Caffe's fine-tuning example calls fc8 `fc8_flickr`) is
    found when the file leaves one reading: it is the only AlexNet layer missing, and the
    only unknown layer with weights lies between its neighbours (fc7 and the end, for fc8);
    that is said in one warning. `renames`
    ({name in the file: alexft's name}) names them instead.
    """
    path = Path(path)
    failure = None
    with _mapped(path) as data:
        try:
            params = _params_from_net(data, renames or {}, path)
        except _FormatError as error:
            failure = str(error)
        except (IndexError, ValueError, OverflowError, MemoryError) as error:  # a safety net
            failure = f"unreadable Caffe model ({type(error).__name__}: {error})"
    # Raised here, once the mapping is closed: a live traceback would pin views of it.
    if failure is not None:
        raise WeightsError(f"{path}: {_one_line(failure)}")
    return params


def read_mean_image(path):
    """Caffe's mean image (`imagenet_mean.binaryproto`: one BlobProto, 1x3x256x256 in BGR,
    channel-major; or its copy for Caffe's Python, `ilsvrc_2012_mean.npy`, 3x256x256) as a
    (256, 256, 3) float32 BGR array, what `preprocess` subtracts instead of the mean pixel.
    Raises WeightsError naming the file and the cause."""
    path = Path(path)
    failure = None
    if path.is_file() and path.stat().st_size == 0:
        raise WeightsError(f"{path}: mean file is empty")
    if read_head(path).startswith(NPY_MAGIC):
        return _mean_from_npy(path)
    values = None
    with _mapped(path) as data:
        try:
            _reject_text(data)
            shape, values = _read_blob(data, 0, len(data))
            dims = tuple(dim for dim in shape if dim != 1) if len(shape) == 4 and shape[0] == 1 else tuple(shape)
            if dims != (3, MEAN_SIDE, MEAN_SIDE):
                raise _FormatError(f"a blob of shape {tuple(shape)}, not a 3x{MEAN_SIDE}x{MEAN_SIDE} mean image "
                                   "(Caffe's imagenet_mean.binaryproto is 1x3x256x256)")
            mean = np.ascontiguousarray(values.reshape(dims).transpose(1, 2, 0), dtype=np.float32)
        except _FormatError as error:  # (the blob reader's words are a model's: "not a Caffe model: ...")
            reason = _other_kind(bytes(data[:16])) or str(error).removeprefix("not a Caffe model: ")
            failure = f"not a Caffe mean file (such as imagenet_mean.binaryproto): {reason}"
        except (IndexError, ValueError, OverflowError, MemoryError) as error:
            failure = f"not a Caffe mean file ({type(error).__name__}: {error})"
        finally:
            values = None  # a view of the mapping: it must go before the mapping closes
    if failure is not None:
        raise WeightsError(f"{path}: {_one_line(failure)}")
    return mean


def _mean_from_npy(path):
    """caffe/imagenet/ilsvrc_2012_mean.npy: the binaryproto's blob saved by numpy, (3, 256, 256)
    float64 BGR. Read without pickle: an .npy of objects is refused, as a weights file's are."""
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise WeightsError(f"{path}: not a readable .npy mean ({_one_line(str(error))})") from None
    shape = tuple(array.shape)
    dims = shape[1:] if len(shape) == 4 and shape[0] == 1 else shape
    if dims != (3, MEAN_SIDE, MEAN_SIDE) or not np.issubdtype(array.dtype, np.number):
        raise WeightsError(f"{path}: not a Caffe mean file (such as ilsvrc_2012_mean.npy): an array of {array.dtype} "
                           f"{shape}, not 3x{MEAN_SIDE}x{MEAN_SIDE} (channels first, BGR)")
    return np.ascontiguousarray(array.reshape(dims).transpose(1, 2, 0), dtype=np.float32)


_IMAGE_SIGNATURES = {b"\xff\xd8\xff": "JPEG", b"\x89PNG": "PNG", b"GIF8": "GIF", b"BM": "BMP", b"RIFF": "WebP"}


def _other_kind(head):
    """What a file given as the mean is instead, from its first bytes ("it is a JPEG image", a
    photo named by mistake; text), else None. A BlobProto starts with a tag byte below 0x20."""
    kind = next((name for signature, name in _IMAGE_SIGNATURES.items() if head.startswith(signature)), None)
    if kind:
        return f"it is a {kind} image"
    if head.startswith(ZIP_MAGIC):
        return "it is a zip archive (an .npz?); give the mean itself, imagenet_mean.binaryproto or ilsvrc_2012_mean.npy"
    if head and not head.lstrip().startswith(b"<") and all(32 <= byte < 127 or byte in b"\t\r\n" for byte in head):
        return f"it is text (it starts with {head[:8]!r})"
    return None


def looks_like_caffemodel(head: bytes) -> bool:
    """Whether a file's first bytes (64 are plenty) plausibly start a NetParameter.

    A cheap heuristic for routing files by content, not a validation. Caffe writes fields in
    number order, so a model starts with `name` (tag 0x0a), else `layers` (0x12) or `layer`
    (0xa2 0x06), rarely the deprecated input fields 3-8. Every field within `head` must be
    one of NetParameter's, with its wire type, in increasing order (repeated ones may
    repeat); strings must be printable text; booleans 0 or 1; a sub-message must start with
    a valid tag. A field cut by the end of `head` counts as plausible. Other formats fail on
    their first byte: .npy (0x93), zip ('P'), HDF5 (0x89), HTML/XML ('<', a group end),
    prototxt ('n' of `name:`, wire type 6).
    """
    end, pos, previous = len(head), 0, 0
    if not head:
        return False
    while pos < end:
        try:
            field, wire_type, pos = _read_tag(head, pos, end)
        except _FormatError as error:
            return previous > 0 and _is_truncation(error)
        repeated_ok = field == previous and field in REPEATED_NET_FIELDS
        if (field < previous or field == previous and not repeated_ok
                or wire_type not in NET_FIELD_WIRE_TYPES.get(field, ())):
            return False
        plausible, pos = _plausible_net_field(head, pos, field, wire_type)
        if not plausible:
            return False
        previous = field
    return True


# --- file access -------------------------------------------------------------------------


@contextlib.contextmanager
def _mapped(path):
    """A read-only memoryview of the whole file, released and closed on exit."""
    with open_weights_file(path) as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise WeightsError(f"{path}: weights file is empty")
        try:
            mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as error:
            raise WeightsError(f"{path}: cannot map weights file into memory: {error}") from None
        with mapping, memoryview(mapping) as view:
            yield view


# --- wire format -------------------------------------------------------------------------


def _read_varint(data, pos, end):
    """An unsigned varint at `pos` (at most 10 bytes); returns (value, next position)."""
    value = shift = 0
    for index in range(pos, min(pos + 10, end)):
        byte = data[index]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, index + 1
        shift += 7
    if end - pos < 10:
        raise _Truncated(f"truncated or corrupt protobuf: a number at byte {pos} runs past the end of its message")
    raise _FormatError(f"corrupt protobuf: a number at byte {pos} is longer than 10 bytes")


def _signed(value):
    """int32/int64 fields are two's complement 64-bit varints."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _read_tag(data, pos, end):
    """A field tag; returns (field number, wire type, next position)."""
    tag, next_pos = _read_varint(data, pos, end)
    field, wire_type = tag >> 3, tag & 7
    if wire_type in (GROUP_START, GROUP_END):
        raise _FormatError(
            f"not a Caffe model: protobuf group (wire type {wire_type}) at byte {pos}, which Caffe never writes"
        )
    if wire_type not in (VARINT, FIXED64, BYTES, FIXED32):
        raise _FormatError(f"not a protobuf file: invalid wire type {wire_type} at byte {pos}")
    if field == 0:
        raise _FormatError(f"not a protobuf file: field number 0 at byte {pos}")
    return field, wire_type, next_pos


def _read_field(data, pos, end):
    """One field at `pos`: returns (field, wire type, value, next position).

    The value is an int for a varint, else the (start, stop) span of its bytes.
    """
    field, wire_type, pos = _read_tag(data, pos, end)
    if wire_type == VARINT:
        value, pos = _read_varint(data, pos, end)
        return field, wire_type, value, pos
    if wire_type == BYTES:
        size, pos = _read_varint(data, pos, end)
    else:
        size = 8 if wire_type == FIXED64 else 4
    if size > end - pos:
        raise _Truncated(
            f"truncated or corrupt file: field {field} at byte {pos} needs {size} bytes but its message "
            f"has {end - pos} left"
        )
    return field, wire_type, (pos, pos + size), pos + size


def _fields(data, start, end):
    """Every (field, wire type, value) of the message in data[start:end]."""
    pos = start
    while pos < end:
        field, wire_type, value, pos = _read_field(data, pos, end)
        yield field, wire_type, value


def _expect(wire_type, expected, what):
    if wire_type != expected:
        raise _FormatError(f"not a Caffe model: {what} has wire type {wire_type}, expected {expected}")


def _text(data, span):
    return bytes(data[span[0]:span[1]]).decode("utf-8", errors="replace")


# --- NetParameter and layers ---------------------------------------------------------------


def _params_from_net(data, renames, path):
    layers = _read_layers(data)
    wanted = _pick_wanted_layers(layers, renames, path)
    caffe_params = {name: _read_layer_blobs(data, name, blob_spans) for name, blob_spans in wanted.items()}
    return _to_alexft_layout(caffe_params)


def _read_layers(data):
    """[(name, blob spans)] of every layer, in file order, in either message form."""
    _reject_text(data)
    layers = []
    for field, wire_type, value in _fields(data, 0, len(data)):
        if field in LAYER_FIELDS:
            _expect(wire_type, BYTES, f"layer #{len(layers) + 1} (field {field})")
            layers.append(_read_layer(data, value, LAYER_FIELDS[field], len(layers) + 1))
        elif field == NET_NAME:
            _expect(wire_type, BYTES, "the net's name (field 1)")
    return layers


def _reject_text(data):
    """A clear reason for the common wrong download: an HTML error page."""
    head = bytes(data[:64]).lstrip().lower()
    if head.startswith(b"<"):
        raise _FormatError("not a Caffe model: it is an HTML/XML page, perhaps an error page saved by a download")


def _read_layer(data, span, field_numbers, number):
    """(name, blob spans) of one LayerParameter / V1LayerParameter; the blobs are parsed later."""
    name_field, _, blobs_field = field_numbers
    name, blob_spans = None, []
    try:
        for field, wire_type, value in _fields(data, *span):
            if field == name_field:
                _expect(wire_type, BYTES, "the layer name")
                name = _text(data, value)
            elif field == blobs_field:
                _expect(wire_type, BYTES, "a blob")
                blob_spans.append(value)
    except _FormatError as error:
        raise _FormatError(f"layer #{number} ({name!r}): {error}") from None
    return name, blob_spans


def _pick_wanted_layers(layers, renames, path):
    """{name: blob spans} of the eight layers alexft uses; every one must be present once,
    under its own name, a name in `renames`, or as the one layer that can only be it."""
    found = [name for name, _ in layers]
    absent = sorted(set(renames) - set(found))
    if absent:
        raise _FormatError(f"--rename {', '.join(absent)}: no such layer; {_describe_found(found)}")
    named = [(renames.get(name, name), blob_spans) for name, blob_spans in layers]
    wanted = {}
    for name, blob_spans in named:
        if name in LAYERS:
            if name in wanted:
                raise _FormatError(f"layer {name} appears more than once")
            wanted[name] = blob_spans
    absent_layers = [name for name in LAYERS if name not in wanted]
    for missing in absent_layers if len(absent_layers) == 1 else ():  # two missing: an unknown layer could be either
        position = _only_candidate(named, missing, wanted)
        if position is not None:
            original = layers[position][0]
            wanted[missing] = layers[position][1]
            log.warning("%s: layer %r read as %s, the only layer with weights where %s belongs "
                        "(weights convert --rename %s=LAYER says otherwise)", path, original, missing, missing, original)
    missing = [name for name in LAYERS if name not in wanted]
    if missing:
        raise _FormatError(f"missing layer(s) {', '.join(missing)}; {_describe_found(found)}; if one is stored under "
                           "another name, give it with weights convert --rename NAME=LAYER")
    # Weights AlexNet has no place for: a second head (left out on purpose with --rename), or an
    # added layer, which makes the file another network. Said, not dropped in silence.
    taken = {id(blob_spans) for blob_spans in wanted.values()}
    extra = [repr(name) for name, blob_spans in layers if blob_spans and id(blob_spans) not in taken]
    if extra:
        log.warning("%s: layer(s) %s hold weights AlexNet has no place for, and are left out (if the network "
                    "computed with them, it is not AlexNet)", path, ", ".join(extra))
    return wanted


def _only_candidate(named, missing, wanted):
    """The file position of the one unknown layer with two blobs (weights, biases) between the
    layers before and after `missing` in AlexNet's order, or None when there is not exactly one."""
    positions = {name: index for index, (name, _) in enumerate(named) if name in wanted}
    order = LAYERS.index(missing)
    before = [positions[name] for name in LAYERS[:order] if name in positions]
    after = [positions[name] for name in LAYERS[order + 1:] if name in positions]
    low, high = max(before, default=-1), min(after, default=len(named))
    candidates = [index for index in range(low + 1, high)
                  if named[index][0] not in LAYERS and len(named[index][1]) == 2]
    return candidates[0] if len(candidates) == 1 else None


def _describe_found(names):
    if not names:
        return "the file has no layers (not a Caffe model?)"
    shown = ", ".join("(unnamed)" if name is None else repr(name) for name in names[:MAX_NAMES_SHOWN])
    more = f", ... ({len(names) - MAX_NAMES_SHOWN} more)" if len(names) > MAX_NAMES_SHOWN else ""
    return f"found {len(names)} layer(s): {shown}{more}"


def _read_layer_blobs(data, name, blob_spans):
    """(weights, biases) of a layer in Caffe's layout, as (shape, flat values) pairs."""
    if len(blob_spans) != 2:
        raise _FormatError(f"layer {name} has {len(blob_spans)} blob(s), expected 2 (weights and biases)")
    blobs = []
    for index, span in enumerate(blob_spans):
        try:
            blobs.append(_read_blob(data, *span))
        except _FormatError as error:
            raise _FormatError(f"layer {name}, blob {index}: {error}") from None
    return blobs


# --- BlobProto ---------------------------------------------------------------------------


def _read_blob(data, start, end):
    """(shape, flat float32 values) of a BlobProto; the values may still view the file."""
    legacy_dims, shape_dims = {}, None
    floats, doubles = [], []
    pos = start
    while pos < end:
        field_pos = pos
        field, wire_type, value, pos = _read_field(data, pos, end)
        if field == BLOB_DATA:
            pos = _collect_numbers(data, field_pos, pos, end, wire_type, value, FIXED32, "<f4", floats)
        elif field == BLOB_DOUBLE_DATA:
            pos = _collect_numbers(data, field_pos, pos, end, wire_type, value, FIXED64, "<f8", doubles)
        elif field == BLOB_SHAPE:
            _expect(wire_type, BYTES, "the blob shape")
            shape_dims = _read_shape(data, *value)
        elif field in BLOB_LEGACY_DIMS:
            _expect(wire_type, VARINT, "a legacy blob dimension")
            legacy_dims[field] = _signed(value)
    shape = _blob_shape(legacy_dims, shape_dims)
    # Like Caffe's Blob::FromProto: double_data wins when present.
    values = _concatenate(doubles) if doubles else _concatenate(floats)
    if values.size != math.prod(shape):
        raise _FormatError(f"{values.size} values for shape {shape} ({math.prod(shape)} expected)")
    return shape, values


def _collect_numbers(data, field_pos, pos, end, wire_type, value, unpacked_wire_type, dtype, chunks):
    """Append a repeated float/double field's values to `chunks`; returns the next position.

    Packed: one length-delimited field, viewed in place. Unpacked: one fixed-size field per
    value; a run of them is gathered in one vectorised step.
    """
    width = np.dtype(dtype).itemsize
    if wire_type == BYTES:
        if (value[1] - value[0]) % width:
            raise _FormatError(f"packed numbers of {value[1] - value[0]} bytes, not a multiple of {width}")
        chunks.append(np.frombuffer(data[value[0]:value[1]], dtype=dtype))
        return pos
    _expect(wire_type, unpacked_wire_type, "a repeated number")
    tag_size = value[0] - field_pos
    run, next_pos = _unpacked_run(data, field_pos, end, tag_size, width, dtype)
    chunks.append(run)
    return next_pos


def _unpacked_run(data, pos, end, tag_size, width, dtype):
    """The values of consecutive unpacked fields carrying the same tag as the one at `pos`.

    Records are (tag, value) of fixed size, so the run is the longest prefix of
    equally-spaced records whose tag bytes all match the first one.
    """
    record = tag_size + width
    count = (end - pos) // record
    block = np.frombuffer(data[pos:pos + count * record], dtype=np.uint8).reshape(count, record)
    tag = block[0, :tag_size]
    mismatch = np.flatnonzero((block[:, :tag_size] != tag).any(axis=1))
    count = int(mismatch[0]) if mismatch.size else count
    values = np.ascontiguousarray(block[:count, tag_size:]).view(dtype).reshape(count)
    return values, pos + count * record


def _read_shape(data, start, end):
    """BlobShape.dim, packed or not."""
    dims = []
    for field, wire_type, value in _fields(data, start, end):
        if field != SHAPE_DIM:
            continue
        if wire_type == VARINT:
            dims.append(_signed(value))
        elif wire_type == BYTES:
            pos = value[0]
            while pos < value[1]:
                dim, pos = _read_varint(data, pos, value[1])
                dims.append(_signed(dim))
        else:
            _expect(wire_type, VARINT, "a shape dimension")
    return tuple(dims)


def _blob_shape(legacy_dims, shape_dims):
    """Caffe's rule: any legacy dimension present means a 4-D (num, channels, height, width)."""
    if legacy_dims:
        shape = tuple(legacy_dims.get(field, 0) for field in BLOB_LEGACY_DIMS)
    else:
        shape = shape_dims if shape_dims is not None else ()
    if any(dim < 0 for dim in shape):
        raise _FormatError(f"negative dimension in shape {shape}")
    return shape


def _concatenate(chunks):
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


# --- layout conversion -------------------------------------------------------------------


def _to_alexft_layout(caffe_params):
    """{layer: (weights, biases)} as owned float32 arrays in alexft's layout."""
    params = {}
    for name in LAYERS:
        (weight_shape, weight_values), (bias_shape, bias_values) = caffe_params[name]
        try:
            if name in CONV_LAYERS:
                weights = _conv_weights(weight_values, weight_shape)
            elif name == "fc6":
                conv5_outputs = caffe_params["conv5"][0][0][0]
                weights = _fc6_weights(weight_values, weight_shape, conv5_outputs)
            else:
                weights = _reversed_axes_copy(_fc_matrix(weight_values, weight_shape))
            biases = _owned_float32(_biases(bias_values, bias_shape))
        except _FormatError as error:
            raise _FormatError(f"layer {name}: {error}") from None
        params[name] = (weights, biases)
    return params


def _owned_float32(array):
    """A C-contiguous float32 copy that no longer refers to the mapped file."""
    return np.array(array, dtype=np.float32, order="C", copy=True)


def _reversed_axes_copy(array, tile=128):
    """`array.T` as a new C-contiguous float32 array, copied tile by tile.

    Copying a transposed view in one go strides through memory: for fc6 that takes 1 s,
    tiles of about 128 x 128 values (the best size measured) a seventh of it. Tiles span the
    first two axes; later ones (fc6's H*W) stay whole.
    """
    out = np.empty(array.shape[::-1], dtype=np.float32)
    rows, columns = array.shape[:2]
    column_tile = max(1, tile // math.prod(array.shape[2:]))
    for row in range(0, rows, tile):
        for column in range(0, columns, column_tile):
            block = array[row:row + tile, column:column + column_tile]
            out[..., column:column + column_tile, row:row + tile] = block.T
    return out


def _conv_weights(values, shape):
    """(out, in/group, kh, kw) -> (kh, kw, in/group, out); small enough to copy directly."""
    if len(shape) != 4:
        raise _FormatError(f"convolution weights of shape {shape}, expected 4-D (out, in, height, width)")
    return _owned_float32(values.reshape(shape).transpose(2, 3, 1, 0))


def _fc_matrix(values, shape):
    """Caffe's (out, in) matrix; legacy blobs are (1, 1, out, in)."""
    if len(shape) < 2 or any(dim != 1 for dim in shape[:-2]):
        raise _FormatError(f"inner-product weights of shape {shape}, expected (out, in) or (1, 1, out, in)")
    return values.reshape(shape[-2:])


def _fc6_weights(values, shape, channels):
    """(out, C*H*W) with inputs in NCHW order -> (H*W*C, out) with rows in NHWC order.

    Caffe's matrix viewed as (out, C, H*W) and reversed is (H*W, C, out): row (h*W + w)*C + c.
    """
    matrix = _fc_matrix(values, shape)
    outputs, inputs = matrix.shape
    side = math.isqrt(inputs // channels) if channels and inputs % channels == 0 else 0
    if inputs == 0 or side * side * channels != inputs:
        raise _FormatError(
            f"{inputs} inputs are not {channels} conv5 channels times a square H*W, so pool5's layout is unknown"
        )
    by_position = _reversed_axes_copy(matrix.reshape(outputs, channels, side * side))
    return by_position.reshape(side * side * channels, outputs)


def _biases(values, shape):
    """Any shape with at most one dimension above 1, e.g. (out,) or legacy (1, 1, 1, out)."""
    if sum(dim != 1 for dim in shape) > 1:
        raise _FormatError(f"biases of shape {shape}, expected (out,) or (1, 1, 1, out)")
    return values.reshape(-1)


# --- helpers for looks_like_caffemodel and messages ------------------------------------------


def _plausible_net_field(head, pos, field, wire_type):
    """(whether the value at `pos` fits NetParameter's `field`, position after it)."""
    end = len(head)
    try:
        value, pos = _read_varint(head, pos, end)
    except _FormatError as error:
        return _is_truncation(error), end
    if wire_type == VARINT:
        return field not in BOOL_NET_FIELDS or value in (0, 1), pos
    content = bytes(head[pos:pos + value])
    cut = len(content) < value
    if field not in LAYER_FIELDS and value > MAX_SMALL_FIELD:
        return False, pos
    if field in STRING_NET_FIELDS:
        return _is_printable(content, cut), pos + value
    if field in FIRST_FIELDS_OF_MESSAGE and content:
        return _plausible_first_field(content, FIRST_FIELDS_OF_MESSAGE[field]), pos + value
    return True, pos + value


def _plausible_first_field(content, expected_fields):
    """A sub-message's first field, as Caffe writes it (in field number order)."""
    try:
        field, _, _ = _read_tag(content, 0, len(content))
    except _FormatError as error:
        return _is_truncation(error)
    return field in expected_fields


def _is_printable(content, cut):
    try:
        # Incremental decoding tolerates a character cut by the end of `head`, nothing else.
        text = codecs.getincrementaldecoder("utf-8")().decode(content, final=not cut)
    except UnicodeDecodeError:
        return False
    return text.isprintable()


def _is_truncation(error):
    return isinstance(error, _Truncated)


def _one_line(message):
    return " ".join(message.split())
