"""Starting TensorFlow without its C++ start-up chatter on stderr."""
import contextlib
import os
import re
import sys
import tempfile
import threading

from . import interrupts


def import_tensorflow_quietly():
    """Import TensorFlow and probe its devices with file descriptor 2 held back; return `tf`.

    TF 2.21 logs (oneDNN, CUDA probing) before its log level is read, so pointing stderr
    elsewhere for the import and the device probe is the only way to keep a terminal or a
    notebook clean. If that start-up fails, what it printed is shown after all. A user who
    set TF_CPP_MIN_LOG_LEVEL to 0 or 1 (more of TensorFlow's logging) gets it as asked; 2 or 3
    asks for quiet, which TensorFlow's own start-up would not give (its "I0000 ... oneDNN" and
    "E0000 ... cuInit" lines come before it reads the level).
    """
    if "tensorflow" not in sys.modules and not _more_logging_asked():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # (alexft's import hook holds the start-up lines back: tensorflow_started_quietly)

    return tf


def tensorflow_started_quietly(run, module):
    """TensorFlow's first import in a process that imported alexft (`run(module)`, from
    alexft's import hook), with its C++ start-up lines held back and its physical devices
    probed in it, where the CUDA probe's "E0000 ... cuInit" line comes (probing physical
    devices leaves `tf.config.set_visible_devices` and memory growth free to set). Unlike the
    commands, the library leaves TensorFlow's log level as the user set it; a level of 0 or 1
    asks for the lines, and gets them."""
    if _more_logging_asked():
        run(module)
        return
    with stderr_held_back(passed_on=_without_tensorflows_start_up):  # (the process's other lines meanwhile are kept)
        run(module)
        module.config.list_physical_devices()


def _more_logging_asked():
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2").strip() in ("0", "1")


# TensorFlow's C++ log lines ("I0000 00:00:1796453572.719014    3357 port.cc:153] ..."), the line
# absl prints before them, and the second line of the CPU-instructions one, each to its line's end.
# Not only at a line's start: Python writes print()'s text and its newline in two calls on an
# unbuffered stderr, so a C++ line can land between them ("user line 3I0000 ...").
_START_UP_LINE = re.compile(r"(?:[IWEF]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\]|WARNING: All log messages before absl::InitializeLog|"
                            r"To enable the following instructions: )[^\n]*\n?")


def _without_tensorflows_start_up(text):
    return _START_UP_LINE.sub("", text)


def on_descriptor_2(stream):
    try:
        return stream.fileno() == 2
    except (AttributeError, ValueError, OSError):  # (io.UnsupportedOperation is an OSError)
        return False


class _Descriptor2:
    """Who has file descriptor 2 pointed elsewhere. It is the process's, so one redirection at
    a time: a hold-back (seconds, e.g. TensorFlow's start-up) or one decode's capture
    (milliseconds). A decode in another thread waits for a brief hold-back (LiteRT's first
    call) to end; during a long one it is not captured, never made to wait: the thread holding
    back may itself wait for its result (a TF Lite export's calibration)."""

    def __init__(self):
        self.turn = threading.Condition()
        self.capturing = False
        self.holding = 0
        self.brief_holder = None  # the thread holding back briefly
        self.scratch = None  # the capture's file descriptor, made once
        self.read_to = 0  # how much of it has been read

    @contextlib.contextmanager
    def held(self, brief):
        with self.turn:
            self.turn.wait_for(lambda: not self.capturing)
            self.holding += 1
            mine = brief and self.brief_holder is None  # (a nested one leaves it to the outer)
            if mine:
                self.brief_holder = threading.get_ident()
        try:
            yield
        finally:
            with self.turn:
                self.holding -= 1
                if mine:
                    self.brief_holder = None
                self.turn.notify_all()

    def _may_capture(self):
        return not self.capturing and self.brief_holder in (None, threading.get_ident())

    @contextlib.contextmanager
    def captured(self):
        """Yields a list that, after the block, holds what was written on descriptor 2 meanwhile;
        nothing is captured during a hold-back, or without a descriptor 2."""
        with self.turn:
            self.turn.wait_for(self._may_capture)
            # (started without stderr, descriptor 2 may have been given to another file)
            self.capturing = capture = not self.holding and sys.stderr is not None
        if not capture:
            yield []
            return
        try:
            yield from self._capture([])
        finally:
            with self.turn:
                self.capturing = False
                self.turn.notify_all()

    def _capture(self, said):
        try:
            saved = os.dup(2)
        except OSError:  # closed
            yield said
            return
        if self.scratch is None:  # a descriptor kept for the process's life, its file unlinked at once
            self.scratch, name = tempfile.mkstemp(prefix="alexft-decoders-")
            os.unlink(name)
        scratch = self.scratch
        os.dup2(scratch, 2)
        try:
            yield said
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            # Read on from where the last capture stopped, never truncated: another thread's write
            # begun before the dup2 above may land after this read (CI lost one so), and is read,
            # and passed on, with the next capture. The file holds only what was caught: little.
            size = os.fstat(scratch).st_size
            if size > self.read_to:
                said.append(os.pread(scratch, size - self.read_to, self.read_to).decode(errors="replace"))
                self.read_to = size


DESCRIPTOR_2 = _Descriptor2()


def said_on_descriptor_2():
    """A context manager: what C code (an image decoder) writes on descriptor 2 in the block,
    captured in the list it yields; one such block at a time in the process (see _Descriptor2)."""
    return DESCRIPTOR_2.captured()


@contextlib.contextmanager
def stderr_held_back(passed_on=None, brief=False):
    """Run the block with file descriptor 2 pointed at a temporary file (C++ libraries' start-up
    lines, e.g. LiteRT's "Created TensorFlow Lite XNNPACK delegate"); if it raises, what was
    written is shown after all. `passed_on(text)`: what of it is written after all when it
    does not (what the process's other threads wrote meanwhile). Yields a stream to the real
    stderr, for what alexft itself shows meanwhile (a progress bar): sys.stderr itself where it
    is not descriptor 2 (a notebook's, a test runner's), which the block leaves alone. `brief`:
    image decodes on other threads wait for the block to end, so that their decoders' messages
    are said with their file's name, not held back with the rest."""
    if sys.stderr is None:  # started without one (`2>&-`, a daemon): nothing to hold back, and descriptor 2
        yield None          # may since have been given to another file
        return
    with DESCRIPTOR_2.held(brief):
        yield from _held_back(passed_on)


def _held_back(passed_on):
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # closed since
        yield sys.stderr
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        visible = (open(saved, "w", closefd=False, encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                        errors="backslashreplace") if on_descriptor_2(sys.stderr) else sys.stderr)
        try:
            yield visible
        except Exception:  # a failed start-up: what it said may tell why (not so for Ctrl-C or SIGTERM)
            if not interrupts.pending():  # (a stop swallowed inside TensorFlow's import surfaces as another error)
                os.dup2(saved, 2)
                held.seek(0)
                sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            visible.flush()
            os.dup2(saved, 2)
            os.close(saved)
        if passed_on is not None:
            held.seek(0)
            sys.stderr.write(passed_on(held.read().decode(errors="replace")))


# alexft makes each of these functions once per model and traces it once per input signature.
# TensorFlow's retracing detector keys on the Python code object, so the second predictor or
# training run in a process counts as a "retrace" of the first and it warns about a loop that
# does not exist. Only these functions' warnings are dropped; any other function's still show.
OWN_TRACED_FUNCTIONS = ("InferenceFunction._traceable.", "TrainingNetwork.")


class _OwnRetracingFilter:
    def filter(self, record):
        message = record.getMessage()
        return not ("triggered tf.function retracing" in message
                    and any(f"<function {name}" in message for name in OWN_TRACED_FUNCTIONS))


def hide_false_retracing_warnings():
    """Drop TensorFlow's retracing warnings about alexft's per-model functions (idempotent)."""
    import logging

    logger = logging.getLogger("tensorflow")
    if not any(isinstance(item, _OwnRetracingFilter) for item in logger.filters):
        logger.addFilter(_OwnRetracingFilter())
