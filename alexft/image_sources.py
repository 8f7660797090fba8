"""Images that are not files: standard input (`-`) and http(s) URLs, read like files.

Each is an object with `read_bytes()` (raising ImageError that names it) and `str()` (the
name results are reported under), so the prediction pipeline takes them beside Paths.
URLs are fetched when the pipeline reads them, on its decoding threads, with a size cap and
a timeout. No TensorFlow here.
"""
import http.client
import sys
import time
import urllib.error
import urllib.request

from .errors import ImageError
from .urls import as_sent

MAX_IMAGE_BYTES = 50 << 20  # far above any photo; a body that keeps coming is not one
TIMEOUT_SECONDS = 30
STDIN = "-"


def is_url(text):
    return str(text).lower().startswith(("http://", "https://"))


class UrlImage:
    """An image at an http(s) URL."""

    def __init__(self, url, max_bytes=MAX_IMAGE_BYTES, timeout=TIMEOUT_SECONDS):
        self.url, self.max_bytes, self.timeout = str(url), max_bytes, timeout

    def __str__(self):
        return self.url

    def __repr__(self):
        return f"UrlImage({self.url!r})"

    def read_bytes(self):
        try:
            request = urllib.request.Request(as_sent(self.url), headers={"User-Agent": "alexft"})
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                kind = response.headers.get_content_type()
                if kind in ("text/html", "application/xhtml+xml"):
                    raise ImageError(f"{self.url}: the server sent a web page ({kind}), not an image")
                length = response.headers.get("Content-Length")
                if length and length.isdigit() and int(length) > self.max_bytes:
                    raise ImageError(f"{self.url}: {int(length):,} bytes, over the {self.max_bytes:,}-byte limit")
                data = self._body(response, deadline=time.monotonic() + self.timeout)
        except ImageError:
            raise
        except urllib.error.HTTPError as error:
            raise ImageError(f"{self.url}: HTTP {error.code} {error.reason}") from None
        except urllib.error.URLError as error:
            raise ImageError(f"{self.url}: cannot fetch: {getattr(error.reason, 'strerror', None) or error.reason}") from None
        except http.client.InvalidURL as error:
            raise ImageError(f"{self.url}: not a valid URL ({error})") from None
        except http.client.HTTPException as error:  # the server broke off or spoke no HTTP
            raise ImageError(f"{self.url}: cannot fetch: {type(error).__name__} {error}".rstrip()) from None
        except (TimeoutError, OSError) as error:
            raise ImageError(f"{self.url}: cannot fetch: {error.strerror or error}") from None
        except ValueError as error:  # urllib's word for a malformed URL
            raise ImageError(f"{self.url}: not a valid URL ({error})") from None
        if len(data) > self.max_bytes:
            raise ImageError(f"{self.url}: more than the {self.max_bytes:,}-byte limit")
        return data

    def _body(self, response, deadline):
        """The body, read in pieces: `timeout` bounds the whole of it, not each wait for a byte
        (a server sending one every few seconds had held the command for ever). The connection
        and headers before it are bounded per wait only, as urllib does."""
        sock = getattr(getattr(response.fp, "raw", None), "_sock", None)  # to wait no longer than the time left
        pieces, size = [], 0
        while size <= self.max_bytes:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ImageError(f"{self.url}: no complete answer within {self.timeout:g} s "
                                 f"({size:,} bytes came); the server is too slow")
            if sock is not None:
                sock.settimeout(left)
            try:
                piece = response.read1(1 << 16)
            except TimeoutError:  # the time left ran out waiting: said above
                continue
            if not piece:
                break
            pieces.append(piece)
            size += len(piece)
        return b"".join(pieces)


class UnreadableFolder:
    """A folder below the inputs that could not be listed (no read or search permission): an
    input that fails when read, so that it is named and counted as one that could not be used
    (exit status 1, a --json record), not left out with a warning."""

    def __init__(self, path):
        self.path = path

    def __str__(self):
        return str(self.path)

    def __repr__(self):
        return f"UnreadableFolder({str(self.path)!r})"

    def read_bytes(self):
        raise ImageError(f"{self.path}: cannot read this folder (permission denied); its images are left out")


class StdinImage:
    """One image read from standard input (read once, when first asked)."""

    def __init__(self, stream=None, max_bytes=MAX_IMAGE_BYTES):
        self.stream, self.max_bytes, self._data = stream, max_bytes, None

    def __str__(self):
        return STDIN

    def __repr__(self):
        return "StdinImage()"

    def read_bytes(self):
        if self._data is None:
            stream = self.stream or sys.stdin.buffer
            self._data = stream.read(self.max_bytes + 1)
        if len(self._data) > self.max_bytes:
            raise ImageError(f"{STDIN}: more than the {self.max_bytes:,}-byte limit on standard input")
        if not self._data:
            raise ImageError(f"{STDIN}: standard input is empty")
        return self._data


def image_source(text):
    """A Path, UrlImage or StdinImage for one command-line input."""
    from pathlib import Path

    if text == STDIN:
        return StdinImage()
    return UrlImage(text) if is_url(text) else Path(text)
