"""Which epochs get a line in the log, and what the line says.

Every epoch goes to history.csv and TensorBoard. The log shows every epoch while epochs are
slow, but a run of many quick epochs (200 on the feature cache, 0.1 s each) would bury the
lines that matter under hundreds alike: there it shows about MAX_LINES of them, evenly spaced,
plus any epoch that ends LOG_INTERVAL seconds after the last line, recovered epochs, the
last one and the one a signal stopped the run after (also when the stop came mid-epoch: the
last epoch that ended, if its line was held back, so the log says where the run got).
"""
import math
import time

from .progress import LOG_INTERVAL

MAX_LINES = 20  # epoch lines in a run of quick epochs, the last one and recoveries aside


class EpochLog:
    """Logs the rows of a run of `epochs` epochs through `log`, thinned as the module says."""

    def __init__(self, log, epochs, history_path):
        self.log, self.epochs, self.history_path = log, epochs, history_path
        self.every = max(1, math.ceil(epochs / MAX_LINES))
        self._last_line = time.monotonic()
        self._shown_any = self._said_thinned = False
        self._held = None  # the last row, when its line was thinned out

    def __call__(self, row, stopping=False):
        due = (stopping or not self._shown_any or row["epoch"] % self.every == 0 or row["epoch"] >= self.epochs
               or row.get("note") or time.monotonic() - self._last_line >= LOG_INTERVAL)
        self._held = None if due else row
        if not due:
            if not self._said_thinned:
                self._said_thinned = True
                self.log(f"epochs are quick: from here a line every {self.every} epochs (or {LOG_INTERVAL:.0f} s), "
                         f"every epoch is in {self.history_path}")
            return
        self.log(describe_row(row, self.epochs))
        self._shown_any, self._last_line = True, time.monotonic()

    def stopped(self):
        """The run stops before its last epoch (a stop or an error mid-epoch): the line of the
        last epoch that ended, if it was held back."""
        if self._held is not None:
            self(self._held, stopping=True)


def describe_row(row, epochs):
    text = f"epoch {row['epoch']}/{epochs}: loss {row['train_loss']:.4f}, accuracy {row['train_accuracy']:.3f}"
    if row["val_accuracy"] is not None:
        text += f"; val loss {row['val_loss']:.4f}, val accuracy {row['val_accuracy']:.3f}"
    return text + f" (lr {row['lr']:.3g}, {row['seconds']:.1f} s)"
