"""Stop requests (Ctrl-C, SIGTERM) remembered, so that none is lost.

Python raises a signal's exception wherever the main thread is, and one that lands in a
finaliser or a weakref callback (TensorFlow runs many) is printed as "Exception ignored" and
dropped: the command would go on as if never stopped. The command line's handlers `note`
every signal here; long loops call `raise_if_pending` between batches, where the stop is
honoured after all. Outside the command line nothing is noted and this costs nothing.
"""
import atexit
import contextlib
import os
import signal
import sys

_noted = []  # signal numbers since the command began


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt: whatever stops cleanly on Ctrl-C
    (scratch files removed, a fresh run folder discarded, the feature store keeping what it
    computed) does so on SIGTERM too. The command then exits 143, not 130."""

    signal_number = signal.SIGTERM


def note(signal_number):
    _noted.append(signal_number)


def clear():
    _noted.clear()


def terminated():
    return signal.SIGTERM in _noted


def pending():
    """Whether a stop was requested since the command began (its exception may be lost)."""
    return bool(_noted)


def raise_if_pending():
    """Raise the exception of a stop request noted earlier (SIGTERM's first): its own may have
    been swallowed where it landed. One that was not swallowed has already ended the work."""
    if terminated():
        raise Terminated
    if _noted:
        raise KeyboardInterrupt


def before_training(signal_number, resume, kept=None):
    """A stop that came before the run folder was touched (the listing, the weights' read,
    TensorFlow's start-up), as the TrainingInterrupted a stop in the epochs raises, saying what
    is on disk: `kept`, the folder a resume left as it was. Without TensorFlow: it may be the
    import that was stopped."""
    from .errors import TrainingInterrupted

    how = "terminated" if signal_number == signal.SIGTERM else "interrupted"
    said = (f"{how} before training resumed; the run folder is as it was" if resume else
            f"{how} before training started; no run folder was kept")
    return TrainingInterrupted(said, signal_number, kept)


def stop_signal():
    """The signal of the stop noted since the command began: SIGTERM's first, as `raise_if_pending`."""
    return signal.SIGTERM if terminated() else signal.SIGINT


def signal_name(number):
    """"Ctrl-C (SIGINT)" for the signal a user sends by hand, else the signal's name."""
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
    return "Ctrl-C (SIGINT)" if name == "SIGINT" else name


def end_uncaught_stops_by_their_signal():
    """Let a script that leaves a TrainingInterrupted uncaught end killed by its signal, as Python
    ends one that leaves Ctrl-C's own KeyboardInterrupt uncaught (a shell's loop of such scripts,
    or make, then stops). Python does that for the exact class only; a subclass ended the process
    with status 1, and the loop went on. Installed once, chained to the hook before it, by the
    call that raises the stop; an interactive interpreter (the REPL, `python -i`) is left alone.
    Python's exit functions run first, then the interpreter's teardown is skipped."""
    if getattr(sys.excepthook, "ends_stops_by_their_signal", False):
        return
    shown = sys.excepthook

    def hook(kind, error, trace):
        shown(kind, error, trace)
        number = getattr(error, "signal_number", None)
        if not isinstance(error, KeyboardInterrupt) or number not in (signal.SIGINT, signal.SIGTERM) \
                or hasattr(sys, "ps1") or sys.flags.interactive:
            return
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        end_by_signal(number)

    hook.ends_stops_by_their_signal = True
    sys.excepthook = hook


def end_by_signal(number):
    """End the process killed by signal `number`, its default action restored: how a shell (and
    make, xargs) learns the process was stopped, and ends its own loop."""
    signal.signal(number, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [number])
    os.kill(os.getpid(), number)
