"""The `alexft` command: parse options, call one library function, print the result.

Results go to stdout (`--json` for machines); progress and messages go to stderr. One module
per command group; none imports TensorFlow until a command needs it, so mistakes are refused
at once (benchmarks/usage_errors.py).
"""
import errno
import logging
import os
import signal
import sys

import click

from .export import export
from .predict import classify, evaluate, features
from .train import finetune
from .weights import weights_group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="alexft")
def main():
    """AlexNet with the original Caffe ImageNet weights: classify and fine-tune."""
    logging.basicConfig(format="alexft: %(message)s", stream=sys.stderr, level=logging.WARNING)
    logging.getLogger("alexft").setLevel(logging.INFO)  # our own notes; libraries' INFO chatter stays out


for command in (classify, evaluate, features, finetune, weights_group, export):
    main.add_command(command)


def run():
    """The `alexft` executable, `python -m alexft` and `python cli.py`: the command in a process
    of its own (tests and notebooks call `main` in theirs)."""
    # Keras imports scikit-learn, when it is installed, for wrappers no command uses: 1.3 s and
    # 60 MB of every TensorFlow start-up (docs/benchmarks.md). A process of its own may go
    # without it; `import alexft` in the user's process leaves their imports alone.
    sys.modules.setdefault("sklearn", None)
    try:
        try:
            main(prog_name="alexft")
        except SystemExit as done:
            _finish_undisturbed(done.code)
            raise
        finally:
            sys.stdout.flush()  # a full disk behind `> results.json` shows here at the latest
    except OSError as error:
        if error.filename or error.errno not in OUTPUT_LOST:
            raise  # our own files' errors name them; this one is about standard output
        _stop_writing_stdout(error)


def _finish_undisturbed(code):
    """The command has ended and chosen its exit code; what remains is the interpreter's
    teardown (TensorFlow's takes up to a second or two). A Ctrl-C or SIGTERM now would turn a
    finished export, whose result is printed, into exit 130 or 143: it ends the process at
    once instead, with the code the command chose."""
    status = 0 if code is None else code if isinstance(code, int) else 1  # as SystemExit's own rule

    def end_now(signum, frame):
        try:
            sys.stdout.flush()
        finally:
            os._exit(status)

    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, end_now)


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
