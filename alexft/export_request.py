"""What an export was asked for, checked without TensorFlow.

`alexft export` checks the request before TensorFlow's seconds of start-up, and
`alexft.export.export` checks it again for Python callers: one set of rules for both.
"""
import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from .atomic import check_writable, refuse_folder_for_file
from .errors import AlexftError, warn_user
from .pipeline import check_count
from .predict import PRECISIONS
from .quantize import Quantization
from .weights.formats import is_keras_file
from .python_words import keywords_hinted

FORMATS = ("savedmodel", "tflite", "keras")
DEFAULT_TOP_K = 5


class ExportError(AlexftError):
    """The model cannot be exported as asked."""


class ExportOptionsError(ExportError):
    """Options that do not go together (a usage error on the command line)."""


@dataclass(frozen=True)
class ExportRequest:
    """An export's output and options. `quantization`: a quantize.Quantization (TF Lite only),
    or just its mode: `check` only asks whether there is one. `precision`: "bfloat16" holds a
    SavedModel's weights in bfloat16."""

    output: Path  # or a str as typed: `out/` names a folder
    file_format: str = "savedmodel"
    top_k: int = DEFAULT_TOP_K
    quantization: Quantization = None
    precision: str = "float32"
    force: bool = False

    def check(self):
        """Raise ExportOptionsError for options that do not go together, ExportError for an
        output that exists without `force`."""
        if self.file_format not in FORMATS:
            raise ExportOptionsError(f"unknown export format {self.file_format!r}; choose one of {', '.join(FORMATS)}")
        check_count(self.top_k, "top_k")  # (0 gave a SavedModel returning no class, -1 a TensorFlow graph error)
        if self.precision not in PRECISIONS:
            raise ExportOptionsError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.quantization is not None and self.file_format != "tflite":
            raise ExportOptionsError("quantization needs the TF Lite format (--format tflite, or an OUTPUT ending in .tflite)")
        if self.precision != "float32" and self.file_format == "tflite":
            if self.quantization is not None:  # the user already asked for a smaller file: one flag too many
                raise ExportOptionsError("TF Lite has no bfloat16 kernels, and --quantize already sets the file's "
                                         "numbers: drop --precision bfloat16")
            raise ExportOptionsError("TF Lite has no bfloat16 kernels: export float32, or quantize "
                                     "(--quantize float16 or int8) for a smaller, faster file")
        _check_name_ends(self.output)
        _check_suffix(self.output)
        named = format_for(self.output)
        if named == "savedmodel":
            _check_misspelt_suffix(self.output)
        if named != "savedmodel" and named != self.file_format:
            # A TF Lite file named .keras, or a SavedModel folder named .tflite: every reader would be misled.
            right = Path(self.output).stem + {"savedmodel": "", "tflite": ".tflite", "keras": ".keras"}[self.file_format]
            raise ExportOptionsError(f"{self.output}: the name is a {FORMAT_NAMES[named]}'s, the format asked for a "
                                     f"{FORMAT_NAMES[self.file_format]}; name it for its format (e.g. {right}), or "
                                     "leave the format to the name")
        output = Path(self.output)
        if self.file_format != "savedmodel" and not output.is_symlink():
            # (--force replaced a folder, even a SavedModel, with a file of the folder's name)
            suffix = {"tflite": ".tflite", "keras": ".keras"}[self.file_format]
            refuse_folder_for_file(self.output, f"the export is one {FORMAT_NAMES[self.file_format]}", f"alexnet{suffix}",
                                   ExportError)
        if self.file_format == "keras":
            self._check_keras()
        if output.exists() or output.is_symlink():
            if not is_an_export(output):
                raise ExportError(f"{output}: exists and is not an earlier export (a SavedModel folder, a TF Lite "
                                  "or a Keras file); remove it yourself or choose another OUTPUT")
            # An empty folder made for a SavedModel (mkdir -p serving/photos/1, as TF Serving's
            # versions are laid out) holds nothing to lose: it is written into without --force.
            empty_folder = self.file_format == "savedmodel" and output.is_dir() and not output.is_symlink() \
                and not any(output.iterdir())
            if not self.force and not empty_folder:
                raise ExportError(f"{output}: already exists; pass --force to replace it")
        labels = labels_path(output)
        if self.file_format == "tflite" and labels.exists() and not (self.force and is_an_export(output)):
            # The labels belong to the .tflite beside them: replaced with it, never on their own.
            raise ExportError(f"{labels}: already exists, where the labels of {output.name} go; "
                              + ("pass --force to replace both" if output.exists() else
                                 "remove it yourself or choose another OUTPUT"))
        check_writable(output, ExportError, folder_ok=True)  # a folder here is an earlier export, replaced (--force)
        return self

    def _check_keras(self):
        if self.precision != "float32":
            raise ExportOptionsError("a Keras file holds float32 weights; for bfloat16 arithmetic in Keras, build the "
                                     "model with alexft.AlexNet(weights=...) under keras.mixed_precision's "
                                     "'mixed_bfloat16' policy (a loaded file keeps the policy it was saved with)")
        if not str(self.output).endswith(".keras"):
            raise ExportOptionsError(f"{self.output}: a Keras file's name ends in .keras (lower case: Keras saves and "
                                     f"loads no other), e.g. {_keras_name(self.output)}")
        if self.top_k != DEFAULT_TOP_K:  # (a number asked for that has no effect is said)
            raise ExportOptionsError("--top-k is for the SavedModel and TF Lite signatures; a Keras file gives every "
                                     "class's score (alexft.decode_predictions takes the top ones)")


SUFFIX_FORMATS = {".tflite": "tflite", ".keras": "keras"}
FORMAT_NAMES = {"savedmodel": "SavedModel folder", "tflite": "TF Lite file", "keras": "Keras file"}


# Names that promise a format alexft does not write: a SavedModel folder or a TF Lite file
# under them would mislead every reader (`export model.h5` wrote a folder named model.h5).
FOREIGN_SUFFIXES = {
    ".h5": "Keras' legacy HDF5 format", ".hdf5": "Keras' legacy HDF5 format", ".onnx": "ONNX",
    ".pb": "a frozen TensorFlow graph", ".pt": "PyTorch's format", ".pth": "PyTorch's format",
    ".safetensors": "safetensors", ".mlmodel": "Core ML", ".mlpackage": "Core ML", ".npz": "a weights file (what --weights reads)", ".npy": "a weights file",
    ".caffemodel": "a Caffe weights file", ".zip": "an archive", ".gz": "an archive", ".tgz": "an archive",
    ".tar": "an archive", ".json": "a JSON file"}


OLD_TFLITE_SUFFIXES = (".lite", ".tfl")  # TF Lite's other endings: readers and converters look for .tflite


def _check_suffix(output):
    suffix = Path(output).suffix.lower()
    if suffix in OLD_TFLITE_SUFFIXES:
        raise ExportOptionsError(f"{output}: a TF Lite file's name ends in .tflite here; name it "
                                 f"{Path(output).stem}.tflite")
    if suffix in FOREIGN_SUFFIXES:
        stem = Path(output).name
        while Path(stem).suffix.lower() in FOREIGN_SUFFIXES:  # m.tar.gz: m
            stem = Path(stem).stem
        raise ExportOptionsError(f"{output}: the name asks for {FOREIGN_SUFFIXES[suffix]}, which export does not write; "
                                 f"name it {stem} (a SavedModel folder), {stem}.keras or {stem}.tflite")


def _check_name_ends(output):
    """`export m.keras.` wrote a SavedModel folder named m.keras. (and `m.tflite ` one named with a
    space): a slip of the keyboard that Windows, archives and most tools drop or choke on."""
    name = Path(output).name
    meant = name.rstrip(". \t")
    if meant != name and meant.strip("."):
        raise ExportOptionsError(f"{str(output)!r}: the name ends in {name[len(meant):]!r}, which most tools drop or "
                                 f"mistake; did you mean {str(Path(output).with_name(meant))!r}?")


def _check_misspelt_suffix(output):
    """`export m.tflte` wrote a SavedModel folder named m.tflte, and said so only in passing."""
    suffix = Path(output).suffix.lower()
    meant = difflib.get_close_matches(suffix, SUFFIX_FORMATS, n=1, cutoff=0.75) if len(suffix) > 3 else []
    if meant:
        raise ExportOptionsError(f"{output}: did you mean {Path(output).stem}{meant[0]}? A name ending in {meant[0]} makes a "
                                 f"{FORMAT_NAMES[SUFFIX_FORMATS[meant[0]]]}; a SavedModel folder's name needs no ending")


def _keras_name(output):
    """OUTPUT as a Keras file's name: m.KERAS as m.keras, m.keras.bak as m.keras, d2/ as d2.keras."""
    name = Path(output).name
    at = name.lower().find(".keras")
    return (name[:at] if at > 0 else Path(name).stem) + ".keras"


def format_for(output):
    """The format an OUTPUT name asks for when none is given: `x.tflite` is a TF Lite file and
    `x.keras` a Keras model file (a SavedModel folder under either name would surprise),
    anything else a SavedModel."""
    name = Path(output).name.lower()  # (".keras" alone has no suffix for pathlib, but is Keras' name all the same)
    return next((kind for suffix, kind in SUFFIX_FORMATS.items() if name.endswith(suffix)), "savedmodel")


def labels_path(tflite_path):
    """The class labels written beside a `.tflite` file, one per line in output order."""
    tflite_path = Path(tflite_path)
    return tflite_path.with_name(tflite_path.stem + ".labels.txt")


def is_an_export(path):
    """Whether `path` is what an export writes, so that --force may replace it without losing
    anything else: a SavedModel folder, an empty folder, a TF Lite file or a Keras model file."""
    path = Path(path)
    if path.is_symlink():
        return True  # the link is replaced, never what it points to
    if not path.exists():
        return False
    if path.is_dir():
        return (path / "saved_model.pb").is_file() or not any(path.iterdir())
    return is_tflite_file(path) or is_keras_file(path, ExportError)


def is_tflite_file(path):
    """Whether `path` is a file holding a TF Lite flatbuffer (by its identifier)."""
    if not Path(path).is_file():
        return False
    with open(path, "rb") as handle:
        return handle.read(8)[4:] == b"TFL3"


@keywords_hinted
def export_model(weights, output, file_format=None, top_k=DEFAULT_TOP_K, force=False, quantization=None,
                 precision="float32", before_writing=None, calibration=None):
    """Write the model of `weights` (a file, or a WeightSet already read) to `output` as a
    SavedModel folder, a `.tflite` file or a `.keras` file (`alexft.AlexNet`'s model, which
    `keras.saving.load_model` reads after `import alexft`); `file_format` "savedmodel",
    "tflite" or "keras", by default from `output`'s ending (as `alexft export` chooses).

    `quantization`: "float16" or "int8" as `--quantize` takes them, with `calibration` (a folder
    of images) for int8, or a quantize.Quantization (TF Lite only); `precision`: "bfloat16" holds a
    SavedModel's weights in bfloat16 (TF Lite has no bfloat16 kernels: --quantize). Written under a temporary name and
    renamed when complete; an existing `output` is replaced only with `force`. `before_writing`:
    called when the model is made, before it takes `output`'s place; what it raises leaves
    `output` as it was. Returns the output path. Errors name these keywords, not the command
    line's flags.
    """
    from .python_words import EXPORT_KEYWORDS, said_in_python_words
    from .weights import as_weight_set
    from .weights.sources import check_weights_argument, resolve_weights

    with said_in_python_words(EXPORT_KEYWORDS):
        check_weights_argument(weights)
        if isinstance(weights, (str, os.PathLike)):  # a missing or broken file, said now; read once, as the command does
            weights = as_weight_set(resolve_weights(weights, download=False))
        if isinstance(quantization, str) or calibration is not None:  # as on the command line, images listed now
            quantization, calibration = Quantization.from_options(quantization, calibration), None
        chosen_format = file_format or format_for(output)
        ExportRequest(output, chosen_format, top_k, quantization, precision, force).check()
    classes = getattr(weights, "num_classes", None)
    # (the default 5 on a model of 2 classes is no request, as on the command line: nothing said)
    if classes is not None and top_k != DEFAULT_TOP_K and top_k > classes and chosen_format != "keras":
        warn_user(f"top_k={top_k}, but the model knows {classes} classes: each image gets all {classes}")  # (as the command)
    from .export import export  # TensorFlow, once the request is known to be sound

    return export(weights, output, file_format, top_k, force, quantization, precision, before_writing, calibration)
