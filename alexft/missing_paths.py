"""What is wrong with a path the user gave, in words: missing (with the name they likely meant),
a broken symbolic link, or a file where a folder must be, or the other way round."""
import difflib
import os
import stat
import unicodedata
from pathlib import Path

_MOST_NAMES_COMPARED = 20_000  # a folder of 60,000 photos took 3 s to guess in


def path_problem(path, kind="file or folder", missing=None):
    """'no such folder; did you mean ...?', 'broken symbolic link (to x)', 'is a file, not a
    folder', ... for `path` where a `kind` ("file", "folder" or "file or folder") must be; None
    when it is one. `missing`: the words for one not there (default 'no such KIND'). Named pipes
    and devices pass as files: `--list <(...)` gives a pipe."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():
            return f"broken symbolic link (to {os.readlink(path)})"
        return f"{missing or f'no such {kind}'}{near_name_hint(path, kind)}"
    except NotADirectoryError:  # `afile/x`: a part of the path is a file
        blocking = next((part for part in reversed(path.parents) if part.is_file()), None)
        return f"{blocking} is a file, not a folder" if blocking else "a part of the path is a file, not a folder"
    except OSError as error:  # a link that leads back to itself, a name too long, ...
        return (error.strerror or str(error)).lower()
    if stat.S_ISDIR(mode) and kind == "file":
        return "is a folder, not a file"
    if not stat.S_ISDIR(mode) and kind == "folder":
        return "is a file, not a folder"
    return None


def near_name_hint(missing, kind="file or folder"):
    """"; did you mean 'digits'?" for a path typed `digitz`: the one name of that kind beside it
    that is near (the same but for case or Unicode form first), else nothing; no guess when two
    are as near. Only looked at once the path is known to be missing."""
    path = Path(missing)
    try:
        with os.scandir(path.parent) as entries:
            beside = {entry.name: entry for _, entry in zip(range(_MOST_NAMES_COMPARED), entries)}
    except OSError:  # a parent missing too, or one that cannot be listed: no guess
        return ""
    beside = [name for name, entry in beside.items() if name != path.name and _is_kind(entry, kind)]
    meant = _same_but_for_form(path.name, beside) or _nearest(path.name, beside)
    return f"; did you mean {str(path.with_name(meant))!r}?" if meant else ""


def _is_kind(entry, kind):
    try:
        is_folder = entry.is_dir()
    except OSError:
        return False
    return kind == "file or folder" or is_folder == (kind == "folder")


def _same_but_for_form(name, candidates):
    def form(text):
        return unicodedata.normalize("NFC", text).casefold()

    same = [candidate for candidate in candidates if form(candidate) == form(name)]
    return same[0] if len(same) == 1 else None


def _nearest(name, candidates):
    best = difflib.get_close_matches(name, candidates, n=2, cutoff=0.75)
    if len(best) == 2 and _likeness(name, best[0]) == _likeness(name, best[1]):
        return None  # img_50.png: img_050.png or img_500.png? A guess would mislead
    return best[0] if best else None


def _likeness(name, candidate):
    return difflib.SequenceMatcher(None, candidate, name).ratio()  # (as get_close_matches scores: not symmetric)
