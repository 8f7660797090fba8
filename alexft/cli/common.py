"""What every `alexft` command shares: the exit-code contract, clean failures, the image
inputs and the options several commands take. Nothing here imports TensorFlow."""
import contextlib
import functools
import signal
import sys
import threading
from pathlib import Path

import click

from alexft import interrupts
from alexft.interrupts import Terminated  # noqa: F401  (re-exported: the commands raise and test it)

# The exit-code contract of every command (docs/commands.md): 0 all good; 1 some input could
# not be used (named on stderr); 2 usage error (click's); 130/143 interrupted by Ctrl-C/SIGTERM.
EXIT_INPUT_FAILED = 1
EXIT_INTERRUPTED = 130


class PathParam(click.Path):
    """A path option or argument (a `pathlib.Path`) that may not be empty: `Path("")` is the
    current folder, so `-o "$RUN"` with RUN unset would have written a run into it."""

    def __init__(self, as_text=False, weights=False, **kwargs):
        # as_text: the value as typed, a trailing slash kept (a Path drops it): `-o out/` names a folder
        super().__init__(path_type=str if as_text else Path, **kwargs)
        self.weights = weights  # a weights file's: a URL is told how to become one

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("an empty path", param, ctx)
        if self.weights and isinstance(value, str):  # (as a Path it lost a slash: "http:/host/w.npy: not found")
            from alexft.weights.sources import WeightsError, check_weights_argument

            try:
                check_weights_argument(value)
            except WeightsError as error:
                self.fail(str(error), param, ctx)
        if self.exists and isinstance(value, str):  # said as the other inputs are (not "Directory 'x' does not exist.")
            from alexft.missing_paths import path_problem

            problem = path_problem(value, "folder" if not self.file_okay else "file" if not self.dir_okay else
                                   "file or folder")
            if problem:
                self.fail(f"{_one_line(value)}: {problem}", param, ctx)
        return super().convert(value, param, ctx)


def _one_line(text):
    return text.replace("\r", " ").replace("\n", " ")  # (a newline in a name had split the error over two lines)


def fail_cleanly(function):
    """Turn an AlexftError (a user's mistake or a bad file) into a one-line message, no
    traceback, exit 1; Ctrl-C into exit 130 (click would say "Aborted!" and exit 1), SIGTERM
    under `terminating_cleanly` into exit 143. What was already printed stays printed. With
    --json the error is also a JSON object on stdout, {"error": MESSAGE}: a script reading it
    had found nothing to parse."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        from alexft.atomic import json_text
        from alexft.errors import AlexftError

        watch = _InterruptWatch()
        interrupts.clear()
        _finished.clear()
        try:
            result = function(*args, **kwargs)
            interrupts.raise_if_pending()  # a stop whose exception was swallowed where it landed: still honoured
            _finished.append(function.__name__)
            return result
        except AlexftError as error:
            if kwargs.get("as_json"):
                click.echo(json_text({"error": str(error)}))
            raise click.ClickException(str(error)) from None
        except KeyboardInterrupt as stop:
            exit_interrupted(stop)
        except Exception:
            # A signal inside TensorFlow's import, tracing or converter can surface as another
            # error (in CI a SIGTERM in the TF Lite converter's export ended as a TypeError from
            # the converter's fallback path).
            if interrupts.terminated():
                exit_interrupted(Terminated())
            if watch.seen:
                exit_interrupted()
            raise
        finally:
            watch.stop()
            interrupts.clear()  # a later call in this process (a test, a notebook) starts clean

    return wrapper


EXIT_TERMINATED = 143
_finished = []  # the command that returned, its result printed (one at most)


def command_finished():
    """Whether the last command returned (its result printed): a Ctrl-C after that, in click's
    wrap-up, fails nothing."""
    return bool(_finished)


def exit_interrupted(stop=None):
    """Say the stop and end the command with its status (130, or 143 for SIGTERM)."""
    sys.stdout.flush()
    terminated = isinstance(stop, Terminated)
    click.echo("alexft: terminated" if terminated else "alexft: interrupted", err=True)
    sys.exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)


def raise_if_terminated():
    """A SIGTERM whose Terminated was swallowed where it landed (TensorFlow's converter runs
    finalizers and callbacks, where exceptions are only printed) stops the command here: at a
    point of no return (an output about to replace another), and when the command returns."""
    if interrupts.terminated():
        raise Terminated


def start_tensorflow():
    """Import TensorFlow quietly. A SIGTERM during its seconds of start-up may land in a bare
    `except:` of its import code and be swallowed: the command stops here then, before any work
    or output, not when it returns."""
    from alexft.quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    raise_if_terminated()


@contextlib.contextmanager
def terminating_cleanly():
    """SIGTERM ends the command as Ctrl-C does (the default action kills at once): raised as
    Terminated, so `finally` blocks remove temporary files and Ctrl-C's own clean-ups run;
    `fail_cleanly` then exits 143. A signal that lands inside a long TensorFlow call takes
    effect when the call returns. Main thread only. Also a decorator: `@terminating_cleanly()`
    puts a whole command under it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        interrupts.note(signum)
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _InterruptWatch:
    """Ctrl-C raises KeyboardInterrupt as always, and is also remembered while a command runs:
    one that lands in TensorFlow's start-up can come out as a RuntimeError or TypeError, which
    must end as an interruption (exit 130), not as a traceback. Only where Python's own
    handler is in place (not when SIGINT is ignored, as under nohup) and in the main thread."""

    def __init__(self):
        self.seen, self._installed = False, False
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, self._remember)
            self._installed = True
        self._unraisable_hook = sys.unraisablehook
        sys.unraisablehook = self._drop_swallowed_stops

    def _drop_swallowed_stops(self, unraisable):
        """A stop that landed in a finaliser or a weakref callback is noted and honoured later
        (`interrupts`): Python's "Exception ignored ... KeyboardInterrupt" and its traceback would
        only alarm. Other exceptions there are printed as Python prints them."""
        if not (isinstance(unraisable.exc_type, type) and issubclass(unraisable.exc_type, KeyboardInterrupt)):
            self._unraisable_hook(unraisable)

    def _remember(self, signum, frame):
        self.seen = True
        interrupts.note(signum)
        raise KeyboardInterrupt

    def stop(self):
        if self._installed and signal.getsignal(signal.SIGINT) == self._remember:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if sys.unraisablehook == self._drop_swallowed_stops:
            sys.unraisablehook = self._unraisable_hook


class EnvironmentOption(click.Option):
    """An option with an environment variable whose errors name the variable only when the value
    came from it: click's named it beside a mistyped `--runtime openvin` given on the line."""

    def get_error_hint(self, ctx):
        hint = click.Parameter.get_error_hint(self, ctx)
        if ctx is not None and ctx.get_parameter_source(self.name) is click.core.ParameterSource.ENVIRONMENT:
            hint += f" (from ${self.envvar})"
        return hint


class ImageInput(click.ParamType):
    """An image file or folder that exists, `-` (one image on standard input) or an http(s) URL."""

    name = "IMAGE"

    def convert(self, value, param, ctx):
        from alexft.image_sources import STDIN, image_source, is_url

        if not isinstance(value, str) or value == STDIN or is_url(value):
            return image_source(value) if isinstance(value, str) else value
        if not value.strip():  # Path("") is the current folder: all its images would be read
            self.fail("an empty path", param, ctx)
        try:
            exists = Path(value).exists() or Path(value).is_symlink()  # a dangling link: reading it says so
        except OSError:  # inside a folder that cannot be searched: reading it says why, for this input alone
            return Path(value)
        if not exists:  # one line, the name shown as a result's is (a newline in it had split the error)
            from alexft.missing_paths import near_name_hint

            from .predict import shown_to

            shown = _one_line(shown_to(sys.stderr, value))  # (other spaces stay as typed)
            self.fail(f"{shown}: no such file or folder{near_name_hint(value)}", param, ctx)
        return Path(value)


def expand_inputs(inputs):
    """Files, URLs and stdin as given; folders as their images, sorted. A folder without images
    is a warning; no image at all, or `-` twice, a usage error (exit 2). No TensorFlow yet."""
    from alexft.image_sources import StdinImage
    from alexft.preprocess import find_images

    notes = []
    found = find_images(list(inputs), say=notes.append)
    for note in notes:  # with no image at all, the error below says what "no images in this folder" would
        if found or not note.endswith(": no images in this folder"):
            say_warning(note)
    if sum(isinstance(item, StdinImage) for item in found) > 1:
        raise click.UsageError("'-' (standard input) can be given once")
    if any(isinstance(item, StdinImage) for item in found):
        command = f"alexft {click.get_current_context().info_name} -"
        if sys.stdin is None:
            raise click.UsageError(f"'-' reads one image from standard input, which is closed; send the image in "
                                   f"({command} < photo.jpg)")
        if sys.stdin.isatty():
            raise click.UsageError(f"'-' reads one image from standard input, which is a terminal here; send the "
                                   f"image in ({command} < photo.jpg, or curl ... | {command})")
    if not found:
        raise click.UsageError(f"no images found in {', '.join(map(str, inputs))}")
    return found


def say_warning(note):
    """`alexft: warning: NOTE` on stderr: one line (a newline in a file's name is a space, as in
    errors), and clear of a progress bar (a note may come from a decoding thread mid-bar)."""
    from alexft.errors import one_line
    from alexft.progress import beside_bars

    with beside_bars(sys.stderr):
        click.echo(f"alexft: warning: {one_line(note)}", err=True)


def say_unused(failed, total, noun, done):
    """The closing line on stderr when some inputs failed (each was named as met): '2 of 5
    inputs could not be classified', and in words when there was one input or none was used."""
    if total == 1:
        said = f"the {noun} could not be {done}"
    elif failed == total:
        said = f"none of the {total} {noun}s could be {done}"
    else:
        said = f"{failed} of {total} {noun}s could not be {done}"
    click.echo(f"alexft: {said}", err=True)


def read_weights(weights, progress=None, skip=()):
    """The --weights file (or the default one) found, read and checked against AlexNet, before
    TensorFlow's seconds of start-up: a missing, mistaken or broken file is said at once. The
    set read is handed on, so the file is read once."""
    from alexft.weights import as_weight_set
    from alexft.weights.sources import resolve_weights

    # Read for the command's one model, which takes the arrays: the file is never held twice.
    return as_weight_set(resolve_weights(weights, progress=progress), skip=skip)


weights_option = click.option(
    "--weights",
    type=PathParam(weights=True),  # a folder is refused by the weights' own check, which says what it holds
    help="Weights file (.npz, .npy or .caffemodel). Default: $ALEXFT_WEIGHTS, weights/bvlc_alexnet.{npz,npy,caffemodel}, "
         "the same in the cache, else download (weights/README.md).",
)
precision_option = click.option(
    "--precision", type=click.Choice(["float32", "bfloat16"]), default="float32", show_default=True,
    help="bfloat16: weights held and computed in bfloat16, for CPUs with AVX512_BF16 or AMX (and GPUs); faster there, "
         "its distance from float32 is measured in docs/benchmarks.md. float32 is Caffe's arithmetic.")
progress_option = click.option(
    "--progress/--no-progress", default=None, help="Progress bar on stderr. Default: on a terminal."
)


def note_top_k(ctx, top, class_count):
    """A --top-k asked for beyond the model's classes gives them all: said once, not silently
    (the default 5 on a model of 2 classes is no request, so it says nothing)."""
    from click.core import ParameterSource

    if top > class_count and ctx.get_parameter_source("top") is ParameterSource.COMMANDLINE:
        click.echo(f"alexft: note: --top-k {top}, but the model knows {class_count} classes: each image gets all "
                   f"{class_count}", err=True)


def preprocessing_options(command):
    """--mean and --resize: the choices Caffe's own tools differ on (preprocess.Preprocessing)."""
    command = click.option(
        "--resize", "resize", type=click.Choice(["uint8", "float"]), default="uint8", show_default=True,
        help="uint8: resize 8-bit pixels, as Caffe's convert_imageset built the databases the zoo's accuracy was "
             "measured on; float: resize in floating point, as Caffe's classify.py does (under a grey level apart).")(command)
    return click.option(
        "--mean", "mean_file", type=PathParam(exists=True, dir_okay=False),
        help="Caffe's mean image (imagenet_mean.binaryproto, or ilsvrc_2012_mean.npy from Caffe's Python) to "
             "subtract, cropped with each view, as Caffe's test protocol does. Default: its per-channel mean pixel.")(command)


def preprocessing_from(mean_file, resize):
    """The Preprocessing asked for; the mean file is read (and refused) before TensorFlow starts."""
    from alexft.preprocess import Preprocessing

    mean = None
    if mean_file is not None:
        from alexft.weights.caffe import read_mean_image

        mean = read_mean_image(mean_file)
    return Preprocessing(mean=mean, float_resize=resize == "float")


def parse_shard(ctx, param, value):
    if value is None:
        return None
    index, slash, count = value.partition("/")
    if not (slash and index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
        raise click.BadParameter(f"{value!r}: expected I/N with 0 <= I < N, e.g. 0/4")
    return int(index), int(count)


shard_option = click.option(
    "--shard", callback=parse_shard, metavar="I/N",
    help="Only the I-th (0-based) of N contiguous, equal parts of all the inputs (folders expanded) sorted by name "
         "as given: N processes given the same names, in any order, cover them exactly once, each in sorted order; "
         "their outputs concatenated for I = 0..N-1 equal one run's on the sorted inputs.")


def inputs_to_shard(inputs, shard):
    """The inputs of a --shard run sorted before folders are expanded, so that which of two names
    for one photo is kept (`a.jpg $PWD/a.jpg`, two folders linking to a third) does not hang on
    the order typed; the inputs as given without --shard. '-' is refused: each process's standard
    input is its own, so no process could tell which shard it belongs to."""
    from alexft.image_sources import StdinImage
    from alexft.pipeline import input_order

    if shard is None:
        return inputs
    if any(isinstance(item, StdinImage) for item in inputs):
        raise click.UsageError("--shard cuts the inputs every process names alike; '-' (standard input) is each "
                               "process's own: save the image to a file, or leave out --shard")
    return sorted(inputs, key=input_order)
