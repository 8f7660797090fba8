"""Read, check, assign and save AlexNet weights.

Two formats:
- the canonical `bvlc_alexnet.npy`: `np.save` of a Python-2 dict `{layer: [W, b]}`, i.e. a
  0-d object array holding a protocol-2 pickle. It is read with a restricted unpickler that
  can build numpy arrays and nothing else, so a crafted file cannot run code.
- our own `.npz` (keys `conv1/weights`, `conv1/biases`, ..., optional `class_names`), read
  with `allow_pickle=False`.
"""
import contextlib
import math
import os
import pickle
import tokenize
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from zlib_ng import zlib_ng

from .. import architecture as arch
from ..atomic import archive_names, write_atomic, zip_failure
from ..errors import WeightsError
from . import caffe
from .files import NPY_MAGIC, ZIP_MAGIC, read_head  # noqa: F401  (re-exported by alexft.weights)


@dataclass
class WeightSet:
    """Network parameters `{layer: (weights, biases)}` and, for a fine-tuned model, its class names.

    `handed_over`: the set was read for one model only (by alexft itself, from a path), which
    may take its arrays as its variables (no copy, and each array released as it is taken). A
    set a caller passes in stays the caller's: a model built from it copies the arrays."""

    params: dict
    class_names: Optional[list] = None
    path: Optional[Path] = None
    handed_over: bool = field(default=False, repr=False, compare=False)

    @property
    def num_classes(self):
        return self.params["fc8"][0].shape[1] if "fc8" in self.params else None

    def __repr__(self):  # (the dataclass's listed every array: 80,000 characters in a notebook's cell)
        layers = ", ".join(self.params) or "no layers"
        classes = f", {self.num_classes:,} classes" if self.num_classes else ""
        named = ""
        if self.class_names is not None and len(self.class_names):  # (a list, or a numpy array of names)
            more = ", ..." if len(self.class_names) > 3 else ""
            named = f" named {', '.join(repr(str(name)) for name in self.class_names[:3])}{more}"
        where = f" from {self.path}" if self.path is not None else ""
        return f"WeightSet({layers}{classes}{named}{where})"

    def initial_arrays(self):
        """`{layer: [weights, biases]}` for a model to start from (model.alexnet_layers' `initial`):
        the set's own dict when handed over, which the model empties as it takes the arrays; else
        a new dict of read-only views, which the variables copy, leaving this set whole (a Keras
        model trained in place would otherwise change the caller's arrays)."""
        if self.handed_over:
            return self.params
        return {name: [_read_only(array) for array in arrays] for name, arrays in self.params.items()}


def _read_only(array):
    view = array.view()
    view.flags.writeable = False
    return view


# --- reading ---------------------------------------------------------------------------


FORMATS = {
    "npy": "legacy .npy (a pickled dict, as the Python-2 original; read with a numpy-only unpickler)",
    "npz": "alexft .npz (no pickle)",
    "caffemodel": "Caffe .caffemodel (protobuf NetParameter)",
}


def load(path, num_classes=None, skip=()):
    """Read and check a weights file (`.npy` legacy pickle, `.npz` or Caffe `.caffemodel`).

    `skip` names layers the caller will not use: they need not be present, and their
    shapes are not checked against `num_classes`. Raises WeightsError with a one-line reason.
    """
    path = Path(path)
    params, class_names, _ = read(path)
    check(params, path, num_classes=num_classes, skip=skip, class_names=class_names)
    return WeightSet(params, class_names, path)


def as_weight_set(weights, skip=()):
    """`weights` as a WeightSet: one already read as it is, a path read and checked by `load`.
    The commands read the file before TensorFlow starts, so that a wrong or broken one is said
    at once, and hand the set on."""
    if isinstance(weights, WeightSet):
        return weights
    weight_set = load(weights, skip=skip)
    weight_set.handed_over = True  # read here for the caller's one model
    return weight_set


def read(path):
    """`(params, class_names or None, format)` from any supported file, before any checking.

    The format comes from the content (magic bytes), so a misnamed file is still read right.
    """
    path = Path(path)
    kind = read_format(path)
    if kind == "npy":
        return _read_legacy_npy(path), None, "npy"
    if kind == "npz":
        return (*_read_npz(path), "npz")
    return caffe.read_caffemodel(path), None, "caffemodel"


def read_format(path):
    """"npy", "npz" or "caffemodel", from the first bytes (and the suffix, for a Caffe model,
    whose protobuf has no magic number); WeightsError for anything else."""
    path = Path(path)
    head = read_head(path)
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head.startswith(ZIP_MAGIC):
        if is_keras_file(path):  # what `alexft export x.keras` and Keras' model.save write
            raise WeightsError(f"{path}: a Keras model file, not weights; load it with keras.saving.load_model (after "
                               "import alexft) and take its weights with alexft.weights_from_model(model)")
        return "npz"
    named = path.suffix.lower()  # a file named .npz or .npy is not guessed to be a Caffe model (a protobuf error)
    if named == ".caffemodel" or (named not in (".npz", ".npy") and caffe.looks_like_caffemodel(head)):
        return "caffemodel"
    if head[4:8] == b"TFL3":  # a FlatBuffer's identifier: what `alexft export x.tflite` writes
        raise WeightsError(f"{path}: a TF Lite export, not weights; give the .npz (or .npy) it was exported from")
    if head.startswith(HDF5_MAGIC):  # Keras' model.save_weights("x.weights.h5") and the old .h5 models
        raise WeightsError(f"{path}: a Keras HDF5 file, not alexft weights; load it into the model it was saved from "
                           "with model.load_weights (a .weights.h5) or keras.saving.load_model (an .h5 model)")
    raise WeightsError(f"{path}: not a weights file ({_describe_bytes(head)}); expected .npy, .npz or .caffemodel")


HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
KERAS_FILE_MEMBERS = {"config.json", "metadata.json"}  # what every Keras 3 .keras zip holds, whatever its weights


def is_keras_file(path, error=WeightsError):
    """Whether the zip at `path` is a Keras 3 model file: its config and metadata, and no arrays.
    A file that cannot be read raises `error` (atomic.archive_names)."""
    names = archive_names(path, error)
    return KERAS_FILE_MEMBERS <= names and not any(name.endswith(".npy") for name in names)


def quick_check(path):
    """What can be seen of a weights file in milliseconds, before TensorFlow's seconds of
    start-up: its format, and that it is whole (an .npz's zip directory, at its end, lists
    members that fit in the file; a pickled .npy ends with the pickle's STOP). `load` checks
    everything else."""
    path = Path(path)
    kind = read_format(path)
    if kind == "npz":
        try:
            with zipfile.ZipFile(path) as archive:
                size = path.stat().st_size
                cut = [info.filename for info in archive.infolist() if info.header_offset + info.compress_size > size]
        except (zipfile.BadZipFile, OSError) as error:
            raise WeightsError(_npz_failure(path, error)) from None
        if cut:
            raise WeightsError(f"{path}: corrupt or truncated .npz ({cut[0]} is cut short)")
    elif kind == "npy":
        with open(path, "rb") as handle:
            try:
                version = np.lib.format.read_magic(handle)
                pickled = _read_npy_header(handle, version)[2].hasobject
            except ValueError:
                return kind  # load says what is wrong with the header
            handle.seek(-1, os.SEEK_END)
            if pickled and handle.read(1) != pickle.STOP:
                raise WeightsError(ends_early(path))
    return kind


def ends_early(path):
    """A weights file cut short, said alike by every command and by `weights info`."""
    return f"{path}: the file ends early ({Path(path).stat().st_size:,} bytes; an interrupted download or copy?)"


def _npz_failure(path, error):
    """Why an .npz could not be read. One that begins as a zip archive but has no end record of
    its index (a zip's is at its very end) was cut short: said so, not as zipfile's "File is not
    a zip file". One with that record is damaged otherwise, said as zipfile says it."""
    if isinstance(error, zipfile.BadZipFile):
        with contextlib.suppress(OSError), open(path, "rb") as handle:
            start = handle.read(len(ZIP_MAGIC))
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - (1 << 16) - 22))  # the record, and a comment's room
            if start == ZIP_MAGIC and b"PK\x05\x06" not in handle.read():
                return ends_early(path)
    if isinstance(error, (zipfile.BadZipFile, OSError)):
        error = zip_failure(error)
    else:
        error = f"{type(error).__name__}: {error}"
    return f"{path}: corrupt or truncated .npz ({error})"


def _describe_bytes(head):
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<")):
        return "it is an HTML/XML page, perhaps an error page saved by a download"
    return f"it starts with {head[:8]!r}"


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Builds numpy arrays and plain containers; refuses every other global.

    Dicts, lists, tuples and strings are pickle opcodes and need no global. Only the three
    names an ndarray's pickle uses are admitted, so no function can be called to run code.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: only numpy arrays are allowed")
        if name == "_reconstruct":
            return _reconstruct_function()
        return getattr(np, name)

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused a persistent id: only numpy arrays are allowed")


def _reconstruct_function():
    # numpy 2 moved numpy.core to numpy._core; files from either era name one of them.
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _read_legacy_npy(path):
    """The object array's pickle, unpickled safely; returns `{layer: (W, b)}`."""
    with open(path, "rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            shape, _, dtype = _read_npy_header(handle, version)
        except ValueError as error:
            raise WeightsError(f"{path}: corrupt .npy header: {error}") from None
        if dtype != object:
            raise WeightsError(
                f"{path}: .npy holds a plain {dtype} array of shape {shape}, not the layer dict of bvlc_alexnet.npy"
            )
        try:
            # latin1 turns Python 2 byte strings (array data, dict keys) into str losslessly.
            content = _NumpyOnlyUnpickler(handle, encoding="latin1").load()
        except pickle.UnpicklingError as error:
            if "truncated" in str(error):  # the commonest damage: a copy or download cut short
                raise WeightsError(ends_early(path)) from None
            raise WeightsError(f"{path}: unsafe or corrupt pickle: {error}") from None
        except Exception as error:  # noqa: BLE001 - on corrupt bytes pickle raises anything (OverflowError, struct.error, ...)
            raise WeightsError(f"{path}: corrupt or truncated pickle ({type(error).__name__}: {error})") from None
    if isinstance(content, np.ndarray) and content.dtype == object and content.shape == ():
        content = content.item()
    if not isinstance(content, dict):
        raise WeightsError(f"{path}: holds a {type(content).__name__}, expected a dict of layers")
    return _layer_dict(content, path)


def _read_npy_header(handle, version):
    """(shape, fortran_order, dtype); any malformed header is a ValueError."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise ValueError(f"unsupported .npy version {version}")
    try:
        return readers[version](handle)
    except (SyntaxError, tokenize.TokenError, TypeError) as error:  # numpy parses the header as a Python literal
        raise ValueError(f"unreadable header ({type(error).__name__}: {error})") from None


def _layer_dict(content, path):
    params = {}
    for key, value in content.items():
        name = key.decode("latin1") if isinstance(key, bytes) else str(key)
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise WeightsError(f"{path}: layer {name} should be [weights, biases], got {_describe_value(value)}")
        params[name] = (value[0], value[1])
    return params


def _describe_value(value):
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__}"


# The array groups of a run's checkpoint.npz (train_network.TrainingNetwork.state_arrays).
CHECKPOINT_GROUPS = ("current", "best", "optimizer", "seed")


class _PythonObjects(ValueError):
    """An array of Python objects: a pickle, refused as such, not as damage."""


def _read_npz(path):
    params, class_names = {}, None
    try:
        arrays = _npz_arrays(path)
    except _PythonObjects as error:
        raise WeightsError(f"{path}: not a weights file: {error} (weights are arrays of numbers)") from None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as error:
        # Worded as quick_check words it, so a broken file reads the same in every command.
        raise WeightsError(_npz_failure(path, error)) from None
    for key in sorted(arrays):
        layer, _, part = key.partition("/")
        if key == "class_names":
            class_names = [str(name) for name in arrays[key]]
        elif layer in CHECKPOINT_GROUPS:
            model = Path(path).parent / "model.npz"
            where = (f"the run's model is {model}" if model.exists() else
                     f"a run writes its model, model.npz, beside it when an epoch ends ({model} is not there)")
            raise WeightsError(f"{path}: a fine-tuning run's checkpoint, not weights; {where}")
        elif key == "features":
            raise WeightsError(f"{path}: a feature file (alexft features), not weights")
        elif part not in ("weights", "biases"):
            raise WeightsError(f"{path}: unexpected entry {key!r}; expected <layer>/weights and <layer>/biases")
    for layer in sorted({key.partition("/")[0] for key in arrays if "/" in key}):
        if f"{layer}/weights" not in arrays or f"{layer}/biases" not in arrays:
            raise WeightsError(f"{path}: layer {layer} needs both {layer}/weights and {layer}/biases")
        params[layer] = (arrays[f"{layer}/weights"], arrays[f"{layer}/biases"])
    return params, class_names


def _npz_arrays(path):
    """Every array of an .npz, never unpickling.

    `np.savez` stores members uncompressed, so each array's bytes are read straight from
    its offset into aligned memory, in chunks spread over a few threads: several times
    faster than `np.load`, which copies through zipfile's reader. Each chunk's CRC-32 is taken
    as it is read and the chunks' are combined into each member's, which must match the zip
    directory's: a damaged byte is refused, not computed with. Compressed members take
    numpy's path, which checks them.
    """
    arrays, reads = {}, []
    with zipfile.ZipFile(path) as archive, open(path, "rb") as handle:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            if info.compress_type == zipfile.ZIP_STORED:
                arrays[name], offset, header = _stored_array(handle, info)
                reads.append((arrays[name], offset, info, header))
            else:
                with archive.open(info) as member:
                    arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
        for (_, _, info, _), crc in zip(reads, _fill(handle.fileno(), reads)):
            if crc != info.CRC:
                raise ValueError(f"{info.filename} is damaged: its bytes do not match the archive's CRC-32")
    return arrays


def _stored_array(handle, info):
    """An empty array for a stored member, the file offset of its data, and the bytes of the
    member before it (the .npy header, for the CRC)."""
    handle.seek(info.header_offset)
    local = handle.read(30)  # the local header's name and extra lengths can differ from the directory's
    if len(local) != 30 or local[:4] != ZIP_MAGIC:
        raise ValueError(f"bad local header for {info.filename}")
    name_length, extra_length = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
    start = info.header_offset + 30 + name_length + extra_length
    handle.seek(start)
    version = np.lib.format.read_magic(handle)
    shape, fortran_order, dtype = _read_npy_header(handle, version)
    if dtype.hasobject:
        raise _PythonObjects(f"{info.filename} holds Python objects, which are never unpickled")
    if math.prod(shape) * dtype.itemsize > info.file_size:  # refuse before allocating what is not there
        raise ValueError(f"{info.filename} declares shape {shape}, more than its {info.file_size} bytes")
    array = _aligned_empty(shape[::-1] if fortran_order else shape, dtype)
    offset = handle.tell()
    handle.seek(start)
    return (array.T if fortran_order else array), offset, handle.read(offset - start)


READ_CHUNK = 8 << 20


def _fill(fd, reads):
    """Read each (array, offset, zip info, member header) from the file and return each
    member's CRC-32. Chunks go to a small thread pool (copying out of the page cache is CPU
    work, and `os.preadv` and the CRC release the GIL). zlib-ng's CRC-32 is 2x zlib's here."""
    chunks, members = [], []
    for array, offset, info, header in reads:
        buffer = _file_bytes(array)
        starts = range(0, buffer.size, READ_CHUNK)
        members.append((header, len(starts)))
        chunks += [(buffer[start : start + READ_CHUNK], offset + start, info.filename) for start in starts]

    def read(chunk):
        view, offset, name = chunk
        if _pread_into(fd, view, offset) != view.size:
            raise EOFError(f"{name} is cut short")
        return zlib_ng.crc32(view), view.size

    workers = min(4, os.cpu_count() or 1)
    if workers == 1 or len(chunks) < 2:
        sums = [read(chunk) for chunk in chunks]
    else:
        with ThreadPoolExecutor(workers) as pool:
            sums = list(pool.map(read, chunks))
    crcs, done = [], 0
    for header, count in members:
        crc = zlib_ng.crc32(header)
        for chunk_crc, size in sums[done : done + count]:
            crc = zlib_ng.crc32_combine(crc, chunk_crc, size)
        crcs.append(crc)
        done += count
    return crcs


def _file_bytes(array):
    """The bytes of an array as the file holds them."""
    return (array.T if not array.flags.c_contiguous else array).reshape(-1).view(np.uint8)


def _pread_into(fd, view, offset):
    if hasattr(os, "preadv"):
        return os.preadv(fd, [view], offset)
    with os.fdopen(os.dup(fd), "rb") as handle:  # Windows: no preadv
        handle.seek(offset)
        return handle.readinto(view)


def _aligned_empty(shape, dtype, alignment=64):
    """An uninitialised array whose data starts on a 64-byte boundary.

    TensorFlow copies such an array into a tensor with one memcpy; numpy's default 16-byte
    alignment sends it down a path that takes about twice as long.
    """
    dtype = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(size + alignment, dtype=np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start : start + size].view(dtype).reshape(shape)


# --- checking --------------------------------------------------------------------------


def check(params, path, num_classes=None, skip=(), class_names=None):
    """Check layer names, [W, b] structure, dtype, shapes, finiteness and, when given, that
    there is one class name per fc8 output; raise WeightsError."""
    skip = set(skip)
    unknown = sorted(set(params) - set(arch.LAYER_NAMES))
    if unknown:
        raise WeightsError(f"{path}: unknown layer(s) {', '.join(unknown)}; AlexNet has {', '.join(arch.LAYER_NAMES)}")
    missing = [name for name in arch.LAYER_NAMES if name not in params and name not in skip]
    if missing:
        raise WeightsError(f"{path}: missing layer(s) {', '.join(missing)}" + _run_part(path))
    fc8 = params.get("fc8", (None,))[0]
    file_classes = fc8.shape[1] if _is_array(fc8) and fc8.ndim == 2 else None
    expected = arch.parameter_shapes(num_classes or file_classes or arch.IMAGENET_CLASSES)
    for name, (weights, biases) in params.items():
        for part, array, shape in (("weights", weights, expected[name][0]), ("biases", biases, expected[name][1])):
            _check_array(path, name, part, array, shape, check_shape=name not in skip)
    if class_names is not None and "fc8" in params and len(class_names) != params["fc8"][0].shape[1]:
        raise WeightsError(f"{path}: {len(class_names)} class names for {params['fc8'][0].shape[1]} fc8 outputs")


def _run_part(path):
    """What a run's last_layers.npz is, said where it is refused: it holds no whole network."""
    if Path(str(path)).name != "last_layers.npz":
        return ""
    return (f"; it holds a run's trained layers only, of its last epoch (--keep-last): the run's whole network is "
            f"{Path(str(path)).with_name('model.npz')} (its best epoch)")


def layers_above(last):
    """The weighted layers above `last` (a layer a network may end at, `arch.ENDS`: "fc7", "pool5",
    ...): a network that ends there uses none of them, so its weights file need not hold them."""
    position = arch.ENDS.index(last)
    return [name for name in arch.LAYER_NAMES if arch.ENDS.index(name) > position]


def _is_array(value):
    return isinstance(value, np.ndarray)


# Said where fc8 has another class count: the command line's and the Python API's spelling.
FC8_HINT = ": skip fc8 to train a new classifier (--skip fc8; skip=[\"fc8\"] in Python)"


def _check_array(path, layer, part, array, shape, check_shape):
    if not _is_array(array):
        raise WeightsError(f"{path}: {layer} {part} is a {type(array).__name__}, not an array")
    if array.dtype != np.float32:
        raise WeightsError(f"{path}: {layer} {part} are {array.dtype}, expected float32")
    if check_shape and array.shape != shape:
        hint = ""
        if layer == "fc8" and array.shape[:1] == shape[:1]:
            hint = FC8_HINT
        elif layer in ("conv2", "conv4", "conv5") and array.ndim == 4 and array.shape[2] == 2 * shape[2]:
            hint = " (an ungrouped network's layout; bvlc_alexnet uses two groups here)"
        raise WeightsError(f"{path}: {layer} {part} have shape {array.shape}; this model needs {shape}{hint}")
    if not _all_finite(array):
        raise WeightsError(f"{path}: {layer} {part} contain NaN or infinite values")


def _all_finite(array):
    """True when no value is NaN or infinite, in one BLAS pass and without a temporary array.

    A sum of squares is NaN or infinite exactly when some value is, or when a finite value
    is beyond 1e19 and the sum overflows; only then are the values looked at one by one.
    """
    flat = array.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.dot(flat, flat)):
            return True
    return bool(np.isfinite(flat.min()) and np.isfinite(flat.max()))


# --- using and saving ------------------------------------------------------------------


def assign(model, weight_set, skip=()):
    """Copy the layers of `weight_set` (a WeightSet, or a weights file's path) into `model`:
    every AlexNet layer the model holds (conv1-conv5 with include_top=False), also in a model
    nested in it, except those in `skip` (they keep their fresh init). Returns the names of the
    layers loaded. Shapes are checked against the model."""
    if isinstance(weight_set, (str, os.PathLike)):  # a file's path, as alexft.AlexNet(weights=...) takes one
        weight_set = load(weight_set)
    elif not isinstance(weight_set, WeightSet):
        raise TypeError(f"assign_weights takes a WeightSet (alexft.load_weights(path)) or a weights file's path, "
                        f"not {type(weight_set).__name__}")
    skip = set(skip)
    unknown = skip - set(arch.LAYER_NAMES)
    if unknown:
        raise WeightsError(f"cannot skip unknown layer(s) {', '.join(sorted(unknown))}")
    model, held = _alexnet_layers_within(model, "assign_weights")
    loaded = []
    for name in held:
        if name in skip:
            continue
        layer = model.get_layer(name)
        for part, variable, array in zip(("weights", "biases"), (layer.kernel, layer.bias), weight_set.params[name]):
            if tuple(variable.shape) != array.shape:
                hint = FC8_HINT if name == "fc8" else ""
                raise WeightsError(
                    f"{weight_set.path}: {name} {part} have shape {array.shape}; this model needs {tuple(variable.shape)}{hint}"
                )
            variable.assign(array)
        loaded.append(name)
    return loaded


def from_model(model, class_names=None):
    """The model's parameters as a WeightSet (float32 numpy copies), with `class_names`, by
    default the model's own (`alexft.AlexNet`'s models keep them, also through a .keras file)
    when they fit its fc8."""
    outer, model = model, _alexnet_within(model)
    params = {}
    for name in arch.LAYER_NAMES:
        layer = model.get_layer(name)
        params[name] = (np.asarray(layer.kernel.numpy(), np.float32), np.asarray(layer.bias.numpy(), np.float32))
    if class_names is None:
        own = getattr(outer, "class_names", None) or getattr(model, "class_names", None)
        class_names = own if own is not None and len(own) == params["fc8"][0].shape[1] else None
    return WeightSet(params, list(class_names) if class_names is not None else None)


def _alexnet_within(model):
    """The model holding AlexNet's layers by name: `model` itself, or the AlexNet inside a model
    of the user's (`alexft.AlexNet(...)` called on its input); ValueError when there is none."""
    found, held = _alexnet_layers_within(model, "weights_from_model")
    if len(held) == len(arch.LAYER_NAMES):
        return found
    missing = [layer for layer in arch.LAYER_NAMES if layer not in held]  # include_top=False, a last_layer, a head
    raise ValueError(f"{getattr(model, 'name', 'the model')}: holds AlexNet's layers without {', '.join(missing)}: "
                     "weights_from_model takes the whole network, up to fc8 (alexft.AlexNet with include_top=True); "
                     "save a model with a head of your own as a .keras file (model.save)")


def _alexnet_layers_within(model, caller):
    """(the model, itself or nested in it, holding the most of AlexNet's layers by name, their
    names); ValueError naming `caller` when no model holds any."""
    found = max(_models_within(model), key=lambda inner: len(_alexnet_layers(inner)))
    held = _alexnet_layers(found)
    if not held:
        raise ValueError(f"{getattr(model, 'name', 'the model')}: holds no AlexNet layers "
                         f"({', '.join(arch.LAYER_NAMES)}), nor a model with them: {caller} takes a model alexft "
                         "built (alexft.AlexNet, build_alexnet)")
    return found, held


def _models_within(model):
    """`model` and every model nested in it, depth first."""
    yield model
    for layer in getattr(model, "layers", []):
        if getattr(layer, "layers", None):
            yield from _models_within(layer)


def _alexnet_layers(model):
    names = {layer.name for layer in getattr(model, "layers", [])}
    return [name for name in arch.LAYER_NAMES if name in names]


def save(weight_set, path):
    """Write the pickle-free `.npz` layout atomically (temporary file, then rename)."""
    path = Path(path)
    arrays = {}
    for name, (weights, biases) in weight_set.params.items():
        arrays[f"{name}/weights"] = weights
        arrays[f"{name}/biases"] = biases
    if weight_set.class_names is not None:
        arrays["class_names"] = np.array(weight_set.class_names, dtype=str)
    return write_atomic(path, lambda handle: np.savez(handle, **arrays), WeightsError)


def imagenet_class_names():
    """The 1000 ILSVRC-2012 class names in Caffe's order."""
    from .. import imagenet

    return imagenet.class_names()


def class_names_for(weight_set):
    """The labels to report: the names saved with the weights, else ImageNet's for 1000 classes."""
    if weight_set.class_names is not None:
        return list(weight_set.class_names)
    return default_class_names(weight_set.num_classes)


def default_class_names(count):
    """ImageNet's names for 1000 classes, else "class 0", "class 1", ..."""
    if count == arch.IMAGENET_CLASSES:
        return imagenet_class_names()
    return [f"class {index}" for index in range(count)]
