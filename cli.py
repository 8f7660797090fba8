"""The `alexft` command: parse options, call one library function, print the result.

Results go to stdout (`--json` for machines); progress and messages go to stderr.
"""
import contextlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import click

# TensorFlow's C++ start-up chatter would bury our own messages. A user who sets
# TF_CPP_MIN_LOG_LEVEL themselves gets TensorFlow's logging exactly as they asked.
_SILENCE_TENSORFLOW = "TF_CPP_MIN_LOG_LEVEL" not in os.environ
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def _tensorflow_quiet():
    """Hold back what TensorFlow's C++ code prints on stderr while it starts.

    TF 2.21 logs (oneDNN, CUDA probing) before its log level is read, so the only way to
    keep the terminal clean is to point file descriptor 2 elsewhere for the import and the
    device probe. If that start-up fails, what it printed is shown after all.
    """
    if not _SILENCE_TENSORFLOW:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _fail_cleanly(function):
    """Turn an AlexftError (a user's mistake or a bad file) into a one-line message, no traceback."""
    import functools

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        from alexft.errors import AlexftError

        try:
            return function(*args, **kwargs)
        except AlexftError as error:
            raise click.ClickException(str(error)) from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="alexft")
def main():
    """AlexNet with the original Caffe ImageNet weights: classify and fine-tune."""
    logging.basicConfig(format="alexft: %(message)s", stream=sys.stderr, level=logging.INFO)


weights_option = click.option(
    "--weights",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Weights file (.npy or .npz). Default: $ALEXFT_WEIGHTS, weights/bvlc_alexnet.npy, the cache, else download.",
)
progress_option = click.option(
    "--progress/--no-progress", default=None, help="Progress bar on stderr. Default: on a terminal."
)


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@weights_option
@click.option("--top-k", "top", default=5, show_default=True, type=click.IntRange(min=1), help="Classes shown per image.")
@click.option("--ten-crop", is_flag=True, help="Average Caffe's ten crops instead of the centre crop.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1), help="Images per batch.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines on stdout, one object per image.")
@progress_option
@click.pass_context
@_fail_cleanly
def classify(ctx, inputs, weights, top, ten_crop, batch_size, as_json, progress):
    """Print the top classes of images (files, or folders searched recursively).

    Exit status 1 if any input could not be used; all others are still classified.
    """
    with _tensorflow_quiet():
        from alexft.predict import classify as classify_images, load_predictor
    from alexft.preprocess import find_images

    paths = find_images(inputs)
    if not paths:
        raise click.UsageError(f"no images found in {', '.join(map(str, inputs))}")
    predictor = load_predictor(weights, progress=progress)
    failures = 0
    for result in classify_images(predictor, paths, top=top, ten_crop=ten_crop, batch_size=batch_size, progress=progress):
        failures += "error" in result
        _print_result(result, as_json)
    if failures:
        click.echo(f"alexft: {failures} of {len(paths)} inputs could not be classified", err=True)
        ctx.exit(1)


def _print_result(result, as_json):
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False))
    elif "error" in result:
        click.echo(f"error: {result['error']}", err=True)
    else:
        click.echo(result["path"])
        for prediction in result["predictions"]:
            click.echo(f"  {prediction['probability']:7.2%}  {prediction['label']}")


if __name__ == "__main__":
    main()
