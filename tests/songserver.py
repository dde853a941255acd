"""A local HTTP server for tests that fetch songs: good answers, errors, slowness, drops.

    from songserver import serve, Delay, drop_in_body

    with serve({"/a.mp3": b"ID3...", "/flaky.mp3": [500, b"ok"], "/gone.mp3": 404,
                "/slow.mp3": Delay(2.0, b"late"),
                "/cut.mp3": drop_in_body(b"x" * 100, 10)}) as base:
        fetch(base + "/a.mp3")
        assert base.requests["/flaky.mp3"] == 2

`serve(routes)` runs a `ThreadingHTTPServer` on 127.0.0.1 (a free port) in a daemon thread
and yields its base URL (`http://127.0.0.1:PORT`, a str) which also carries `requests`, a
Counter of requests per path, and `request_headers`, the headers of every request in order
as (path, dict). Leaving the block stops the server: delays and streams still in progress
end early and every handler thread is joined.

A route maps a path (the query string is ignored) to a behaviour:
- bytes: 200 with that body and its Content-Length;
- an int: that status with a short text body (404, 500, ...);
- a list or tuple of behaviours: one per request, in order; the last repeats once they run out;
- `Respond(...)`: status, body, extra headers, a chosen (possibly wrong) Content-Length or
  none, chunked transfer encoding;
- `Delay(seconds, then)`: waits (longer than the client's timeout, say), then behaves as `then`;
- `Drop(raw, reset)`: sends `raw` (some bytes of a response) and closes the connection;
  `drop_in_headers()` and `drop_in_body(body, keep)` build the usual cases;
- `Redirect(location, status)`;
- `Stream(block, count, interval_s, send_length)`: sends `block` `count` times (for ever
  if None) with a pause between: a trickling, long or endless body.
Paths with no route answer 404.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import http.server
import socket
import socketserver
import struct
import sys
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any

_CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


@dataclasses.dataclass(frozen=True)
class Respond:
    """A complete response. `length`: "auto" sends len(body) as Content-Length, an int sends
    that number whatever the body's size (a lying header), None sends no Content-Length (the
    body ends when the connection closes). `chunked` uses chunked transfer encoding instead
    (`chunk_bytes` per chunk)."""

    body: bytes = b""
    status: int = 200
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    length: int | str | None = "auto"
    chunked: bool = False
    chunk_bytes: int = 4096


@dataclasses.dataclass(frozen=True)
class Delay:
    """Waits `seconds` before doing `then` (any behaviour)."""

    seconds: float
    then: Any = b""


@dataclasses.dataclass(frozen=True)
class Drop:
    """Sends `raw` bytes as they are, then closes the connection: with a TCP reset if
    `reset`, else an orderly close (the client sees the stream end early)."""

    raw: bytes = b""
    reset: bool = False


@dataclasses.dataclass(frozen=True)
class Redirect:
    location: str
    status: int = 302


@dataclasses.dataclass(frozen=True)
class Stream:
    """A 200 whose body is `block` repeated `count` times (for ever when None), with
    `interval_s` between blocks. Content-Length is sent when `count` is given and
    `send_length` is true; otherwise the body ends when the connection closes."""

    block: bytes
    count: int | None = None
    interval_s: float = 0.0
    send_length: bool = True


def drop_in_headers() -> Drop:
    """A connection closed in the middle of the status line."""
    return Drop(b"HTTP/1.1 20")


def drop_in_body(body: bytes, keep: int, reset: bool = False) -> Drop:
    """Headers announcing all of `body`, then only its first `keep` bytes, then a close."""
    head = (f"HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode()
    return Drop(head + body[:keep], reset=reset)


class ServerUrl(str):
    """The server's base URL (a str), with what the server saw."""

    requests: collections.Counter
    request_headers: list


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = False  # handler threads are joined on close...
    block_on_close = True

    def __init__(self, routes: Mapping[str, Any]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes = dict(routes)
        self.stop = threading.Event()  # ...after delays and streams end early on this
        self.lock = threading.Lock()
        self.requests: collections.Counter = collections.Counter()
        self.request_headers: list = []

    def server_bind(self):  # as HTTPServer's, without its reverse DNS lookup (getfqdn)
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def next_behaviour(self, path: str, headers: dict) -> Any:
        """Counts the request and returns what to do for it."""
        with self.lock:
            n = self.requests[path]
            self.requests[path] += 1
            self.request_headers.append((path, headers))
        behaviour = self.routes.get(path, 404)
        if isinstance(behaviour, (list, tuple)):
            behaviour = behaviour[min(n, len(behaviour) - 1)]
        return behaviour

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], _CLIENT_GONE):
            super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5  # a client that connects and says nothing does not hold shutdown for long
    server: _Server

    def log_message(self, format, *args):  # quiet
        pass

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        behaviour = self.server.next_behaviour(path, dict(self.headers.items()))
        self.close_connection = True
        try:
            self._behave(behaviour)
        except _CLIENT_GONE:
            pass

    def _behave(self, b: Any) -> None:
        if isinstance(b, (bytes, bytearray)):
            b = Respond(bytes(b))
        elif isinstance(b, int):
            b = Respond(f"{b} from the test server\n".encode(), status=b)
        if isinstance(b, Respond):
            self._respond(b)
        elif isinstance(b, Delay):
            if not self.server.stop.wait(b.seconds):
                self._behave(b.then)
        elif isinstance(b, Drop):
            self._drop(b)
        elif isinstance(b, Redirect):
            self._respond(Respond(b"", status=b.status, headers={"Location": b.location}))
        elif isinstance(b, Stream):
            self._stream(b)
        else:
            raise TypeError(f"songserver: unknown behaviour {b!r}")

    def _head(self, status: int, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "audio/mpeg" if status == 200 else "text/plain")
        self.send_header("Connection", "close")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()

    def _respond(self, r: Respond) -> None:
        headers = dict(r.headers)
        if r.chunked:
            headers["Transfer-Encoding"] = "chunked"
        elif r.length is not None:
            headers["Content-Length"] = str(len(r.body) if r.length == "auto" else r.length)
        self._head(r.status, headers)
        if not r.chunked:
            self.wfile.write(r.body)
            return
        for i in range(0, len(r.body), r.chunk_bytes):
            piece = r.body[i:i + r.chunk_bytes]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")

    def _drop(self, d: Drop) -> None:
        self.wfile.write(d.raw)
        self.wfile.flush()
        if d.reset:  # linger 0: close sends RST instead of FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()
        else:
            self.connection.shutdown(socket.SHUT_RDWR)

    def _stream(self, s: Stream) -> None:
        headers = {}
        if s.count is not None and s.send_length:
            headers["Content-Length"] = str(len(s.block) * s.count)
        self._head(200, headers)
        sent = 0
        while s.count is None or sent < s.count:
            self.wfile.write(s.block)
            self.wfile.flush()
            sent += 1
            pause = self.server.stop.wait(s.interval_s) if s.interval_s else None
            if pause or self.server.stop.is_set():
                return


@contextlib.contextmanager
def serve(routes: Mapping[str, Any]) -> Iterator[ServerUrl]:
    """Serves `routes` on 127.0.0.1 for the duration of the block; yields the base URL."""
    server = _Server(routes)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="songserver", daemon=True)
    thread.start()
    url = ServerUrl(f"http://127.0.0.1:{server.server_address[1]}")
    url.requests = server.requests
    url.request_headers = server.request_headers
    try:
        yield url
    finally:
        server.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
