"""``HttpTestServer``: the test double of ``agent.httpclient``, a real loopback server.

It runs ``http.server.ThreadingHTTPServer`` on ``127.0.0.1`` port 0 (optionally over TLS)
in a thread. ``route(path, *replies)`` scripts the answers for a path (the query is not
matched): each request takes the next ``Reply`` and the last one repeats; other paths
get ``default`` (404 unless set). Every request is recorded whole (method, path, query,
headers, body) in ``requests``. A reply can wait (``delay_s``), be held until an event
is set (``hold``), or trickle its answer one byte every ``trickle_s`` (from the status
line, or only the body with ``trickle_body``) for at most ``trickle_for_s`` before
hanging up. Closing the server releases every held request.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Reply:
    """One scripted answer; ``body`` JSON-encoded unless ``bytes`` or ``str``."""

    body: Any = None
    status: int = 200
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    hold: threading.Event | None = None
    trickle_s: float = 0.0
    trickle_body: bool = False
    trickle_for_s: float = 4.0

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode("utf-8")
        return b"" if self.body is None else json.dumps(self.body).encode("utf-8")


@dataclass(frozen=True)
class Recorded:
    """A request the server received; ``headers`` keyed by lower-cased name."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    raw_headers: Message = field(compare=False, repr=False)

    def json(self) -> Any:
        return json.loads(self.body)


class HttpTestServer:
    """A loopback HTTP(S) server answering scripted replies per path (see the module)."""

    def __init__(
        self,
        default: Reply | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        """``tls``: (certificate, key) files to serve https instead of http."""
        self.default = default or Reply({"message": "not found"}, status=404)
        self.requests: list[Recorded] = []
        self.received = threading.Event()  # set on every request, for tests that wait
        self._replies: dict[str, list[Reply]] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self.scheme = "http"
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self._server.server_address[1]}"

    def route(self, path: str, *replies: Reply) -> None:
        """Answer requests for ``path`` with ``replies`` in turn, repeating the last."""
        with self._lock:
            self._replies[path] = list(replies)

    def hits(self, path: str) -> list[Recorded]:
        """The requests received for ``path``."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def close(self) -> None:
        """Stop serving; held and delayed answers are released at once."""
        self._closing.set()
        with self._lock:
            held = [r.hold for queue in self._replies.values() for r in queue if r.hold]
        for event in held:
            event.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> HttpTestServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next(self, path: str) -> Reply:
        with self._lock:
            queue = self._replies.get(path)
            if not queue:
                return self.default
            return queue.pop(0) if len(queue) > 1 else queue[0]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                server._answer(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        return Handler

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        parts = urlsplit(handler.path)
        recorded = Recorded(
            handler.command,
            parts.path,
            parse_qs(parts.query, keep_blank_values=True),
            {k.lower(): v for k, v in handler.headers.items()},
            body,
            handler.headers,
        )
        with self._lock:
            self.requests.append(recorded)
        self.received.set()
        reply = self._next(parts.path)
        if reply.hold is not None:
            reply.hold.wait(10)
        if reply.delay_s:
            self._closing.wait(reply.delay_s)
        data = reply.encoded()
        if reply.trickle_s:
            self._trickle(handler, reply, data)
            return
        try:
            handler.send_response(reply.status)
            handler.send_header("Content-Type", reply.content_type)
            for key, value in reply.headers.items():
                handler.send_header(key, value)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            if handler.command != "HEAD":
                handler.wfile.write(data)
        except OSError:
            pass  # the client gave up (a timeout test)

    def _trickle(self, handler: BaseHTTPRequestHandler, reply: Reply, data: bytes) -> None:
        head = (
            f"HTTP/1.1 {reply.status} OK\r\nContent-Type: {reply.content_type}\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        ).encode("ascii")
        whole = head + data
        start = len(head) if reply.trickle_body else 0
        stop_at = time.monotonic() + reply.trickle_for_s
        handler.close_connection = True
        try:
            handler.wfile.write(whole[:start])
            for i in range(start, len(whole)):
                handler.wfile.write(whole[i : i + 1])
                handler.wfile.flush()
                if self._closing.wait(reply.trickle_s) or time.monotonic() > stop_at:
                    return  # hang up with the answer incomplete
        except OSError:
            pass  # the client gave up


@contextmanager
def http_test_server(default: Reply | None = None) -> Iterator[HttpTestServer]:
    """An ``HttpTestServer`` closed on exit."""
    server = HttpTestServer(default)
    try:
        yield server
    finally:
        server.close()
