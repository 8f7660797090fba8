"""`export`: a SavedModel, a TF Lite file or a Keras file."""

import click

from . import examples
from .common import (EXIT_INPUT_FAILED, PathParam, fail_cleanly, note_top_k, precision_option, raise_if_terminated, read_weights, say_unused,
                     start_tensorflow, terminating_cleanly, weights_option)


@click.command(short_help="Export a model for serving: SavedModel, TF Lite or Keras.", epilog=examples.epilog("export"))
@click.argument("output", type=PathParam(as_text=True))  # `out/` keeps its slash: a folder, never a file of that name
@weights_option
@click.option("--format", "file_format", type=click.Choice(["savedmodel", "tflite", "keras"]),
              help="savedmodel: a folder for TF Serving (takes image bytes, or preprocessed views); tflite: one file for "
                   "phones; keras: the Keras model alexft.AlexNet builds (softmax scores, class names kept), for "
                   "keras.saving.load_model after import alexft. Default: by OUTPUT's ending, .tflite or .keras, else "
                   "savedmodel.")
@click.option("-k", "--top-k", "top", default=5, show_default=True, type=click.IntRange(min=1), help="Classes returned per image (SavedModel and TF Lite).")
@click.option("--quantize", type=click.Choice(["float16", "int8"]),
              help="TF Lite only. float16: weights in half precision (half the file); int8: weights and activations "
                   "in 8 bits (a quarter), calibrated on --calibration images. Default: float32.")
@click.option("--calibration", type=PathParam(exists=True),
              help="Images (a folder, searched recursively) like those the model will see, for --quantize int8; "
                   "at most 200 are used, spread over the folder.")
@precision_option
@click.option("--force", is_flag=True, help="Replace OUTPUT if it is an earlier export (a SavedModel folder, a TF Lite or a Keras file).")
@click.pass_context
@fail_cleanly
@terminating_cleanly()  # SIGTERM, from the start-up on: the temporary SavedModel and converter files are removed
def export(ctx, output, weights, file_format, top, quantize, calibration, precision, force):
    """Export the model with its class labels for serving, to OUTPUT."""
    from alexft.export_request import ExportOptionsError, ExportRequest, format_for
    from alexft.quantize import Quantization, QuantizationError

    file_format = file_format or format_for(output)
    try:  # the cheap checks first, then the calibration folder is listed
        ExportRequest(output, file_format, top, quantize, precision, force).check()
        quantization = Quantization.from_options(quantize, calibration)
    except (ExportOptionsError, QuantizationError) as error:
        raise click.UsageError(str(error)) from None
    weight_set = read_weights(weights)  # before TensorFlow: a missing, wrong or broken file is said at once
    note_top_k(ctx, top, weight_set.num_classes)
    if quantization is not None and quantization.mode == "int8":
        quantization.calibration_views()  # and calibration images none of which can be read
    start_tensorflow()
    from alexft.export import export_as_command, labels_path

    path = export_as_command(weight_set, output, file_format=file_format, top_k=top, force=force,
                              quantization=quantization, precision=precision, before_writing=raise_if_terminated)
    extra = f" (labels in {labels_path(path)})" if file_format == "tflite" else ""
    kind = ", ".join([file_format] + ([quantize] if quantize else []) + ([precision] if precision != "float32" else []))
    click.echo(f"{path}: {kind}, {_size(path)}{extra}")
    if quantization is not None and quantization.skipped:  # written, but not from every image given
        say_unused(len(quantization.skipped), len(quantization.calibration), "calibration image", "used")
        click.get_current_context().exit(EXIT_INPUT_FAILED)


def _size(path):
    total = path.stat().st_size if path.is_file() else sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
    return f"{total / 2**20:.0f} MiB"
