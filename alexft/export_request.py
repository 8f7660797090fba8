"""What an export was asked for, checked without TensorFlow.

`alexft export` checks the request before TensorFlow's seconds of start-up, and
`alexft.export.export` checks it again for Python callers: one set of rules for both.
"""
from dataclasses import dataclass
from pathlib import Path

from .errors import AlexftError
from .predict import PRECISIONS
from .quantize import Quantization

FORMATS = ("savedmodel", "tflite")


class ExportError(AlexftError):
    """The model cannot be exported as asked."""


class ExportOptionsError(ExportError):
    """Options that do not go together (a usage error on the command line)."""


@dataclass(frozen=True)
class ExportRequest:
    """An export's output and options. `quantization`: a quantize.Quantization (TF Lite only),
    or just its mode: `check` only asks whether there is one. `precision`: "bfloat16" holds a
    SavedModel's weights in bfloat16."""

    output: Path
    file_format: str = "savedmodel"
    top_k: int = 5
    quantization: Quantization = None
    precision: str = "float32"
    force: bool = False

    def check(self):
        """Raise ExportOptionsError for options that do not go together, ExportError for an
        output that exists without `force`."""
        if self.file_format not in FORMATS:
            raise ExportOptionsError(f"unknown export format {self.file_format!r}; choose one of {', '.join(FORMATS)}")
        if self.precision not in PRECISIONS:
            raise ExportOptionsError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.quantization is not None and self.file_format != "tflite":
            raise ExportOptionsError("quantization needs the TF Lite format (--format tflite)")
        if self.precision != "float32" and self.file_format == "tflite":
            raise ExportOptionsError("TF Lite has no bfloat16 kernels: export float32, or quantize "
                                     "(--quantize float16 or int8) for a smaller, faster file")
        if Path(self.output).exists() and not self.force:
            raise ExportError(f"{self.output}: already exists; pass --force to replace it")
        return self
