"""Export a model for serving: a TensorFlow SavedModel, or a TFLite file; or as a Keras model file.

The SavedModel has two signatures:
- `serving_default`: a batch of encoded images (JPEG, PNG, BMP, GIF, WebP bytes) -> decoded,
  resized and cropped in the graph the way `preprocess` does it with OpenCV;
- `preprocessed`: a batch of (227, 227, 3) BGR mean-subtracted float32 views, as
  `preprocess.image_views` makes them.
Both return `probabilities` (N, classes), and the `top_k` most probable `classes` (labels) with
their `scores`. The TFLite file holds the `preprocessed` signature; its class labels are
written next to it (`<name>.labels.txt`), since TFLite apps read labels from a file; its
outputs are `probabilities`, the top-k `indices` into that list, and their `scores`. The
Keras file is the model `alexft.AlexNet` builds (preprocessed views in, softmax scores out,
class names kept), for Keras code.

In-graph decoding comes close to OpenCV's but not to the bit: JPEGs decode identically (both
use libjpeg's accurate integer IDCT), but TensorFlow ignores EXIF orientation, and its
bilinear resize works in float where OpenCV's uses fixed-point uint8 arithmetic, so after
rounding about one pixel value in eight differs by one grey level. tests/test_export.py pins
that bound on real photos.
"""
import contextlib
import io
import logging
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import keras
import tensorflow as tf

from . import weights as weights_io
from .converter_space import check_converter_space, converter_scratch_bytes
from .declared_pixels import declared_pixels
from .image_files import MAX_PIXELS
from .export_request import (FORMATS, ExportError, ExportOptionsError, ExportRequest, format_for,  # noqa: F401  (re-exported)
                             is_tflite_file, labels_path)
from .model import build_alexnet
from .predict import model_dtype
from .preprocess import CROP
from .preprocessing_layer import caffe_views
from .progress import progress_bar
from .quantize import Quantization
from .atomic import (missing_folders, remove_empty, remove_stale_temporaries, temporary_path, write_failure_cause,
                     write_text)
from .python_words import EXPORT_KEYWORDS, said_in_python_words
from .quiet import stderr_held_back
from .weights.sources import check_weights_argument

log = logging.getLogger(__name__)


def decode_and_preprocess(data):
    """Encoded image bytes (scalar string tensor) -> (227, 227, 3) centre view, in TF ops only.
    An image declaring more than MAX_PIXELS is refused before decoding (InvalidArgumentError)."""
    refused = tf.debugging.assert_less_equal(
        declared_pixels(data), tf.constant(MAX_PIXELS, tf.int64),
        message=f"an image declares more than {MAX_PIXELS:,} pixels in its header: refused before decoding "
                "(scale it down first; AlexNet sees 256x256)")
    with tf.control_dependencies([refused]):
        image = tf.cond(  # RGB uint8
            tf.io.is_jpeg(data),
            # TensorFlow's default JPEG IDCT is libjpeg's fast one; OpenCV uses the accurate one.
            lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
            lambda: tf.io.decode_image(data, channels=3, expand_animations=False),
        )
    return caffe_views(image)


class ServingModule(tf.Module):
    """The network, its labels and the two serving functions, as one trackable object."""

    def __init__(self, model, class_names, top_k=5):
        super().__init__()
        self.model = model
        self.labels = tf.constant(list(class_names))
        self.class_names = list(class_names)  # as given: TensorFlow's strings come back as UTF-8 bytes
        self.top_k = min(top_k, len(class_names))

    @tf.function(input_signature=[tf.TensorSpec([None, CROP, CROP, 3], tf.float32, name="views")])
    def preprocessed(self, views):
        return self._outputs(views)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def encoded(self, images):
        views = tf.map_fn(decode_and_preprocess, images, fn_output_signature=tf.TensorSpec([CROP, CROP, 3], tf.float32))
        return self._outputs(views)

    def _outputs(self, views):
        # An empty batch (a server's request whose images were all filtered out) is answered
        # with empty outputs: the convolutions' kernels refuse one.
        logits = tf.cond(tf.shape(views)[0] > 0, lambda: tf.cast(self.model(views, training=False), tf.float32),
                         lambda: tf.zeros([0, len(self.class_names)], tf.float32))
        probabilities = tf.nn.softmax(logits)
        scores, indices = tf.math.top_k(probabilities, k=self.top_k)
        return {"probabilities": probabilities, "classes": tf.gather(self.labels, indices), "scores": scores}


def serving_module(weights, top_k=5, precision="float32"):
    """A weights file (or a WeightSet already read) in a fresh network wrapped for export;
    `precision` as in predict.load_predictor (its inputs and outputs stay float32)."""
    weight_set = weights_io.as_weight_set(weights)
    class_names = weights_io.class_names_for(weight_set)
    # The variables start from the set's arrays (taken, or copied from a caller's set: WeightSet.handed_over).
    model = build_alexnet(num_classes=weight_set.num_classes, dropout=0.0, dtype=model_dtype(precision),
                          initial=weight_set.initial_arrays())
    return ServingModule(model, class_names, top_k=top_k)


def export(weights, output, file_format=None, top_k=5, force=False, quantization=None, precision="float32",
           before_writing=None, calibration=None):
    """alexft.export_model once its request is checked (`export_request.export_model`, whose
    docstring says what it does); errors name these keywords, not the command line's flags."""
    with said_in_python_words(EXPORT_KEYWORDS):
        return export_as_command(weights, output, file_format, top_k, force, quantization, precision, before_writing,
                                 calibration)


def export_as_command(weights, output, file_format=None, top_k=5, force=False, quantization=None, precision="float32",
                      before_writing=None, calibration=None):
    """export for the command line: its errors name the command's flags."""
    check_weights_argument(weights)
    file_format = file_format or format_for(output)
    ExportRequest(output, file_format, top_k, quantization, precision, force).check()  # as typed: `out/` names a folder
    output = Path(output)
    if isinstance(quantization, str) or calibration is not None:  # as on the command line, images listed now
        quantization = Quantization.from_options(quantization, calibration)
    module = None if file_format == "keras" else serving_module(weights, top_k=top_k, precision=precision)
    # Beside the output, named as temporaries: what a killed export leaves is removed by the next.
    temporary = temporary_path(output)
    made = missing_folders(output.parent)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(output.parent, shared=True, prefix=output.name)  # only this output's
        if file_format == "savedmodel":
            log.info("%s: writing a SavedModel folder%s", output, " (bfloat16 weights)" if precision != "float32" else "")
            written = _write_saved_model(module, temporary)
        elif file_format == "keras":
            written = _write_keras_file(weights, temporary, output.name)
        else:
            written = temporary
            # Before the announcement: a disk too small is said at once, not after "tens of seconds".
            check_converter_space(output.parent, _converter_scratch(module.model), output, ExportError)
            log.info("%s: converting to TF Lite%s; the converter works for tens of seconds", output,
                     f", {quantization.mode}" if quantization is not None else "")
            temporary.write_bytes(tflite_flatbuffer(module, quantization, beside=output))
        if before_writing is not None:
            before_writing()
        replaces_tflite = is_tflite_file(output)  # (--force: an earlier export, which ExportRequest checked)
        _replace(written, output)
        if replaces_tflite and file_format != "tflite":  # its labels go with it: the other formats hold their own
            _remove_stale_labels(output)
    except OSError as failure:  # (a Keras file, TF Lite's bytes, the rename)
        raise ExportError(f"{output}: could not be written ({write_failure_cause(failure)})") from None
    except tf.errors.OpError as failure:  # a SavedModel's variables: TensorFlow's own file writes
        raise ExportError(f"{output}: could not be written ({_write_failure(failure)})") from None
    finally:
        _remove(temporary)
        if not output.exists():  # failed or interrupted: the folders made for it go too
            remove_empty(made)
    if file_format == "tflite":
        write_text(labels_path(output), "\n".join(module.class_names) + "\n", ExportError)
    return output


def _converter_scratch(model):
    return converter_scratch_bytes(sum(variable.numpy().nbytes for variable in model.weights))


def _write_failure(failure):
    """The cause in a TensorFlow write error ("{{function_node …}} TEMPORARY-FILE; No space left on
    device [Op:SaveV2]"), without the temporary file's name."""
    if "No space left on device" in failure.message:
        return "no space left on the device"
    cause = failure.message.rpartition(";")[2].strip()
    return re.sub(r"\s*\[Op:\w+\]$", "", cause) or failure.message


def _remove_stale_labels(output):
    try:
        labels_path(output).unlink(missing_ok=True)
    except OSError as error:  # the export itself is written: said, not failed
        log.warning("warning: %s: the replaced TF Lite export's labels could not be removed (%s)", labels_path(output),
                    error.strerror or error)


def _write_saved_model(module, folder):
    signatures = {"serving_default": module.encoded, "preprocessed": module.preprocessed}
    tf.saved_model.save(module, str(folder), signatures=signatures)
    return folder


def _write_keras_file(weights, folder, name):
    """The Keras model `alexft.AlexNet` builds from `weights`, saved as `folder/name` (Keras
    saves only to names ending in .keras, so the temporary is a folder holding the file under
    its own name)."""
    from .applications import AlexNet

    weight_set = weights_io.as_weight_set(weights)
    class_names = weights_io.class_names_for(weight_set)  # (ImageNet's for Caffe's file, which names none)
    model = AlexNet(weights=weight_set)  # (a caller's set is copied and stays whole)
    model.class_names = class_names
    folder.mkdir()
    model.save(folder / name)  # (ExportRequest saw to the name's .keras)
    return folder / name


def tflite_flatbuffer(module, quantization=None, beside=None):
    """The TF Lite model of a ServingModule's `preprocessed` outputs (probabilities, the top-k
    indices and scores), as bytes; `quantization`: a quantize.Quantization. `beside`: the file
    being made, next to which the converter keeps its temporary SavedModel (~470 MB, named as a
    temporary: what a killed conversion leaves, the next one removes) instead of in the system's
    temporary folder."""
    # The converter freezes Keras 3 variables only from a Keras model (a tf.Module wrapper
    # converts to a file without them), so the numeric outputs are rebuilt as one.
    views = keras.Input((CROP, CROP, 3), name="views")
    probabilities = keras.layers.Softmax(name="probabilities")(module.model(views))
    scores, indices = keras.ops.top_k(probabilities, module.top_k)
    numeric = keras.Model(views, {"probabilities": probabilities, "indices": indices, "scores": scores})
    # The converter prints its temporary export on stdout and its C++ steps on stderr.
    converter = tf.lite.TFLiteConverter.from_keras_model(numeric)
    visible = {}  # the real stderr, once the converter's is held back
    if quantization is not None:
        quantization.configure(converter, shown=lambda views: _with_bar(views, visible.get("stderr")))
    # The converter's Python warning for an int8 model's float input and output, which alexft
    # asks for on purpose (a filter, not catch_warnings: that is process-wide, and the
    # calibration's decoding takes turns with it, errors.WARNING_FILTERS).
    warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected", category=UserWarning)
    scratch = Path(beside).absolute().parent if beside is not None else Path(tempfile.gettempdir())
    needed = _converter_scratch(numeric)
    check_converter_space(scratch, needed, beside, ExportError)
    with contextlib.redirect_stdout(io.StringIO()), stderr_held_back() as stderr, _temporary_files_beside(beside):
        visible["stderr"] = stderr
        try:
            return converter.convert()
        except Exception:
            # The converter swallows its SavedModel's write error and fails later on
            # ("'NoneType' object is not callable"): a disk that filled meanwhile is said as such.
            check_converter_space(scratch, needed, beside, ExportError)
            raise


def _with_bar(views, stream):
    """The calibration views, counted on a bar as the converter runs each through the model."""
    with progress_bar(len(views), stream=stream, minimum=8, unit="img", desc="int8 calibration") as bar:
        for view in views:
            bar.update(1)  # as it is handed over: the converter need not ask for one more
            yield view


@contextlib.contextmanager
def _temporary_files_beside(path):
    """Python's temporary files (the converter's) go into a folder beside `path` while active,
    removed after; None: unchanged."""
    if path is None:
        yield
        return
    folder = temporary_path(Path(path).with_name(Path(path).name + ".convert"))
    folder.mkdir(parents=True, exist_ok=True)
    previous, tempfile.tempdir = tempfile.tempdir, str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = previous
        shutil.rmtree(folder, ignore_errors=True)


def _replace(temporary, output):
    if output.is_dir() and not output.is_symlink():
        shutil.rmtree(output)
    elif output.exists():
        output.unlink()
    os.replace(temporary, output)


def _remove(path):
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
