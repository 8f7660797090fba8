"""The `alexft` command: parse options, call one library function, print the result.

Results go to stdout (`--json` for machines); progress and messages go to stderr. One module
per command group; none imports TensorFlow until a command needs it, so mistakes are refused
at once (benchmarks/usage_errors.py).
"""
import atexit
import codecs
import errno
import io
import logging
import os
import signal
import sys
import warnings

import click

from .. import interrupts, quiet

from . import common, examples
from .export import export
from .predict import classify, evaluate, features
from .train import finetune
from .weights import weights_group


class _Commands(click.Group):
    """A Ctrl-C while click reads a command's arguments (their callbacks import and check files)
    ends as one in the command does. Click said "Aborted!" and exited 1, so a shell's loop of
    alexft calls went on to the next; once the command runs, `fail_cleanly` says it."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as stop:
            common.exit_interrupted(stop)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]}, epilog=examples.epilog(""))
@click.version_option(package_name="alexft")
def main():
    """AlexNet with the original Caffe ImageNet weights: classify and fine-tune."""
    logging.basicConfig(format="alexft: %(message)s", stream=sys.stderr, level=logging.WARNING)
    logging.getLogger("alexft").setLevel(logging.INFO)  # our own notes; libraries' INFO chatter stays out
    _say_alexfts_warnings(click.get_current_context())
    _matplotlib_config_in_the_cache()


def _matplotlib_config_in_the_cache():
    """TensorFlow imports Matplotlib, which, where ~/.config cannot be written (a read-only or
    missing HOME on a cluster), says so in three lines through logging and keeps its font cache in
    a temporary folder: given alexft's cache instead, it keeps it there and says nothing."""
    if os.environ.get("MPLCONFIGDIR"):
        return
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    nearest = os.path.join(config, "matplotlib")
    while not os.path.exists(nearest) and os.path.dirname(nearest) != nearest:
        nearest = os.path.dirname(nearest)
    if os.path.isdir(nearest) and os.access(nearest, os.W_OK | os.X_OK):
        return
    from alexft.weights.sources import cache_dir

    folder = cache_dir() / "matplotlib"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(folder)
    except OSError:  # the cache cannot be written either (a read-only container): a folder for this run
        import shutil
        import tempfile

        try:
            folder = tempfile.mkdtemp(prefix="alexft-matplotlib-")
        except OSError:
            return  # (Matplotlib's own words then)
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["MPLCONFIGDIR"] = str(folder)


def _say_alexfts_warnings(ctx):
    """The library's notes to Python callers (AlexftWarning) said as the command's own lines, for
    the command's duration: Python's form names a frame of click's, and under PYTHONWARNINGS=error
    a note would become a traceback."""
    from alexft.errors import AlexftWarning

    ctx.with_resource(warnings.catch_warnings())
    warnings.filterwarnings("always", category=AlexftWarning)
    shown = warnings.showwarning

    def show(message, category, *args, **kwargs):
        if issubclass(category, AlexftWarning):
            common.say_warning(message)
        else:
            shown(message, category, *args, **kwargs)

    warnings.showwarning = show


for command in (classify, evaluate, features, finetune, weights_group, export):
    main.add_command(command)


def run():
    """The `alexft` executable, `python -m alexft` and `python cli.py`: the command in a process
    of its own (tests and notebooks call `main` in theirs)."""
    # Keras imports scikit-learn, when it is installed, for wrappers no command uses: 1.3 s and
    # 60 MB of every TensorFlow start-up (docs/benchmarks.md). A process of its own may go
    # without it; `import alexft` in the user's process leaves their imports alone.
    sys.modules.setdefault("sklearn", None)
    _standard_streams_ready()
    try:
        _run_command()
    except SystemExit as done:
        _exit_at_once(done.code)
    except KeyboardInterrupt:  # in click's own wrap-up, once the command's handlers are gone
        if common.command_finished():
            _exit_at_once(0)
        print("alexft: interrupted", file=sys.stderr)
        _exit_at_once(common.EXIT_INTERRUPTED)


def _standard_streams_ready():
    """Closed streams reopened on /dev/null: a closed descriptor must not become a file alexft
    opens (TensorFlow's C++ logging writes to fd 2 whatever Python thinks). A closed stdout is
    said, as what is printed there is lost; the command still runs (features, finetune and
    export write their results to files). File names that are not UTF-8 are written as their
    bytes, on both streams, so that a name in a message can be copied to find the file."""
    codecs.register_error("alexft_name_bytes", _name_bytes)
    if sys.stderr is None:  # started with `2>&-`: messages go nowhere, as asked
        _occupy_with_devnull(2)
        sys.stderr = open(2, "w", closefd=False)
    if sys.stdout is None:  # started with `>&-`
        _occupy_with_devnull(1)
        sys.stdout = open(1, "w", closefd=False)
        print("alexft: warning: standard output is closed: what the command prints there is discarded", file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):  # (not a replacement of the caller's that lacks it)
            stream.reconfigure(errors="alexft_name_bytes")
    _stderr_on_a_descriptor_of_its_own()


def _stderr_on_a_descriptor_of_its_own():
    """sys.stderr on a copy of descriptor 2 (the same file): what Python writes (alexft's lines,
    bars and warnings, from any thread) never lands in a decode's capture of descriptor 2, where
    the image decoders' own lines are caught to be said again naming their file
    (quiet.said_on_descriptor_2), nor in a hold-back of C++ libraries' start-up lines."""
    stream = sys.stderr
    if not isinstance(stream, io.TextIOWrapper) or not quiet.on_descriptor_2(stream):
        return
    try:
        copy = os.dup(2)
    except OSError:
        return
    sys.stderr = io.TextIOWrapper(io.FileIO(copy, "w"), encoding=stream.encoding, errors=stream.errors,
                                  line_buffering=True, write_through=True)


def _name_bytes(error):
    """The error handler of both streams: a file name's undecodable bytes (held by Python as
    surrogates U+DC80-U+DCFF) written back as those bytes, anything else escaped."""
    text = error.object[error.start:error.end]
    if isinstance(error, UnicodeEncodeError) and all(0xDC80 <= ord(char) <= 0xDCFF for char in text):
        return bytes(ord(char) - 0xDC00 for char in text), error.end
    return codecs.backslashreplace_errors(error)


def _occupy_with_devnull(fd):
    null = os.open(os.devnull, os.O_WRONLY)
    if null != fd:
        os.dup2(null, fd)
        os.close(null)


def _run_command():
    try:
        try:
            main(prog_name="alexft")
        finally:
            sys.stdout.flush()  # a full disk behind `> results.json` shows here at the latest
    except OSError as error:
        if error.filename or error.errno not in OUTPUT_LOST:
            raise  # our own files' errors name them; this one is about standard output
        _stop_writing_stdout(error)


def _exit_at_once(code):
    """End the process with the exit code the command chose, without the interpreter's
    teardown. Python restores the default signal actions as it finalises, and TensorFlow's
    C++ teardown then takes up to a second: a Ctrl-C or SIGTERM there killed a finished export,
    whose result was printed, with status 130 or 143. Python's exit functions still run
    (logging's flush, temporary folders' removal), and a stop during them ends at once with
    the same code."""
    if isinstance(code, str):  # SystemExit's own rule: a message is printed, status 1
        print(code, file=sys.stderr)
    status = 0 if code is None else code if isinstance(code, int) else 1

    def end_now(signum, frame):
        _flush_and_exit(status)

    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, end_now)
    try:
        atexit._run_exitfuncs()
    finally:
        _flush_and_exit(status)


# A stopped command ends killed by its signal, as Python's own uncaught KeyboardInterrupt ends: a
# shell sees 130/143 all the same, and a loop of alexft calls stops at the first Ctrl-C. Bash and
# make go on after a child that merely exited 130, taking it to have handled the Ctrl-C itself.
_STOPPED_BY = {common.EXIT_INTERRUPTED: signal.SIGINT, common.EXIT_TERMINATED: signal.SIGTERM}


def _flush_and_exit(status):
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):  # flushed before (or None: closed at the start)
            pass
    if status in _STOPPED_BY:
        interrupts.end_by_signal(_STOPPED_BY[status])
    os._exit(status)  # (not reached after a stop, unless the signal could not be sent)


# Standard output that cannot take the results: a full disk or quota behind `> file`, or a
# reader that went away (`| head`).
OUTPUT_LOST = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EPIPE})


def _stop_writing_stdout(error):
    """One line instead of a traceback, exit 1; what is still buffered goes nowhere, so that
    Python's own flush at exit does not fail a second time. A closed pipe is the reader's
    choice and is not reported."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if error.errno != errno.EPIPE:
        print(f"alexft: error: the results could not be written to standard output: {error.strerror}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
    run()
