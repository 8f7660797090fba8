"""Progress bars on stderr, one policy for every long task."""
from tqdm import tqdm


def progress_bar(total, progress=None, minimum=0, **kwargs):
    """A tqdm bar on stderr (rate and ETA included).

    `progress`: True shows it, False hides it, None shows it only on a terminal and only
    when `total` exceeds `minimum` (a bar for a handful of items is noise).
    """
    if progress is None:
        disable = True if total is not None and total <= minimum else None  # None: tty only
    else:
        disable = not progress
    return tqdm(total=total, disable=disable, dynamic_ncols=True, **kwargs)
