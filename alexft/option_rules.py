"""Rules an option's value is checked by, and the one-line refusal of a value a rule does not take.

A rule has `expected` (what it takes, in words) and `take(value)` (the value as kept, or
TypeError / ValueError). `checked` turns those into the refusal naming the option: an
OptionTypeError for a value of the wrong kind, an OptionsError for one out of range.
"""
import math
import numbers
from dataclasses import dataclass

from .errors import AlexftError


class OptionsError(AlexftError, ValueError):
    """An option has a value fine-tuning cannot use."""


class OptionTypeError(OptionsError, TypeError):
    """An option of the wrong kind (a text where True or False goes, a file name for a function):
    an OptionsError as every option's mistake, and a TypeError as Python's own for a wrong type."""


@dataclass(frozen=True)
class Range:
    """Numbers from `low` to `high` (either end open), said as the command line's ranges say
    theirs; a number's digits ("0.9") are taken, as the counts and shares take theirs. `none`:
    None is taken too (not given: the environment's or the machine's default)."""
    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    whole: bool = False
    unit: str = ""
    none: bool = False
    wrong_type = False  # a mistake is a value out of range: "momentum 1.5: expected ..."

    @property
    def expected(self):
        kind = ("a whole number" if self.whole else "a number") + (f" of {self.unit}" if self.unit else "")
        if self.high < math.inf:
            return f"{kind} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        return f"{kind}, {'above' if self.low_open else 'at least'} {self.low:g}"

    def take(self, value):
        if value is None and self.none:
            return None
        number = (int(value) if self.whole else float(value)) if isinstance(value, str) else value
        if _is_true_or_false(number) or not isinstance(number, numbers.Integral if self.whole else numbers.Real):
            raise TypeError(value)  # True is an int to Python, not a count to the user
        if not self._admits(number):
            raise ValueError(value)
        if self.whole:
            return int(number)
        return number if type(number) in (int, float) else float(number)  # (as given; numpy's are not JSON)

    def _admits(self, number):
        above = number > self.low if self.low_open else number >= self.low
        below = number < self.high if self.high_open else number <= self.high
        return (self.whole or math.isfinite(number)) and above and below


@dataclass(frozen=True)
class Flag:
    """True or False (numpy's too, kept as bool): a text such as "no" is truthy, and taken as
    true it turned on what it names (cache="no" cached). `none`: None too (decided later)."""
    none: bool = False
    wrong_type = True  # a mistake is a value of another kind: "cache is True or False, not str 'no'"

    @property
    def expected(self):
        return "True, False or None" if self.none else "True or False"

    def take(self, value):
        if value is None and self.none:
            return None
        if not _is_true_or_false(value):
            raise TypeError(value)
        return bool(value)


@dataclass(frozen=True)
class OneOf:
    """One of `names`, in any case (as --device is taken)."""
    names: tuple
    wrong_type = False

    @property
    def expected(self):
        return f"{', '.join(self.names[:-1])} or {self.names[-1]}"

    def take(self, value):
        name = value.strip().lower() if isinstance(value, str) else None
        if name not in self.names:
            raise ValueError(value)
        return name


@dataclass(frozen=True)
class Function:
    """Something to call (`what` says with what), or None."""
    what: str
    wrong_type = True

    @property
    def expected(self):
        return f"a function called with {self.what}, or None"

    def take(self, value):
        if value is not None and not callable(value):
            raise TypeError(value)
        return value


def _is_true_or_false(value):
    return isinstance(value, bool) or (type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_"))


def checked(value, name, rule):
    """`value` as `rule` keeps it, or one line naming `name`, the value and what `rule` takes: an
    OptionTypeError for a value of the wrong kind (as resume="no" was refused first), else an
    OptionsError as the counts say theirs."""
    try:
        return rule.take(value)
    except (TypeError, ValueError):
        if rule.wrong_type:
            raise OptionTypeError(f"{name} is {rule.expected}, not {type(value).__name__} {value!r}") from None
        raise OptionsError(f"{name} {value!r}: expected {rule.expected}") from None
