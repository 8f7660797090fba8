"""Small helpers for streaming work in order with bounded memory."""
import collections
import numbers
import os
import queue
import threading
from concurrent.futures import Future

from . import interrupts


def map_ahead(function, items, workers=None, ahead=64):
    """Like map(), on worker threads, with at most `ahead` results in flight.

    Results come back in the order of `items`; decoding images this way overlaps with the
    network's compute (OpenCV and TensorFlow release the GIL) without reading a whole folder.
    Stopped early (Ctrl-C, an error, the caller gone), work not started is dropped and a
    worker blocked on its input (a pipe, a stalled network share) is left behind: the workers
    are daemon threads, which neither this nor the interpreter's exit waits for (a
    ThreadPoolExecutor's are joined at exit, so a Python process hung there).
    """
    pool = _DaemonPool(function, workers or min(8, os.cpu_count() or 1))
    pending = collections.deque()
    try:
        for item in items:
            pending.append(pool.submit(item))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        pool.close()


class _DaemonPool:
    """Threads that apply one function to submitted items, each answer in a Future."""

    def __init__(self, function, workers):
        self.function, self.tasks = function, queue.SimpleQueue()
        self.threads = [threading.Thread(target=self._work, name=f"alexft-map-{index}", daemon=True)
                        for index in range(workers)]
        for thread in self.threads:
            thread.start()

    def submit(self, item):
        future = Future()
        self.tasks.put((future, item))
        return future

    def close(self):
        """Let the threads end once the work queued before is done or cancelled."""
        for _ in self.threads:
            self.tasks.put(None)

    def _work(self):
        while (task := self.tasks.get()) is not None:
            future, item = task
            if not future.set_running_or_notify_cancel():
                continue  # cancelled: the run stopped before this item's turn
            try:
                future.set_result(self.function(item))
            except BaseException as error:  # (given to the caller, as the executor does)
                future.set_exception(error)


class CountTypeError(TypeError, ValueError):
    """A count given as something other than a whole number ("3", 2.5): a TypeError, as the
    API promises for a wrong type, and a ValueError, as it was (numpy's AxisError is both too)."""


def check_flags(**flags):
    """True-or-False keywords (numpy's bools too): ten_crop="no" is truthy, and was taken as a yes."""
    from .option_rules import Flag, checked

    for name, value in flags.items():
        checked(value, name, Flag())


def check_count(value, name):
    """A count such as a batch size: a whole number of at least 1 (0 or -1 would put a whole
    folder into one batch)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise CountTypeError(f"{name} must be a whole number of at least 1; got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1; got {value!r}")


def chunks(iterable, size):
    """Lists of `size` consecutive items (the last may be shorter). A batch loop's safe point:
    a Ctrl-C or SIGTERM whose exception was swallowed stops it here (`interrupts`)."""
    check_count(size, "batch_size")
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


def input_order(item):
    """The sort key of `--shard`: an input's name as given (a path, a URL), compared part by part
    as pathlib sorts a folder's listing, so one folder's shards keep its order. Not the absolute
    path: machines naming the same relative paths from other working folders agree."""
    return str(item).split(os.sep)


def sorted_shard(items, index, count):
    """Positions in `items` of the `index`-th of `count` shards of them sorted by `input_order`,
    in that order: the same part whatever order the items came in."""
    order = sorted(range(len(items)), key=lambda position: input_order(items[position]))
    return shard(order, index, count)
