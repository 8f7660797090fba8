"""A tiny HTTP server on 127.0.0.1 for download tests; each route serves bytes in one way.

Modes:
- "ok": the bytes, honouring `Range: bytes=N-` with a 206 like a real file server;
- "norange": the bytes, always whole with a 200 (a server without range support);
- "drop": the first request announces everything, sends half and hangs up; later ones are "ok";
- "stall": the first request sends half of what it announces, later ones nothing, and each
  hangs up (never completes, and a retry makes no progress);
- "trickle": every request sends an eighth of the whole file, then hangs up (a flaky link that
  gets there, in eight requests);
- "hang": sends half, then keeps the connection open without sending for a minute;
- "drip": sends a byte every 0.2 s, for as long as the client listens (a very slow server);
- "empty": announces everything, sends nothing and hangs up, every time;
- "loop": redirects (302) to itself.
Every response but "norange"'s carries an ETag of its bytes, and a Range request whose
`If-Range` names another gets the whole file (200), as RFC 9110 has file servers do.
Every request's path and Range header are recorded in `requests` of the yielded object, its
If-Range header in `if_ranges`.
"""
import hashlib
import http.server
import re
import threading
import time
from contextlib import contextmanager


class _Handler(http.server.BaseHTTPRequestHandler):
    routes = {}  # path -> (mode, bytes); set per server
    log = None  # list of (path, range header) shared with the test
    if_ranges = None  # list of If-Range headers (None when absent), one per request

    def do_GET(self):
        mode, body = self.routes.get(self.path, ("missing", b""))
        earlier = sum(1 for path, _ in self.log if path == self.path)
        self.log.append((self.path, self.headers.get("Range")))
        self.if_ranges.append(self.headers.get("If-Range"))
        if mode == "missing":
            self.send_error(404, "Not Found")
            return
        if mode == "loop":
            self.send_response(302)
            self.send_header("Location", self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
        start = self._range_start() if mode != "norange" else None
        if self.headers.get("If-Range") not in (None, etag):  # the file has changed since: all of it
            start = None
        if start is not None and start >= len(body):
            self.send_error(416, "Range Not Satisfiable")
            return
        part = body[start or 0:]
        self.send_response(206 if start is not None else 200)
        if start is not None:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(part)))
        if mode != "norange":
            self.send_header("ETag", etag)
        self.end_headers()
        if mode == "hang":
            self.wfile.write(part[: len(part) // 2])
            self.wfile.flush()
            time.sleep(60)
            return
        if mode == "drip":
            for byte in part:
                try:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                except OSError:  # the client gave up
                    return
                time.sleep(0.2)
            return
        if mode == "empty":
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        if mode == "trickle":
            self.wfile.write(part[: -(-len(body) // 8)])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        if mode == "stall" or (mode == "drop" and earlier == 0):
            self.wfile.write(part[: len(part) // 2] if earlier == 0 or mode == "drop" else b"")
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(part)

    def _range_start(self):
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        return int(match.group(1)) if match else None

    def log_message(self, *args):
        pass


class _Served(str):
    """The base URL (a str) carrying the request log."""

    requests: list
    if_ranges: list
    routes: dict


@contextmanager
def serving(routes):
    """Serve `routes` ({"/path": (mode, bytes)}); yield the base URL (with `.requests`)."""
    log, if_ranges = [], []
    handler = type("Handler", (_Handler,), {"routes": routes, "log": log, "if_ranges": if_ranges})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = _Served(f"http://127.0.0.1:{server.server_address[1]}")
    base.requests, base.if_ranges, base.routes = log, if_ranges, routes  # routes: may be changed while serving
    try:
        yield base
    finally:
        server.shutdown()
        server.server_close()
