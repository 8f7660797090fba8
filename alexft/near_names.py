"""A guess at the name meant, for a path that does not exist: `digitz` for `digits`."""
import difflib
import os
from pathlib import Path


def near_name_hint(missing):
    """"; did you mean 'digits'?" for a path typed `digitz`: the one name beside it that is near,
    else nothing. Only looked at once the path is known to be missing (a folder can be large)."""
    path = Path(missing)
    try:
        beside = [entry.name for entry in os.scandir(path.parent)]
    except OSError:  # a parent missing too, or one that cannot be listed: no guess
        return ""
    close = difflib.get_close_matches(path.name, beside, n=1, cutoff=0.75)
    return f"; did you mean {str(path.with_name(close[0]))!r}?" if close else ""
