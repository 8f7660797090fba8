"""The learning-rate range test: measure which base rate this network and this data can take.

The base rate grows geometrically from START to END over a bounded number of steps, one
training step at each rate, while the loss is recorded (Leslie Smith's range test, as fastai's
`lr_find` runs it). The caller restores the weights and the optimizer afterwards, so the test
leaves no trace in the run.

The rule that picks the rate: smooth the losses (exponential moving average, bias-corrected),
find the edge, the largest rate at which the smoothed loss is still within 5% of its lowest
value, and take a third of it. Past the edge the steps are larger than the loss tolerates;
a third stays clear of it (the 10x of fresh layers is inside the measured rate already, as
the test runs the real optimizer). fastai's "minimum / 10" was tried first and failed where
the curve is flat until it explodes, which is what a fresh fc8 on small features gives: the
minimum is then noise, anywhere on the flat part (1e-8 was picked, and nothing learned).
Measured on cached fc7 features of the digits at feature scales 1/20, 1, 40 and 200 (fc8
only, 30 epochs), edge / 3 was within 1-3 points of the best fixed rate at every scale,
minimum / 10 up to 80 points below it (docs/training.md). Because the scale of the features
enters the gradient squared, a base network whose fc7 activations are 40x larger needs a
rate about 1600x smaller: the test finds that, a fixed recipe cannot.

A shorter test (on images, where a step costs a batch's forward pass) measures the same way in
two parts: LOCATE_STEPS rates across the ten decades find where the raw loss explodes, the
weights are put back, and the remaining steps, 1.26x apart as in the full test, sweep the three
decades or so below that and are read as the full test is. One sweep of 20 steps 3.4x apart had
been read as the full test: its moving average lagged five decades, and momentum builds up
less while the rate grows 3.4x a step, so it chose 0.8-6x the rate the full test chooses on the
same cached features (the digits and six photo classes, features x1, x40, x1/20), and fc8 on
images climbed from a loss of 4 to 40 (docs/training.md).
"""
import math
from dataclasses import dataclass, field

START, END = 1e-8, 100.0  # base rates; ten decades cover feature scales from 1/100 to 100x
STEPS = 100
SMOOTHING = 0.9  # weight of the past in the moving average: about ten steps of memory
EXPLODED = 4.0  # stop once the smoothed loss is this many times its minimum
NEAR_MINIMUM = 1.05  # the edge: the largest rate whose smoothed loss is within 5% of the lowest
SAFETY = 3.0  # the chosen rate is the edge divided by this
# An edge among the first steps (rates up to 2.5e-8, a 100th of what features 100x larger need)
# is noise, not the rate's doing: steps that small move no loss. The loss rose there because it
# could not fall (a model that fits the data already) or the batches scatter (a batch of one).
UNMEASURED_STEPS = 5
UNMEASURED_BELOW = START * (END / START) ** ((UNMEASURED_STEPS - 1) / (STEPS - 1))  # those rates: up to 2.5e-8
LOCATE_STEPS = 10  # a short test's first part: rates 13x apart, each step's own loss watched
SHORT_STEPS = 40  # the fewest a short test takes: LOCATE_STEPS, then 30 steps (three decades) at the full spacing
# So is an edge more than this factor below the rate where the loss exploded: a real curve leaves
# its lowest and explodes within a decade or two; one that wandered above its lowest for three
# decades without exploding had its lowest in a lucky batch.
EDGE_TO_EXPLOSION = 1000.0


class RangeTestError(RuntimeError):
    """The test could not measure anything (the very first loss was not finite)."""


@dataclass
class RangeTest:
    rates: list = field(default_factory=list)
    losses: list = field(default_factory=list)
    smoothed: list = field(default_factory=list)
    chosen: float = None
    edge: float = None  # the largest rate whose smoothed loss is near its lowest
    stopped: str = ""  # why the test ended before the last step, if it did
    located: str = ""  # a short test's first part: where its loss exploded
    exploded_at: float = None  # the rate at which the loss exploded or became non-finite

    @property
    def measured(self):
        return self.unmeasured is None

    @property
    def unmeasured(self):
        """Why the curve said nothing, or None: its edge among the first UNMEASURED_STEPS rates,
        or more than EDGE_TO_EXPLOSION below where the loss exploded."""
        if self.edge is None or self.edge <= UNMEASURED_BELOW:
            return "a rate too small to move the weights, so what it rose by is noise"
        if self.located and self.edge <= self.rates[0]:
            return (f"the first rate measured closely ({self.rates[0]:.1e}), so its edge lies lower, where the "
                    "test did not look closely")
        if self.stopped and self.edge * EDGE_TO_EXPLOSION < self.rates[-1]:
            return (f"over {EDGE_TO_EXPLOSION:g}x below where it exploded ({self.rates[-1]:.1e}), so it gives no edge "
                    "to keep clear of")
        return None

    @property
    def explosion(self):
        """The rate where the loss exploded (a short test's window, else its first part), or None."""
        if self.stopped and self.rates:
            return self.rates[-1]
        return self.exploded_at

    def describe(self):
        return (f"learning-rate range test: {self.located + '; then ' if self.located else ''}"
                f"{len(self.rates)} steps from {self.rates[0]:.1e} to {self.rates[-1]:.1e}"
                f"{' (' + self.stopped + ')' if self.stopped else ''}; the loss stays near its lowest up to {self.edge:.2e}, "
                + (f"chosen base rate {self.chosen:.2e} (--lr {self.chosen:.3g} takes it without the test)"
                   if self.measured else "no rate measured"))


FULL_SPACING = (END / START) ** (1 / (STEPS - 1))  # 1.26: the full test's factor between rates
LOCATE_SPACING = (END / START) ** (1 / (LOCATE_STEPS - 1))  # 12.9


def rates(steps=STEPS, start=START, end=END):
    """`steps` rates from `start` to `end`, evenly spaced on a log scale."""
    if steps < 2:
        return [start]
    ratio = (end / start) ** (1 / (steps - 1))
    return [start * ratio**i for i in range(steps)]


def run(step, batches, steps=STEPS, start=START, end=END, restart=None):
    """Call `step(rate, batch)` -> mean loss of the batch for growing rates; return a RangeTest.

    `batches` yields at least `steps` batches (cycle the data if an epoch is shorter). Stops
    early once the loss explodes (non-finite, or EXPLODED times its smoothed minimum). Fewer
    than STEPS steps, with `restart` (puts the weights and the optimizer back as they were):
    a short test, in two parts (the module's docstring).
    """
    if steps >= STEPS or restart is None:
        return _sweep(step, batches, rates(steps, start, end))
    located = _sweep(step, batches, rates(LOCATE_STEPS, start, end), smoothing=0.0)
    restart()
    # A step's loss is measured before its update, so a rate too large shows at the next one: the
    # window ends at the rate before the one whose loss exploded (one step 13x lower).
    top = (located.exploded_at / LOCATE_SPACING if located.exploded_at else end)
    count = max(steps - len(located.rates), 2)
    result = _sweep(step, batches, rates(count, max(start, top / FULL_SPACING ** (count - 1)), top))
    result.exploded_at = result.exploded_at or located.exploded_at  # (a window that stayed below it)
    result.located = (f"{len(located.rates)} steps {LOCATE_SPACING:.0f}x apart from {start:.1e}: "
                      + (located.stopped if located.stopped else f"no explosion up to {end:.1e}"))
    return result


def _sweep(step, batches, sweep_rates, smoothing=SMOOTHING):
    """One sweep over `sweep_rates`; `smoothing` 0 watches each step's own loss."""
    result, average = RangeTest(), 0.0
    for i, (rate, batch) in enumerate(zip(sweep_rates, batches)):
        loss = float(step(rate, batch))
        if not math.isfinite(loss):
            if i == 0:
                raise RangeTestError(f"the loss is {loss} before any learning: the base network or the data "
                                     "give non-finite values")
            result.stopped, result.exploded_at = f"loss {loss} at {rate:.1e}", rate
            break
        average = smoothing * average + (1 - smoothing) * loss
        smoothed = average / (1 - smoothing ** (i + 1))
        result.rates.append(rate)
        result.losses.append(loss)
        result.smoothed.append(smoothed)
        if i > 0 and smoothed > EXPLODED * min(result.smoothed):
            result.stopped, result.exploded_at = f"loss exploded at {rate:.1e}", rate
            break
    result.edge, result.chosen = suggest(result.rates, result.smoothed)
    return result


def fallback_rate(result, default):
    """The rate to use when the test measured none: `default` (Caffe's), or a tenth of the rate
    where the loss exploded when that is lower (a rate a few times below an explosion diverges
    within an epoch or two)."""
    if result.explosion:
        return min(default, result.explosion / 10)
    return default


def suggest(rates, smoothed):
    """(the edge: the largest rate whose smoothed loss is within NEAR_MINIMUM of the lowest,
    the edge / SAFETY)."""
    near = NEAR_MINIMUM * min(smoothed)
    edge = max(rate for rate, loss in zip(rates, smoothed) if loss <= near)
    return edge, edge / SAFETY


def step_count(batches_per_epoch, cached):
    """How many steps the test takes: STEPS on cached features (milliseconds each); on images
    at most one epoch's worth, but at least SHORT_STEPS, enough for a short test's two parts."""
    return STEPS if cached else max(SHORT_STEPS, min(STEPS, batches_per_epoch))
