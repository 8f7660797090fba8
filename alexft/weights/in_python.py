"""The weights tools as Python calls them: the command's own functions, their errors naming the
keywords a caller passes (force=True) instead of the command line's flags (--force)."""
import functools

from ..python_words import said_in_python_words
from . import sources, tools


def _in_python_words(function, keywords):
    @functools.wraps(function)
    def call(*args, **kwargs):
        with said_in_python_words(keywords):
            return function(*args, **kwargs)
    return call


convert_weights = _in_python_words(tools.convert, {"--force": "force=True", "--rename": "renames"})
fetch_weights = _in_python_words(sources.fetch_weights, {"--force": "force=True", "--weights PATH": "weights=PATH"})
