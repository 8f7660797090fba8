"""Test data built from the specification: weights in the canonical layout, real photos."""
import contextlib
import functools
import os
import shutil
import subprocess
import tempfile
import warnings

from alexft import demo

# Real images need no independence from alexft: the same helpers serve the notebooks.
from alexft.demo import sample_photos as photo_paths  # noqa: F401
from alexft.demo import write_digits as write_digits_folder  # noqa: F401

# Shapes written out from shared/docs/BVLC_ALEXNET.md, not taken from alexft.
CANONICAL_SHAPES = {
    "conv1": ((11, 11, 3, 96), (96,)),
    "conv2": ((5, 5, 48, 256), (256,)),
    "conv3": ((3, 3, 256, 384), (384,)),
    "conv4": ((3, 3, 192, 384), (384,)),
    "conv5": ((3, 3, 192, 256), (256,)),
    "fc6": ((9216, 4096), (4096,)),
    "fc7": ((4096, 4096), (4096,)),
    "fc8": ((4096, 1000), (1000,)),
}


def random_params(seed=0, num_classes=1000):
    """Random weights (alexft.demo's scaling) in the layout of bvlc_alexnet.npy, from the shapes above."""
    shapes = dict(CANONICAL_SHAPES, fc8=((4096, num_classes), (num_classes,)))
    return demo.random_params(shapes, seed)


def as_at_a_terminal():
    """Popen's `preexec_fn` for a child that must see Ctrl-C: SIGINT back to its default. A suite
    started in the background (`nohup`, `&`) has SIGINT ignored, a child inherits that, and
    Python then installs no KeyboardInterrupt handler."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stopped_by(signal_number):
    """The status of an alexft process stopped by `signal_number`, as Popen reports it: the command
    says so, then ends killed by that signal (a shell shows 130 or 143, and stops its loop)."""
    return -signal_number


@contextlib.contextmanager
def alexft_notes():
    """The AlexftWarnings said inside the block, as their messages (a list filled at its end)."""
    from alexft.errors import AlexftWarning

    said = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AlexftWarning)
        yield said
    said.extend(str(warning.message) for warning in caught if issubclass(warning.category, AlexftWarning))


@functools.cache
def mount_namespace():
    """The command prefix under which a shell may mount a tmpfs of its own (root: a mount namespace;
    others: also a user namespace, where the kernel allows them), or None."""
    if not shutil.which("unshare"):
        return None
    target = tempfile.mkdtemp()
    try:
        for prefix in (["unshare", "-m"], ["unshare", "-U", "-r", "-m"]):
            tried = subprocess.run([*prefix, "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", target], capture_output=True)
            if tried.returncode == 0:
                return prefix
        return None
    finally:
        os.rmdir(target)
