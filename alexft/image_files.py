"""Reading an image file's bytes without trusting the file: a regular file up to the size no
image within the pixel limit needs, and a large one only if its first bytes look like an image;
a named pipe or a device (which may never end: /dev/zero filled 24 GB) as standard input is
read, up to its limit. No TensorFlow here.
"""
import io
import os
import select
import stat
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .errors import WARNING_FILTERS, ImageError
from .image_sources import MAX_IMAGE_BYTES

# Images whose header declares more pixels than MAX_PIXELS are refused before decoding (in
# preprocess): a 30000x30000 PNG can be under 1 MB on disk and 2.7 GB decoded. The figure is
# Pillow's decompression-bomb limit; photos up to ~179 megapixels pass. MAX_FILE_BYTES is the
# most a file within it can take: 16-bit RGBA, uncompressed (TIFF, PNG at level 0), with room
# for its metadata.
MAX_PIXELS = 2 * 89_478_485
MAX_FILE_BYTES = MAX_PIXELS * 8 + (64 << 20)

# A file larger than this is read whole only if its first SNIFF_BYTES are taken for an image:
# a stray 1 GB file in a folder of photos costs a read of 64 KiB, not a gigabyte of memory.
LARGE_FILE_BYTES = 32 << 20
PIPE_WAIT_SECONDS = 5.0
SNIFF_BYTES = 64 << 10

# The first bytes of the formats OpenCV decodes: a file that starts so but that Pillow cannot
# make out is a damaged image of that format, not "not an image".
SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
)

_STREAMS = (
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def signature_format(data):
    """The format a file's first bytes announce, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((name for start, name in SIGNATURES if data.startswith(start)), None)


def read_file(path):
    """A file's bytes; ImageError naming the path and the cause when it cannot be read, is too
    large for an image, or (large) does not start as one. A named pipe (a shell's `<(...)`) or a
    device is read as standard input is, up to its limit."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise ImageError(f"{path}: is a folder, not an image")
        if stat.S_ISSOCK(mode):
            raise ImageError(f"{path}: is a socket, not an image")
        # Not blocking while opening: a named pipe nothing writes to would hold the open for ever.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with open(descriptor, "rb", buffering=0) as handle:
            status = os.fstat(descriptor)
            if stat.S_ISREG(status.st_mode):
                return _file_read(handle, status.st_size, path)
            kind = _stream_kind(status.st_mode)
            if kind == "a named pipe" and not _written_to_within(descriptor, PIPE_WAIT_SECONDS):
                raise ImageError(f"{path}: a named pipe nothing wrote to within {PIPE_WAIT_SECONDS:g} s")
            os.set_blocking(descriptor, True)  # read to its writer's end
            return _stream_read(handle, path, kind)
    except FileNotFoundError:
        if path.is_symlink():
            raise ImageError(f"{path}: broken symbolic link (to {os.readlink(path)})") from None
        raise ImageError(f"{path}: file not found") from None
    except OSError as error:
        raise ImageError(f"{path}: cannot read: {error.strerror or error}") from None


def _written_to_within(descriptor, seconds):
    """Whether a writer wrote to the pipe (or came and went) within `seconds`: a reader started
    before its writer (`mkfifo p; alexft classify p & cat photo.jpg > p`) waits for it, not for
    ever. (Linux reports no hang-up for a pipe no writer has opened yet.)"""
    poller = select.poll()
    poller.register(descriptor, select.POLLIN | select.POLLHUP)
    return bool(poller.poll(seconds * 1000))


def _stream_kind(mode):
    return next((name for test, name in _STREAMS if test(mode)), "not a regular file")


def _stream_read(handle, path, kind):
    data = _read_at_most(handle, MAX_IMAGE_BYTES + 1)
    if not data:
        raise ImageError(f"{path}: {kind} with nothing to read")
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(f"{path}: {kind} giving more than the {MAX_IMAGE_BYTES:,}-byte limit on streams")
    return data


def _read_at_most(handle, limit, start=b""):
    chunks, kept = [start], len(start)
    while kept < limit and (chunk := handle.read(min(16 << 20, limit - kept))):
        chunks.append(chunk)
        kept += len(chunk)
    return b"".join(chunks)


def _file_read(handle, size, path):
    if size > MAX_FILE_BYTES:
        raise ImageError(f"{path}: {size:,} bytes, more than an image within the pixel limit takes "
                         f"({MAX_FILE_BYTES:,})")
    start = handle.read(SNIFF_BYTES) if size > LARGE_FILE_BYTES else b""
    if start and not _may_be_an_image(start):
        raise ImageError(f"{path}: not an image ({size:,} bytes, starting with {start[:8]!r})")
    data = _read_at_most(handle, size + 1, start)  # (a read of its size: no 16 MiB buffer for a photo)
    if len(data) > size:  # grown since it was measured
        data = _read_at_most(handle, MAX_FILE_BYTES + 1, data)
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"{path}: more than the {MAX_FILE_BYTES:,} bytes an image within the pixel limit takes")
    return data


def _may_be_an_image(start):
    """False only when no image format recognises `start`, a large file's first bytes."""
    if signature_format(start):
        return True
    try:
        with WARNING_FILTERS, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Image.open(io.BytesIO(start)).close()
    except UnidentifiedImageError:
        return False
    except Exception:  # noqa: BLE001 - a header cut by the sample: let the whole file decide
        return True
    return True
