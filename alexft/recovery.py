"""When training has gone wrong, and what to do about it.

"Gone wrong" is one of:
- a batch's loss is NaN or infinite, or an epoch leaves non-finite weights;
- the loss runs away within an epoch: the mean of the last WINDOW batch losses exceeds FAR
  times where the epoch started: its first batch's loss (measured before that batch's
  update) or the previous epoch's mean loss, whichever is larger (one small batch alone is
  a noisy reference: a batch of 8 can be 4x below the epoch's mean);
- or the epoch's mean loss exceeds FAR times the previous epochs' (a loss climbing from epoch
  to epoch; its first batch, measured on the weights the previous epoch ended with, is no
  reference then), or for the first epoch its start (which catches a runaway in an epoch of
  fewer than WINDOW batches). "The previous epochs'" is the highest mean of the last
  RECENT_EPOCHS (`epoch_reference`): a few images' epochs scatter (fc7 features 40x larger,
  66 photos: 3.8 then 23.2, 2.4 then 8.2, learning all along), and one low epoch alone made
  the next a runaway, three times, until the run stopped;
- or the weights the epoch ends with have a loss on its last full batch over FAR times the
  epoch's mean: its last updates ran away. Each batch's loss is measured before its update, so
  the batch losses cannot show the last updates; an epoch of one or two batches showed nothing
  until the next, which started from the broken weights and took them as its reference. (A
  short last batch, 2 images after 64, is no measure: its loss scatters far beyond 4x.)
An epoch run again after a recovery starts from a state that may already be worse than the
previous epoch's mean says (the loss was climbing through it): there the first WINDOW
batches set the start too, so that the restored state's own loss is not taken for a runaway
again and again (nor, at the end, its mean). Both references are floored at ln(classes), the loss of a uniform guess, so that a rise from
a loss near zero (0.01 -> 0.05) is not taken for divergence. FAR = 4 is fastai's threshold for
an exploded range test; a healthy run's batch losses scatter well within it.

What to do: restore the last good state (the end of the previous epoch), divide the base
rate by 10, and run the epoch again; at most `max_recoveries` times in a run, then stop.
"""
import math
from collections import deque

FAR = 4.0
WINDOW = 5
DIVISOR = 10.0
RECENT_EPOCHS = 5


def epoch_reference(epoch_losses):
    """The previous epochs' loss an epoch's mean is judged against: the highest of the last
    RECENT_EPOCHS (None before the first)."""
    recent = list(epoch_losses)[-RECENT_EPOCHS:]
    return max(recent) if recent else None


class LossWatch:
    """Watches one epoch's batch losses; `check` returns why they ran away, or None."""

    def __init__(self, num_classes, previous_epoch_loss=None, settle=False):
        self.floor = math.log(max(num_classes, 2))
        self.previous = previous_epoch_loss
        self.settle = settle  # a retried epoch: its first WINDOW batches set the start too
        self.start = None
        self.seen = 0
        self.recent = deque(maxlen=WINDOW)

    def check(self, batch_loss, step):
        if not math.isfinite(batch_loss):
            return f"loss became {batch_loss} at step {step}"
        if self.start is None:
            self.start = max(batch_loss, self.previous or 0.0)
        self.recent.append(batch_loss)
        self.seen += 1
        if self.settle and self.seen == WINDOW:
            self.start = max(self.start, sum(self.recent) / WINDOW)
        limit = FAR * max(self.start, self.floor)
        if len(self.recent) == WINDOW and sum(self.recent) / WINDOW > limit:
            return (f"loss ran away at step {step} (mean of the last {WINDOW} batches {sum(self.recent) / WINDOW:.4g}, "
                    f"over {FAR:g}x the epoch's start {self.start:.4g})")
        return None

    def check_epoch(self, epoch_loss):
        if not math.isfinite(epoch_loss):
            return f"the epoch's loss is {epoch_loss}"
        # Against the previous epoch's mean alone, unless this epoch is a retry: its first batch
        # is measured on the weights the previous epoch ended with, which are already worse
        # when the loss climbs from epoch to epoch (2.3, 9.4, 67, 139, ... went unseen).
        if self.previous is not None and not self.settle:
            start = self.previous
        else:
            start = max(self.start or 0.0, self.previous or 0.0)
        if epoch_loss > FAR * max(start, self.floor):
            return f"the epoch's mean loss {epoch_loss:.4g} ran away (over {FAR:g}x its start {start:.4g})"
        return None

    def check_end(self, end_loss, epoch_loss):
        """`end_loss`: the loss of the epoch's final weights on its last full batch (no dropout)."""
        if not math.isfinite(end_loss):
            return f"the loss of the epoch's final weights is {end_loss}"
        if end_loss > FAR * max(epoch_loss, self.floor):
            return (f"the epoch's last updates ran away (its final weights' loss on its last full batch {end_loss:.2g}, over "
                    f"{FAR:g}x the epoch's mean {epoch_loss:.2g})")
        return None

class Diverged(Exception):
    """Raised inside an epoch to ask for a recovery; carries the reason."""


def next_rate(rate, recoveries, max_recoveries):
    """The base rate after one more recovery, or None when no recovery is left."""
    if recoveries >= max_recoveries:
        return None
    return rate / DIVISOR
