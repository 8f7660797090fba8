"""Progress on stderr, one policy for every long task: a bar on a terminal, periodic lines
when stderr is a file or a pipe (Keras' verbose=2 manner), so a log shows the run is alive."""
import contextlib
import os
import sys
import threading
import time

from tqdm import tqdm

LOG_INTERVAL = 10.0  # seconds between lines when stderr is not a terminal
REDRAW_INTERVAL = 1.0  # seconds between redraws of a terminal bar whose count stands still
LINE_FORMAT = "{desc}{n_fmt}/{total_fmt} ({percentage:.0f}%) [{elapsed}<{remaining}, {rate_fmt}]"
ENDED_EARLY_FORMAT = "{desc}{n_fmt}/{total_fmt} ({percentage:.0f}%) [{elapsed}, {rate_fmt}]"  # no time left to guess


class _Heartbeat:
    """Redraws a bar every `interval` seconds from a daemon thread until stopped, so that the
    elapsed time moves, and a log line still comes, while one slow item holds the count still
    (the first batch, which builds the model's graph; a slow disk; a machine under load)."""

    def __init__(self, bar, interval):
        self._stopped = threading.Event()
        threading.Thread(target=self._beat, args=(bar, interval), daemon=True, name="alexft-progress").start()

    def _beat(self, bar, interval):
        while not self._stopped.wait(interval):
            bar.refresh()

    def stop(self):
        self._stopped.set()


# What a bar's label must leave room for on a terminal line: " 16%|██▏ | 32/198 [00:07<00:30, 4.30img/s]"
METER_WIDTH = 46


class _Bar(tqdm):
    """tqdm's bar on a terminal, redrawn every REDRAW_INTERVAL seconds even when no item ends."""

    # None until tqdm's own start-up is done: a Ctrl-C during its first draw leaves a half-made
    # bar, which tqdm closes when it is collected, and that close must not raise.
    _heartbeat = None

    def __init__(self, *args, **kwargs):
        columns = _columns(kwargs.get("file")) or kwargs.get("ncols")
        desc = kwargs.get("desc") or ""
        if columns and len(desc) + 2 + METER_WIDTH > columns:  # a long label left a 1-column bar, its ETA cut off
            kwargs["desc"] = _shortened(desc, max(columns - METER_WIDTH - 2, 8))
        super().__init__(*args, **kwargs)
        self._heartbeat = _Heartbeat(self, REDRAW_INTERVAL)

    def close(self):
        if self._heartbeat:
            self._heartbeat.stop()
        super().close()


def _shortened(label, width):
    """`label` in `width` characters: first without its closing "(...)" aside, then cut at a word
    ("(11 of 2…" read as a wrong count)."""
    if len(label) <= width:
        return label
    if label.endswith(")") and " (" in label:
        return _shortened(label[: label.rindex(" (")], width)
    cut = label[: width - 1]
    return (cut[: cut.rindex(" ")] if " " in cut else cut) + "…"


class _LogLines(tqdm):
    """tqdm's counts, rate and ETA as whole lines, one every LOG_INTERVAL seconds while the task
    runs (also when the count stands still), and a last line when the task ends; a task shorter
    than the interval prints nothing."""

    _heartbeat = None  # as _Bar's

    def __init__(self, *args, **kwargs):
        self._last_line = time.monotonic()
        self._lines, self._shown = 0, None
        super().__init__(*args, mininterval=LOG_INTERVAL, maxinterval=LOG_INTERVAL, **kwargs)
        self._heartbeat = _Heartbeat(self, LOG_INTERVAL)

    def display(self, msg=None, pos=None):
        now = time.monotonic()
        finished = self.disable or (self.total is not None and self.n >= self.total)
        if not (finished and self._lines) and now - self._last_line < LOG_INTERVAL:
            return True
        if finished and self._shown == self.n:
            return True
        ended_early = self._last_line == float("-inf") and self.total is not None and self.n < self.total
        values = dict(self.format_dict, bar_format=ENDED_EARLY_FORMAT if ended_early else LINE_FORMAT)
        values["prefix"] = f"{values['prefix']}: " if values.get("prefix") else ""
        self.fp.write(f"alexft: {self.format_meter(**values)}\n")
        self.fp.flush()
        self._last_line, self._lines, self._shown = now, self._lines + 1, self.n
        return True

    def close(self):
        if self._heartbeat:
            self._heartbeat.stop()
        if not self.disable and self._lines and self._shown != self.n:  # (a line that says it already: not again)
            self._last_line = float("-inf")
            self.display()  # the last line: where it ended
            self._lines = 0
        self.disable = True
        super().close()


def progress_bar(total, progress=None, minimum=0, stream=None, **kwargs):
    """A tqdm bar on stderr (rate and ETA included).

    `progress`: True shows it, False hides it, None shows it on a terminal, or as a line
    every LOG_INTERVAL seconds when stderr is a file or pipe, and only when `total` exceeds
    `minimum` (a bar for a handful of items is noise). `stream`: stderr's stand-in while
    descriptor 2 is held back (quiet.stderr_held_back).
    """
    stream = stream or sys.stderr
    if stream is None or progress is False or (progress is None and total is not None and total <= minimum):
        return tqdm(total=total, disable=True, **kwargs)
    if progress is None and not _is_terminal(stream):
        return _LogLines(total=total, file=stream, **kwargs)
    if _columns(stream) == 0:  # a terminal that reports no size (some containers, editors): tqdm would draw nothing
        return _Bar(total=total, ncols=80, nrows=24, file=stream, **kwargs)
    return _Bar(total=total, dynamic_ncols=True, file=stream, **kwargs)


@contextlib.contextmanager
def beside_bars(stream):
    """Wrap a print to `stream` made while a bar may be drawn: when both are on a terminal, the
    bars are cleared first and drawn again after, so no line lands in the middle of a bar."""
    if _is_terminal(stream) and _is_terminal(sys.stderr):
        with tqdm.external_write_mode(file=sys.stderr):
            yield
    else:
        yield


def _columns(stream):
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return None


def _is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
