"""The errors alexft raises for a user's mistake or a bad file.

Each carries a one-line message that names the file and the cause; the CLI prints
the message alone, without a traceback.
"""
import contextlib
import os
import sys
import threading
import warnings


class AlexftError(Exception):
    """Base class: a problem the user can fix, explained in one line.

    Messages often quote a library's own error text, which may span lines (numpy's header
    errors do): the message is folded to one line here, once for every caller.
    """

    def __init__(self, message="", *args):
        super().__init__(one_line(message), *args)


def one_line(text):
    """`text` with each run of white space (a library's line breaks, a newline in a file's name)
    as one space: what alexft says on stderr is one line each."""
    return " ".join(str(text).split())


WARNING = "warning: "  # how a run's log line that is a warning begins


class AlexftWarning(UserWarning):
    """A note for a Python caller (a folder without images left out, an input no feature came
    from); the command line prints it as "alexft: warning: ..."."""


# warnings.catch_warnings changes the process's filters, not a thread's: two image headers read
# at once on two decoding threads left "ignore everything" in place for good (the second restored
# what the first had set), and a note said meanwhile on another thread was dropped. Every change
# alexft makes to the filters, and every note it says, takes turns.
WARNING_FILTERS = threading.Lock()


def warn_user(message):
    """A note for a Python caller, where the command line prints "alexft: warning: ...",
    attributed to the caller's line (the first frame outside alexft), as Keras' warnings are.
    Those who listen (`warnings_heard`) are given it too, however Python's filters treat it."""
    for listen in list(_LISTENERS):
        listen(message)
    frame, level = sys._getframe(0), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    with WARNING_FILTERS:
        warnings.warn(message, AlexftWarning, stacklevel=level)


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_LISTENERS = []


@contextlib.contextmanager
def warnings_heard(listen):
    """Call `listen(message)` with each warning alexft gives meanwhile, on any thread (a run keeps
    what it warned of for summary.json: a damaged JPEG said while features are cached)."""
    _LISTENERS.append(listen)
    try:
        yield
    finally:
        _LISTENERS.remove(listen)


class WeightsError(AlexftError, ValueError):
    """A weights file is missing, unreadable, unsafe or does not fit the network."""


class ImageError(AlexftError, ValueError):
    """An image file cannot be used (missing, empty, not an image, truncated, too large)."""


class DeviceError(AlexftError, ValueError):
    """A device or strategy was asked for that this machine does not have."""


class TrainingError(AlexftError, RuntimeError):
    """Training cannot go on (diverged, interrupted, an option conflict, a run folder in the way)."""


class TrainingInterrupted(TrainingError, KeyboardInterrupt):
    """Ctrl-C stopped the run (or SIGTERM: during the epochs, or at any time under the command
    line, which turns SIGTERM into an exception as Python does Ctrl-C). During the epochs it
    comes after the step in progress and its checkpoint (and model.npz, once an epoch had ended)
    were saved; before them (listing, caching features, the range test), a fresh run folder is
    discarded and a resumed one kept; the message says which. A KeyboardInterrupt too, as Keras'
    fit raises one, so `except KeyboardInterrupt` in a notebook or script catches it;
    `signal_number` says which signal came; `run`, the run folder kept (a Path, None when none
    was); `model`, its model.npz when one was written (the best epoch so far), else None.
    A stop as the last epoch ends lets the run finish first: `summary` is then what `finetune`
    would have returned (else None)."""

    def __init__(self, message, signal_number, run=None, summary=None):
        super().__init__(message)
        self.signal_number = signal_number
        self.run = run
        self.summary = summary

    @property
    def model(self):
        model = self.run / "model.npz" if self.run is not None else None
        return model if model is not None and model.exists() else None
