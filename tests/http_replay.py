"""A real HTTP server on loopback that replays recorded-style answers, for provider tests.

``ReplayServer`` runs ``http.server.ThreadingHTTPServer`` on ``127.0.0.1`` port 0 in a
thread. ``route(path, *replies)`` queues the answers for a path (the query is ignored
for matching): each request takes the next ``Reply``; the last one repeats. Every request
is recorded (method, path, query, headers) in ``requests``. A reply can sleep (``delay_s``)
or hold the request until a ``threading.Event`` is set (``hold``), or trickle its answer
one byte every ``trickle_s`` (from the status line, or from the body with
``trickle_body``) for at most ``trickle_for_s`` before hanging up; closing the server
releases everything it holds. Unrouted paths answer 404.

``fixture(name)`` loads ``tests/fixtures/grid/NAME`` (JSON), shaped like the real APIs'
documented answers.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

FIXTURES = Path(__file__).parent / "fixtures" / "grid"


def fixture(name: str) -> Any:
    """A recorded-style answer from ``tests/fixtures/grid``."""
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@dataclass
class Reply:
    """One answer: a JSON-able ``body`` (``bytes``/``str`` are sent as they are)."""

    body: Any = None
    status: int = 200
    content_type: str = "application/json"
    delay_s: float = 0.0
    hold: threading.Event | None = None
    trickle_s: float = 0.0
    trickle_body: bool = False
    trickle_for_s: float = 4.0


@dataclass(frozen=True)
class Recorded:
    """A request the server received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased


@dataclass
class _Routes:
    replies: dict[str, list[Reply]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next(self, path: str) -> Reply | None:
        with self.lock:
            queue = self.replies.get(path)
            if not queue:
                return None
            return queue.pop(0) if len(queue) > 1 else queue[0]


class ReplayServer:
    """A loopback HTTP server answering queued replies per path (see the module)."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.received = threading.Event()  # set on every request, for tests that wait
        self._routes = _Routes()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def route(self, path: str, *replies: Reply) -> None:
        """Answer requests for ``path`` with ``replies`` in turn, repeating the last."""
        with self._routes.lock:
            self._routes.replies[path] = list(replies)

    def hits(self, path: str) -> list[Recorded]:
        """The requests received for ``path``."""
        return [r for r in self.requests if r.path == path]

    def close(self) -> None:
        self._closing.set()
        for queue in self._routes.replies.values():
            for reply in queue:
                if reply.hold is not None:
                    reply.hold.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._answer(self)

            def do_POST(self) -> None:
                server._answer(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        return Handler

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        self.requests.append(
            Recorded(
                handler.command,
                parts.path,
                parse_qs(parts.query),
                {k.lower(): v for k, v in handler.headers.items()},
            )
        )
        self.received.set()
        reply = self._routes.next(parts.path) or Reply({"message": "not found"}, status=404)
        if reply.hold is not None:
            reply.hold.wait(10)
        if reply.delay_s:
            self._closing.wait(reply.delay_s)
        if isinstance(reply.body, bytes):
            data = reply.body
        elif isinstance(reply.body, str):
            data = reply.body.encode("utf-8")
        else:
            data = json.dumps(reply.body).encode("utf-8")
        if reply.trickle_s:
            self._trickle(handler, reply, data)
            return
        try:
            handler.send_response(reply.status)
            handler.send_header("Content-Type", reply.content_type)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
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
def replay_server() -> Iterator[ReplayServer]:
    """A ``ReplayServer`` closed on exit."""
    server = ReplayServer()
    try:
        yield server
    finally:
        server.close()
