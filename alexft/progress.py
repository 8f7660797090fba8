"""Progress on stderr, one policy for every long task: a bar on a terminal, periodic lines
when stderr is a file or a pipe (Keras' verbose=2 manner), so a log shows the run is alive."""
import sys
import time

from tqdm import tqdm

LOG_INTERVAL = 10.0  # seconds between lines when stderr is not a terminal
LINE_FORMAT = "{desc}{n_fmt}/{total_fmt} ({percentage:.0f}%) [{elapsed}<{remaining}, {rate_fmt}]"


class _LogLines(tqdm):
    """tqdm's counts, rate and ETA as whole lines, at most one every LOG_INTERVAL seconds, and
    a last line when the task ends; a task shorter than the interval prints nothing."""

    def __init__(self, *args, **kwargs):
        self._last_line = time.monotonic()
        self._lines, self._shown = 0, None
        super().__init__(*args, mininterval=LOG_INTERVAL, maxinterval=LOG_INTERVAL, **kwargs)

    def display(self, msg=None, pos=None):
        now = time.monotonic()
        finished = self.disable or (self.total is not None and self.n >= self.total)
        if not (finished and self._lines) and now - self._last_line < LOG_INTERVAL:
            return True
        if self._shown == self.n:
            return True
        values = dict(self.format_dict, bar_format=LINE_FORMAT)
        values["prefix"] = f"{values['prefix']}: " if values.get("prefix") else ""
        self.fp.write(f"alexft: {self.format_meter(**values)}\n")
        self.fp.flush()
        self._last_line, self._lines, self._shown = now, self._lines + 1, self.n
        return True

    def close(self):
        if not self.disable and self._lines:
            self._last_line = float("-inf")
            self.display()  # the last line: where it ended
            self._lines = 0
        self.disable = True
        super().close()


def progress_bar(total, progress=None, minimum=0, **kwargs):
    """A tqdm bar on stderr (rate and ETA included).

    `progress`: True shows it, False hides it, None shows it on a terminal, or as a line
    every LOG_INTERVAL seconds when stderr is a file or pipe, and only when `total` exceeds
    `minimum` (a bar for a handful of items is noise).
    """
    if progress is False or (progress is None and total is not None and total <= minimum):
        return tqdm(total=total, disable=True, **kwargs)
    if progress is None and not _is_terminal(sys.stderr):
        return _LogLines(total=total, file=sys.stderr, **kwargs)
    return tqdm(total=total, dynamic_ncols=True, file=sys.stderr, **kwargs)


def _is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
