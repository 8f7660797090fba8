"""Post-training quantization of the TF Lite export: float16 weights, or int8 calibrated on
the user's own images.

float16 stores the weights in half precision (half the file; LiteRT computes in float32).
int8 stores weights and activations as 8-bit integers with float input and output: a quarter
of the file, and the activations' ranges are measured on calibration images, which should look
like what the model will see (a few hundred are enough). Its softmax is computed in int8 too,
so probabilities come in steps of 1/256 (small ones read 0). Their agreement with float32 is
measured in docs/benchmarks.md.
"""
import logging
from dataclasses import dataclass, field

import numpy as np

from .errors import AlexftError
from .preprocess import find_images, image_views

log = logging.getLogger(__name__)

MODES = ("float16", "int8")
# TensorFlow's guide suggests 100-500 samples; more costs minutes and changes little.
CALIBRATION_IMAGES = 200
FEW_CALIBRATION_IMAGES = 100  # under the guide's least, the user is told the ranges may be rough


class QuantizationError(AlexftError):
    """The model cannot be quantized as asked."""


@dataclass(frozen=True)
class Quantization:
    """What `export --quantize` asked for: the mode and, for int8, the calibration images."""

    mode: str
    calibration: tuple = field(default=())
    skipped: list = field(default_factory=list, compare=False)  # calibration images that could not be read
    views: list = field(default_factory=list, compare=False, repr=False)  # their centre views, once read

    @classmethod
    def from_options(cls, mode, calibration_folder=None):
        """Checked before TensorFlow starts: int8 needs images, the others take none. No mode
        (float32) gives None."""
        if mode is None:
            if calibration_folder is not None:
                raise QuantizationError("calibration images are for int8 quantization only (--quantize int8)")
            return None
        if mode not in MODES:
            raise QuantizationError(f"unknown quantization {mode!r}; choose one of {', '.join(MODES)}")
        if mode != "int8":
            if calibration_folder is not None:
                raise QuantizationError("calibration images are for int8 quantization only (--quantize int8)")
            return cls(mode)
        if calibration_folder is None:
            raise QuantizationError("int8 quantization needs calibration images (--calibration DIR): "
                                    "a few hundred like the ones the model will see")
        images = find_images(calibration_folder)
        if not images:
            raise QuantizationError(f"{calibration_folder}: no images to calibrate on")
        return cls(mode, tuple(evenly_spaced(images, CALIBRATION_IMAGES)))

    def configure(self, converter, shown=lambda views: views):
        """Set a TFLiteConverter up for this quantization; int8's calibration images are read here,
        before the conversion (whose stderr is held back), so what is skipped is said. `shown`
        wraps the views as the converter takes them (with a progress bar: 200 take 20 s or so)."""
        import tensorflow as tf

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if self.mode == "float16":
            converter.target_spec.supported_types = [tf.float16]
        else:
            views = self.calibration_views()
            converter.representative_dataset = lambda: ([view[np.newaxis]] for view in shown(views))

    def calibration_views(self):
        """The centre views of the calibration images that can be read (200 are 124 MB), read
        once: the command reads them before TensorFlow's start-up, so a folder of images none
        of which can be read is said at once."""
        if not self.views:
            self.views.extend(self._read_views())
        return self.views

    def _read_views(self):
        views = []
        for path in self.calibration:
            try:
                views.append(image_views(path)[0])
            except AlexftError as error:
                log.warning("calibration: skipped %s", error)
                self.skipped.append(str(path))
        if not views:
            tried = len(self.calibration)
            raise QuantizationError(f"no calibration image could be read ({tried} tried, "
                                    f"{'named' if tried == 1 else 'each named'} above)")
        few = ("; so few give rough ranges: a few hundred like the ones the model will see are better"
               if len(views) < FEW_CALIBRATION_IMAGES else "")
        log.warning("int8: measuring the activations' ranges on %d calibration image%s%s", len(views),
                    "" if len(views) == 1 else "s", few)
        return views


def evenly_spaced(items, count):
    """At most `count` of `items`, spread over the whole list (a folder per class, sorted,
    would otherwise give only the first classes)."""
    if len(items) <= count:
        return list(items)
    return [items[int(index)] for index in np.linspace(0, len(items) - 1, count).round()]
