"""Small helpers for streaming work in order with bounded memory."""
import collections
import os
from concurrent.futures import ThreadPoolExecutor

from . import interrupts


def map_ahead(function, items, workers=None, ahead=64):
    """Like map(), on a thread pool, with at most `ahead` results in flight.

    Results come back in the order of `items`; decoding images this way overlaps with the
    network's compute (OpenCV and TensorFlow release the GIL) without reading a whole folder.
    """
    workers = workers or min(8, os.cpu_count() or 1)
    pool, finished = ThreadPoolExecutor(workers), False
    try:
        pending = collections.deque()
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
        finished = True
    finally:
        # Stopped (Ctrl-C, an error, the caller gone): work not started is dropped, and a worker
        # blocked reading a pipe or a stalled network share is not waited for.
        pool.shutdown(wait=finished, cancel_futures=not finished)


def chunks(iterable, size):
    """Lists of `size` consecutive items (the last may be shorter). A batch loop's safe point:
    a Ctrl-C or SIGTERM whose exception was swallowed stops it here (`interrupts`)."""
    chunk = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == size:
            interrupts.raise_if_pending()
            yield chunk
            chunk = []
    if chunk:
        interrupts.raise_if_pending()
        yield chunk


def shard(items, index, count):
    """The `index`-th of `count` contiguous, near-equal blocks of `items` (0 <= index < count).

    Deterministic for the same items, so N processes given the same inputs cover them exactly
    once, and their outputs concatenated in shard order equal one process's output.
    """
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: expected 0 <= index < count")
    items = list(items)
    return items[index * len(items) // count:(index + 1) * len(items) // count]
