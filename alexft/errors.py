"""The errors alexft raises for a user's mistake or a bad file.

Each carries a one-line message that names the file and the cause; the CLI prints
the message alone, without a traceback.
"""


class AlexftError(Exception):
    """Base class: a problem the user can fix, explained in one line.

    Messages often quote a library's own error text, which may span lines (numpy's header
    errors do): the message is folded to one line here, once for every caller.
    """

    def __init__(self, message="", *args):
        super().__init__(" ".join(str(message).split()), *args)


class WeightsError(AlexftError, ValueError):
    """A weights file is missing, unreadable, unsafe or does not fit the network."""


class ImageError(AlexftError, ValueError):
    """An image file cannot be used (missing, empty, not an image, truncated, too large)."""


class TrainingError(AlexftError, RuntimeError):
    """Training cannot go on (diverged, interrupted, an option conflict, a run folder in the way)."""
