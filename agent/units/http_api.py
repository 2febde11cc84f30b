"""The agent's local HTTP endpoint, where applications report their functional units.

Routes live in a small table (``LocalApi.add_route``), so later endpoints plug in
without touching the request plumbing. Every answer is JSON, and the server keeps
serving whatever arrives: a failing handler becomes a 500 and is logged once.

Connections are bounded, so no client can take the agent's threads or descriptors:
one thread accepts (listen backlog 1,024); at most ``http.max_connections`` workers
serve a connection each; up to 16 more wait for a worker (no thread, at most 2 s);
beyond that the accept thread answers 503 itself and closes. Each request (request
line, headers and body together) must arrive within ``http.request_timeout_s``; an
idle keep-alive connection is closed at the same deadline. While connections wait, the
request that has been arriving longest (over 1 s) is cut short with 503, so slow
clients cannot starve prompt ones. Open descriptors stay under the cap plus about 40.

Status codes:

- 202 ``{"accepted": N}``: the reports were counted. ``POST /v1/calls`` (remote AI
  calls, see docs/ai-calls.md) answers and refuses exactly like ``/v1/units``.
- 400 the body is not UTF-8 JSON, has the wrong shape, a field has the wrong type, a
  field is missing or unknown, or a count is negative, not finite or too large.
- 401 ``http.token`` is set and the request lacks ``Authorization: Bearer <token>``.
- 404 unknown path; 405 the path exists but not for this method (``Allow`` lists them).
- 408 the request (line, headers or body) did not arrive within
  ``http.request_timeout_s``; 411 a body without ``Content-Length``;
  413 ``Content-Length`` above ``http.max_body_bytes`` (the body is never read);
  415 ``Content-Type`` is not ``application/json``.
- 422 a well-formed report this agent's configuration refuses: unknown app, an app
  without a unit, or the wrong unit for the app.
- 503 with ``Retry-After: 1`` and ``Connection: close``: every worker is busy and the
  wait queue is full, or this slow request made room for a waiting one.

Errors are ``{"error": "...", "field": "count", "index": 3}``: ``field`` when one
field is at fault, ``index`` when the report came in a batch. A rejected request
counts nothing, not even the valid reports of its batch. The bearer token is compared
as bytes: its UTF-8 encoding (so any token works), or its latin-1 one where it has one.
``response_counts`` counts every answer, 503s and 408s sent before a request line was
parsed under method ``"-"``; ``connection_stats`` gives the pool's state and totals.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import io
import ipaddress
import json
import logging
import math
import re
import resource
import selectors
import socket
import socketserver
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, cast

from agent.config import HttpConfig
from agent.remote import calls as remote_calls  # a module: agent.remote imports agent.units
from agent.units.counter import UnitCounter, UnitError, kind_of

log = logging.getLogger("sci_agent.http")

#: Methods whose requests must carry a body with a ``Content-Length``.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
REPORT_FIELDS = ("app", "unit", "count")
BUSY_MESSAGE = "the agent is busy (http.max_connections); retry later"
_DRAIN_LIMIT_BYTES = 1 << 20  # unread body discarded before closing, so the answer arrives
_DRAIN_S = 0.5  # at most this long, in all
_LISTEN_BACKLOG = 1024  # the kernel's accept queue (capped by net.core.somaxconn)
_QUEUE_MAX = 16  # accepted connections waiting for a worker, no thread each
_QUEUE_WAIT_S = 2.0  # then 503
_EVICT_AFTER_S = 1.0  # a request still being read after this may make room for a new one
_IDLE_EXIT_S = 60.0  # an idle worker thread exits
_LINGER_MAX = 16  # rejected connections kept open briefly so the 503 is read, not reset
_LINGER_S = 0.5
_TICK_S = 0.1  # the accept thread's timer, only while connections wait or linger
_ACCEPT_BATCH = 64  # connections accepted per wake-up
_ACCEPT_PAUSE_S = 0.5  # out of descriptors: leave new connections in the backlog this long
_RETRY_AFTER = (("Retry-After", "1"),)
_FD_HEADROOM = 256  # descriptors the rest of the agent may need besides the endpoint
_LENGTH = re.compile(r"[0-9]{1,18}")
_MAX_LOGGED_FAILURES = 100


@dataclass(frozen=True, slots=True)
class Request:
    """One request as a handler sees it; ``body`` is already read within the limits."""

    method: str
    path: str
    query: str
    headers: Message[str, str]
    body: bytes

    def json(self) -> Any:
        """Decode the body as JSON, or raise ``HttpError`` 415/400 naming the cause."""
        ctype = self.headers.get("Content-Type")
        if ctype is None:
            raise HttpError(415, "Content-Type must be application/json (header missing)")
        mime, _, params = ctype.partition(";")
        if mime.strip().lower() != "application/json":
            raise HttpError(415, f"Content-Type must be application/json, got {mime.strip()!r}")
        for param in params.split(";"):
            key, _, value = param.partition("=")
            charset = value.strip().strip('"').lower()
            if key.strip().lower() == "charset" and charset not in ("utf-8", "utf8"):
                raise HttpError(415, f"charset must be utf-8, got {charset!r}")
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HttpError(
                400, f"body is not valid UTF-8: {exc.reason} at byte {exc.start}"
            ) from None
        try:
            return json.loads(text, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            raise HttpError(
                400, f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
        except RecursionError:
            raise HttpError(400, "body is not valid JSON: nested too deeply") from None
        except ValueError as exc:  # NaN/Infinity, or an integer with too many digits
            raise HttpError(400, f"body is not valid JSON: {exc}") from None


@dataclass(frozen=True, slots=True)
class Response:
    """What a handler answers; the server adds ``Content-Length``."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def json_response(
    status: int, payload: object, headers: tuple[tuple[str, str], ...] = ()
) -> Response:
    """A JSON response of ``payload``."""
    body = json.dumps(payload, separators=(",", ":")).encode() + b"\n"
    return Response(status, body, "application/json", headers)


class HttpError(Exception):
    """Raised by handlers (and the plumbing) to answer with a JSON error."""

    def __init__(
        self,
        status: int,
        message: str,
        field: str | None = None,
        *,
        index: int | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.index = index
        self.headers = headers

    def response(self) -> Response:
        payload: dict[str, object] = {"error": self.message}
        if self.field is not None:
            payload["field"] = self.field
        if self.index is not None:
            payload["index"] = self.index
        return json_response(self.status, payload, self.headers)


Handler = Callable[[Request], Response]


@dataclass(frozen=True, slots=True)
class Route:
    handler: Handler
    auth: bool  # requires the bearer token when ``http.token`` is set


class LocalApi:
    """The local HTTP endpoint: ``POST /v1/units`` and ``GET /healthz`` to start with."""

    def __init__(
        self,
        config: HttpConfig,
        counter: UnitCounter,
        calls: remote_calls.CallLedger | None = None,
    ) -> None:
        self.config = config
        self.counter = counter
        self.calls = calls  # remote AI calls (``POST /v1/calls``), when the agent counts them
        self._routes: dict[str, dict[str, Route]] = {}
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._pool: _Pool | None = None  # kept after stop, for its totals
        self._thread: threading.Thread | None = None
        self._failures: set[str] = set()
        self._responses: dict[tuple[str, str, int], int] = {}
        self.add_route("GET", "/healthz", self._healthz, auth=False)
        self.add_route("POST", "/v1/units", self._post_units)
        if calls is not None:
            self.add_route("POST", "/v1/calls", self._post_calls)

    # -- routes -----------------------------------------------------------------

    def add_route(self, method: str, path: str, handler: Handler, *, auth: bool = True) -> None:
        """Serve ``method path`` with ``handler``; a GET route answers HEAD too."""
        method = method.upper()
        if not path.startswith("/"):
            raise ValueError(f"route path must start with '/', got {path!r}")
        with self._lock:
            methods = dict(self._routes.get(path, {}))
            if method in methods:
                raise ValueError(f"route {method} {path} is already defined")
            methods[method] = Route(handler, auth)
            self._routes = {**self._routes, path: methods}

    def match(self, method: str, path: str) -> Route:
        """The route for ``method path``, or ``HttpError`` 404/405."""
        methods = self._routes.get(path)
        if not methods:
            raise HttpError(404, f"no such path: {path[:200]}")
        route = methods.get(method)
        if route is None and method == "HEAD":
            route = methods.get("GET")
        if route is None:
            allowed = sorted(set(methods) | ({"HEAD"} if "GET" in methods else set()))
            raise HttpError(
                405,
                f"method {method} is not allowed on {path}; allowed: {', '.join(allowed)}",
                headers=(("Allow", ", ".join(allowed)),),
            )
        return route

    def authorize(self, headers: Message[str, str]) -> None:
        """Check the bearer token when one is configured, else ``HttpError`` 401."""
        token = self.config.token
        if not token:
            return
        challenge = (("WWW-Authenticate", 'Bearer realm="sci-agent"'),)
        value = headers.get("Authorization")
        if value is None:
            raise HttpError(
                401, "missing 'Authorization: Bearer <token>' header", headers=challenge
            )
        scheme, _, given = value.strip().partition(" ")
        if scheme.lower() != "bearer" or not _token_matches(_header_bytes(given.strip()), token):
            raise HttpError(401, "invalid bearer token", headers=challenge)

    def response_counts(self) -> dict[tuple[str, str, int], int]:
        """Responses sent so far per (method, route path or "other", status)."""
        with self._lock:
            return dict(self._responses)

    def connection_stats(self) -> ConnectionStats:
        """The connection pool now, and its rejections, evictions and timeouts so far."""
        if self._pool is None:
            return ConnectionStats(0, 0, 0, 0, 0, 0)
        return self._pool.stats()

    def warn_once(self, message: str) -> None:
        """Log ``message`` as a warning the first time only."""
        with self._lock:
            first = message not in self._failures and len(self._failures) < _MAX_LOGGED_FAILURES
            if first:
                self._failures.add(message)
        if first:
            log.warning("local API: %s", message)

    def record(self, method: str, path: str, status: int) -> None:
        key = (method, path if path in self._routes else "other", status)
        with self._lock:
            self._responses[key] = self._responses.get(key, 0) + 1

    def handle(self, route: Route, request: Request) -> Response:
        """Run a handler; a bug in it becomes a 500, logged once per distinct error."""
        try:
            return route.handler(request)
        except HttpError:
            raise
        except Exception as exc:
            return self.internal_error(f"{request.method} {request.path}", exc)

    def internal_error(self, where: str, exc: Exception) -> Response:
        """Log a bug once per distinct error (with its traceback) and answer 500."""
        key = f"{where}: {type(exc).__name__}: {exc}"
        with self._lock:
            first = key not in self._failures and len(self._failures) < _MAX_LOGGED_FAILURES
            if first:
                self._failures.add(key)
        if first:
            log.error("request %s failed", key, exc_info=exc)
        else:
            log.debug("request %s failed again", key)
        return json_response(500, {"error": "internal error; see the agent log"})

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        """Bind ``config.listen`` (port 0 picks a free port) and serve in a daemon thread."""
        if self._server is not None:
            return
        listen = self.config.listen
        host, _, port_text = listen.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        try:
            infos = socket.getaddrinfo(
                host or None, int(port_text), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            family, _, _, _, address = infos[0]
            server = _Server(address, self, family)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            message = f"http.listen {listen!r}: cannot listen: {reason}"
            errno = exc.errno if isinstance(exc, OSError) else None
            raise (OSError(errno, message) if errno else OSError(message)) from exc
        self._server, self._pool = server, server.pool
        self._thread = threading.Thread(target=server.serve, name="sci-agent-http", daemon=True)
        self._thread.start()
        bound = str(server.server_address[0])
        log.info("local API listening on %s", self.url)
        _check_fd_limit(self.config.max_connections)
        if not _is_loopback(bound) and not self.config.token:
            log.warning(
                "http.listen %s accepts connections from other hosts and http.token is not set:"
                " anyone who can reach it can report units",
                listen,
            )

    def stop(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.wake()
        if thread is not None:
            thread.join(timeout=5)
        server.server_close()

    @property
    def port(self) -> int:
        """The bound port (the real one when ``listen`` asked for port 0)."""
        if self._server is None:
            raise RuntimeError("LocalApi is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL of the running endpoint, e.g. ``http://127.0.0.1:9475``."""
        if self._server is None:
            raise RuntimeError("LocalApi is not started")
        host = str(self._server.server_address[0])
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    # -- handlers ---------------------------------------------------------------

    def _healthz(self, request: Request) -> Response:
        return json_response(200, {"status": "ok"})

    def _post_units(self, request: Request) -> Response:
        items, batch = _reports(request.json())
        reports = [_report(item, i if batch else None) for i, item in enumerate(items)]
        try:
            self.counter.add_many(reports)
        except UnitError as exc:
            status = 400 if exc.field == "count" else 422
            raise _refused(exc, status, batch) from None
        return json_response(202, {"accepted": len(reports)})

    def _post_calls(self, request: Request) -> Response:
        """``POST /v1/calls``: remote AI calls, checked like units (all or nothing)."""
        if self.calls is None:  # pragma: no cover - the route exists only with a ledger
            raise HttpError(404, "no such path: /v1/calls")
        items, batch = _reports(request.json())
        for i, item in enumerate(items):
            index = i if batch else None
            _shape(item, index, remote_calls.REQUIRED_FIELDS, remote_calls.OPTIONAL_FIELDS)
        try:
            accepted = self.calls.add_many(items)
        except UnitError as exc:
            status = 422 if isinstance(exc, remote_calls.UnknownApp) else 400
            raise _refused(exc, status, batch) from None
        return json_response(202, {"accepted": accepted})


def _reports(payload: object) -> tuple[list[Any], bool]:
    """A body's reports, and whether they came as a batch (an array)."""
    if isinstance(payload, list):
        return payload, True
    if isinstance(payload, dict):
        return [payload], False
    raise HttpError(
        400, f"body must be a JSON object or an array of objects, got {kind_of(payload)}"
    )


def _refused(exc: UnitError, status: int, batch: bool) -> HttpError:
    """A report's value refused: the error names its field (and its index in a batch)."""
    index = exc.index if batch else None
    where = f"item {index}: " if index is not None else ""
    return HttpError(status, where + exc.message, exc.field, index=index)


def _shape(
    item: object, index: int | None, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Check that one report is an object with the ``required`` fields and no unknown one."""
    where = f"item {index}: " if index is not None else ""
    if not isinstance(item, dict):
        raise HttpError(
            400, f"{where}a report must be a JSON object, got {kind_of(item)}", index=index
        )
    for key in required:
        if key not in item:
            raise HttpError(400, f"{where}missing field {key!r}", key, index=index)
    for key in item:
        if key not in required and key not in optional:
            raise HttpError(
                400,
                f"{where}unknown field {key[:64]!r} (expected {', '.join(required + optional)})",
                key[:64],
                index=index,
            )
    return item


def _report(item: object, index: int | None) -> tuple[str, str, Any]:
    """Check the shape of one report; its values are checked by the counter."""
    where = f"item {index}: " if index is not None else ""
    item = _shape(item, index, REPORT_FIELDS)
    for key in ("app", "unit"):
        if not isinstance(item[key], str):
            raise HttpError(
                400, f"{where}{key} must be a string, got {kind_of(item[key])}", key, index=index
            )
    return item["app"], item["unit"], item["count"]


def _header_bytes(text: str) -> bytes:
    """A header value's bytes as they came: http.server decodes headers as latin-1."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:  # not from the wire; can never match
        return b""


def _token_matches(sent: bytes, token: str) -> bool:
    """The token's UTF-8 bytes, or its latin-1 bytes (what ``http.client`` sends for a
    ``str`` header); every comparison runs, in constant time."""
    expected = [token.encode("utf-8")]
    with contextlib.suppress(UnicodeEncodeError):
        expected.append(token.encode("latin-1"))
    results = [hmac.compare_digest(sent, candidate) for candidate in expected]
    return any(results)


def _check_fd_limit(max_connections: int) -> None:
    """Warn when the descriptor limit leaves the endpoint's cap too little headroom."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max_connections + _QUEUE_MAX + _LINGER_MAX + _FD_HEADROOM
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "open-file limit %d is low for http.max_connections = %d (want %d or more);"
            " raise LimitNOFILE or lower http.max_connections",
            soft,
            max_connections,
            needed,
        )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class _Interrupted(Exception):
    """Reading a request stopped: the deadline passed, or the pool evicted the connection."""

    status = 408

    def message(self, timeout_s: float) -> str:
        return f"request not received within {timeout_s:g}s (http.request_timeout_s)"


class _Evicted(_Interrupted):
    status = 503

    def message(self, timeout_s: float) -> str:
        return BUSY_MESSAGE


@dataclass(slots=True, eq=False)
class _Connection:
    """One accepted connection, shared by the accept thread and the worker serving it."""

    sock: socket.socket
    address: Any
    since: float  # when it was queued, then when its current request began (monotonic)
    deadline: float = math.inf  # for reading the current request
    reading: bool = False  # waiting for or reading a request: may be evicted
    evicted: bool = False
    received: int = 0  # bytes of the current request read so far


class _DeadlineReader(io.RawIOBase):
    """The socket's bytes, each read bounded by what is left of the request's deadline."""

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        conn = self._conn
        if conn.evicted:
            raise _Evicted
        left = conn.deadline - time.monotonic()
        if left <= 0:
            raise _Interrupted
        conn.sock.settimeout(left)
        try:
            n = conn.sock.recv_into(buffer)
        except TimeoutError:
            raise _Interrupted from None
        except OSError:
            if conn.evicted:
                raise _Evicted from None
            raise
        if n == 0 and conn.evicted:  # shutdown(SHUT_RD) by the pool
            raise _Evicted
        conn.received += n
        return n


class _Writer(io.BufferedIOBase):
    """Writes whole buffers, each within ``timeout_s``."""

    def __init__(self, sock: socket.socket, timeout_s: float) -> None:
        self._sock = sock
        self._timeout_s = timeout_s

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._sock.settimeout(self._timeout_s)
        self._sock.sendall(data)
        with memoryview(data) as view:
            return view.nbytes


@dataclass(frozen=True, slots=True)
class ConnectionStats:
    """The endpoint's connection pool: now, and totals since start."""

    open: int  # connections being served by a worker
    queued: int  # accepted, waiting for a worker
    workers: int  # worker threads alive (at most ``http.max_connections``)
    rejected_total: int  # answered 503 without a worker: queue full or waited too long
    evicted_total: int  # slow requests closed (503) to make room for a waiting connection
    timed_out_total: int  # requests closed (408) by ``http.request_timeout_s``


class _Pool:
    """At most ``cap`` worker threads, each serving one connection at a time.

    Connections beyond the cap wait in a short queue; while they wait, the connection
    that has been reading its request the longest (over ``_EVICT_AFTER_S``) is closed
    with 503 to make room, so slow clients cannot starve prompt ones. A connection that
    finds the queue full, or waits longer than ``_QUEUE_WAIT_S``, is answered 503 by the
    accept thread. Idle workers exit after ``_IDLE_EXIT_S``.
    """

    def __init__(self, cap: int, serve: Callable[[_Connection], None]) -> None:
        self._cap = cap
        self._serve = serve
        self._cond = threading.Condition()
        self._queue: deque[_Connection] = deque()
        self._busy: set[_Connection] = set()
        self._workers = self._idle = self._evicting = 0
        self._starting = 0  # threads started that have not yet looked at the queue
        self._closing = False
        self.rejected = self.evicted = self.timed_out = 0

    def offer(self, conn: _Connection) -> bool:
        """Queue ``conn`` for a worker; False when the queue is full (answer 503)."""
        with self._cond:
            if self._closing or len(self._queue) - self._idle - self._starting >= _QUEUE_MAX:
                return False
            self._queue.append(conn)
            self._dispatch(time.monotonic())
            return True

    def tick(self) -> list[_Connection]:
        """Evict where it is now possible; return the connections that waited too long."""
        now = time.monotonic()
        expired: list[_Connection] = []
        with self._cond:
            self._dispatch(now)
            while self._queue and now - self._queue[0].since >= _QUEUE_WAIT_S:
                expired.append(self._queue.popleft())
        return expired

    @property
    def waiting(self) -> bool:
        return bool(self._queue)

    def stats(self) -> ConnectionStats:
        with self._cond:
            return ConnectionStats(
                open=len(self._busy),
                queued=len(self._queue),
                workers=self._workers,
                rejected_total=self.rejected,
                evicted_total=self.evicted,
                timed_out_total=self.timed_out,
            )

    def count_rejected(self) -> None:
        with self._cond:
            self.rejected += 1

    def count_timed_out(self) -> None:
        with self._cond:
            self.timed_out += 1

    def close(self) -> list[_Connection]:
        """Stop the workers, interrupt the connections they serve; return the queued ones."""
        with self._cond:
            self._closing = True
            queued = list(self._queue)
            self._queue.clear()
            for conn in self._busy:
                conn.evicted = True
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)
            self._cond.notify_all()
        return queued

    def _dispatch(self, now: float) -> None:
        """Under the lock: wake or start a worker for each queued connection, else evict."""
        unserved = len(self._queue) - self._idle - self._starting - self._evicting
        while unserved > 0 and self._workers < self._cap and self._start_worker():
            unserved -= 1
        while unserved > 0 and self._evict_one(now):
            unserved -= 1
        self._cond.notify(len(self._queue))

    def _start_worker(self) -> bool:
        """Under the lock: one more worker, or False when no thread can be started."""
        thread = threading.Thread(target=self._work, name="sci-agent-http-worker", daemon=True)
        self._workers += 1
        self._starting += 1
        try:
            thread.start()
        except RuntimeError as exc:  # out of memory or threads: the queue waits
            self._workers -= 1
            self._starting -= 1
            log.warning("local API: cannot start a worker thread: %s", exc)
            return False
        return True

    def _evict_one(self, now: float) -> bool:
        candidates = [
            c for c in self._busy if c.reading and not c.evicted and now - c.since >= _EVICT_AFTER_S
        ]
        if not candidates:
            return False
        victim = min(candidates, key=lambda c: c.since)
        victim.evicted = True
        self._evicting += 1
        self.evicted += 1
        with contextlib.suppress(OSError):
            victim.sock.shutdown(socket.SHUT_RD)  # its worker's recv returns at once
        return True

    def _work(self) -> None:
        started = False
        while True:
            with self._cond:
                if not started:  # from starting to idle in one step, never neither
                    self._starting -= 1
                    started = True
                self._idle += 1
                idle_since = time.monotonic()
                while not self._queue and not self._closing:
                    left = _IDLE_EXIT_S - (time.monotonic() - idle_since)
                    if left <= 0:
                        break
                    self._cond.wait(left)
                self._idle -= 1
                if self._closing or not self._queue:
                    self._workers -= 1
                    return
                conn = self._queue.popleft()
                self._busy.add(conn)
            try:
                self._serve(conn)
            finally:
                with contextlib.suppress(OSError):
                    conn.sock.close()
                with self._cond:
                    self._busy.discard(conn)
                    if conn.evicted and self._evicting > 0:
                        self._evicting -= 1


class _Server(socketserver.TCPServer):
    """Accepts in one thread; a bounded pool serves; beyond it, a 503 from this thread."""

    allow_reuse_address = True
    request_queue_size = _LISTEN_BACKLOG

    def __init__(self, address: Any, api: LocalApi, family: int) -> None:
        self.address_family = family
        self.api = api
        self.pool = _Pool(api.config.max_connections, self._serve_connection)
        self._stopping = False
        self._selector = selectors.DefaultSelector()
        self._lingering: dict[socket.socket, float] = {}  # answered 503, closing softly
        self._wake_r, self._wake_w = socket.socketpair()
        try:
            super().__init__(address, _RequestHandler)
        except BaseException:
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()
            raise

    def serve(self) -> None:
        """Accept connections until ``wake``. Blocks without a timeout while nothing
        waits, so an idle agent is never woken up (``serve_forever`` polls every 0.5 s)."""
        self.socket.setblocking(False)
        selector, paused_until = self._selector, 0.0
        selector.register(self.socket, selectors.EVENT_READ)
        selector.register(self._wake_r, selectors.EVENT_READ)
        while not self._stopping:
            timeout = _TICK_S if self.pool.waiting or self._lingering or paused_until else None
            try:
                for key, _ in selector.select(timeout):
                    if key.fileobj is self.socket and not self._stopping:
                        if not self._accept_ready():  # out of descriptors: backlog holds them
                            selector.unregister(self.socket)
                            paused_until = time.monotonic() + _ACCEPT_PAUSE_S
                    elif isinstance(key.fileobj, socket.socket) and key.fileobj in self._lingering:
                        self._linger_read(key.fileobj)
                for conn in self.pool.tick():
                    self._reject(conn.sock)
                self._linger_expire()
                if paused_until and time.monotonic() >= paused_until and not self._stopping:
                    paused_until = 0.0
                    selector.register(self.socket, selectors.EVENT_READ)
            except Exception as exc:  # a bug here must not end the endpoint
                self.api.internal_error("accepting connections", exc)
                time.sleep(_TICK_S)
        for sock in list(self._lingering):
            self._linger_close(sock)

    def _accept_ready(self) -> bool:
        """Accept what is waiting; False when out of descriptors."""
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return True
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.api.warn_once(f"cannot accept a connection: {exc.strerror}")
                    return False
                log.debug("accept failed", exc_info=True)
                return True
            if not self.pool.offer(_Connection(sock, address, time.monotonic())):
                self._reject(sock)
        return True

    def _reject(self, sock: socket.socket) -> None:
        """Answer 503 without a thread; close once the client has had time to read it."""
        self.pool.count_rejected()
        self.api.record("-", "", 503)
        try:
            sock.setblocking(False)
            _discard_available(sock)
            sock.send(_raw_response(503, BUSY_MESSAGE, _RETRY_AFTER))
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        if len(self._lingering) >= _LINGER_MAX:
            sock.close()
            return
        self._lingering[sock] = time.monotonic() + _LINGER_S
        self._selector.register(sock, selectors.EVENT_READ)

    def _linger_read(self, sock: socket.socket) -> None:
        """Discard what a rejected client still sends; close at its end of stream."""
        try:
            if _discard_available(sock):
                return
        except OSError:
            pass
        self._linger_close(sock)

    def _linger_expire(self) -> None:
        now = time.monotonic()
        for sock, until in list(self._lingering.items()):
            if now >= until:
                self._linger_close(sock)

    def _linger_close(self, sock: socket.socket) -> None:
        del self._lingering[sock]
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)
        sock.close()

    def _serve_connection(self, conn: _Connection) -> None:
        """Run in a worker: serve ``conn`` until it closes (keep-alive included)."""
        try:
            _RequestHandler(cast(Any, conn), conn.address, self)  # setup() unwraps it
        except Exception:
            log.debug("connection from %s failed", conn.address, exc_info=True)

    def wake(self) -> None:
        """Make ``serve`` return."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def server_close(self) -> None:
        super().server_close()
        for conn in self.pool.close():
            conn.sock.close()
        for sock in list(self._lingering):
            self._linger_close(sock)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])


def _discard_available(sock: socket.socket) -> bool:
    """Read and drop what a non-blocking socket holds; False at its end of stream."""
    for _ in range(16):
        try:
            if not sock.recv(65536):
                return False
        except (BlockingIOError, InterruptedError):
            return True
    return True


def _raw_response(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A complete ``Connection: close`` answer, written where no handler state exists."""
    body = json.dumps({"error": message}, separators=(",", ":")).encode() + b"\n"
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "Server: sci-agent",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        *(f"{name}: {value}" for name, value in headers),
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _RequestHandler(BaseHTTPRequestHandler):
    """Serves one connection in a pool worker; each request within the whole-request
    deadline (request line, headers and body together)."""

    protocol_version = "HTTP/1.1"
    server_version = "sci-agent"
    sys_version = ""
    _body_pending = False  # a request body is still unread on the socket

    def setup(self) -> None:
        self.conn = cast(_Connection, self.request)
        self.connection = self.conn.sock
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        self.rfile = io.BufferedReader(_DeadlineReader(self.conn))
        self.wfile = _Writer(self.connection, self.api.config.request_timeout_s)

    def handle(self) -> None:
        """Serve requests until the connection closes; a request cut short by the
        deadline (408) or by eviction (503) is answered when it had begun."""
        try:
            super().handle()
        except _Interrupted as exc:
            self.close_connection = True
            status = exc.status
            if not isinstance(exc, _Evicted):
                cast(_Server, self.server).pool.count_timed_out()
            if self.conn.received:  # an idle keep-alive connection just closes
                message = exc.message(self.api.config.request_timeout_s)
                headers = _RETRY_AFTER if status == 503 else ()
                with contextlib.suppress(OSError):
                    self.wfile.write(_raw_response(status, message, headers))
                self.api.record("-", "", status)
                self._drain()

    def handle_one_request(self) -> None:
        """Start the deadline for the next request, then read and answer it."""
        conn = self.conn
        conn.since = time.monotonic()
        conn.deadline = conn.since + self.api.config.request_timeout_s
        conn.received = 0
        conn.reading = True
        super().handle_one_request()

    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    @property
    def api(self) -> LocalApi:
        return cast(_Server, self.server).api

    def _dispatch(self) -> None:
        path, _, query = self.path.partition("?")
        self._body_pending = "Transfer-Encoding" in self.headers or any(
            v.strip() != "0" for v in self.headers.get_all("Content-Length", [])
        )
        try:
            route = self.api.match(self.command, path)
            if route.auth:
                self.api.authorize(self.headers)
            body = self._read_body()
            request = Request(self.command, path, query, self.headers, body)
            response = self.api.handle(route, request)
        except HttpError as exc:
            response = exc.response()
        except Exception as exc:  # a bug in the plumbing: still answer, keep serving
            self.close_connection = True
            response = self.api.internal_error(f"{self.command} {path[:200]}", exc)
        self._send(response)
        self.api.record(self.command, path, response.status)

    def _read_body(self) -> bytes:
        """Read the body within ``http.max_body_bytes``, or raise 400/408/411/413."""
        if "Transfer-Encoding" in self.headers:
            raise HttpError(411, "Transfer-Encoding is not supported; send a Content-Length")
        lengths = {v.strip() for v in self.headers.get_all("Content-Length", [])}
        if not lengths:
            if self.command in BODY_METHODS:
                raise HttpError(411, "Content-Length header is required")
            return b""
        text = lengths.pop()
        if lengths or not _LENGTH.fullmatch(text):
            raise HttpError(400, "invalid Content-Length header", "Content-Length")
        length, limit = int(text), self.api.config.max_body_bytes
        if length > limit:
            raise HttpError(
                413, f"body of {length} bytes exceeds the {limit}-byte limit (http.max_body_bytes)"
            )
        try:
            body = self.rfile.read(length)
        except _Interrupted as exc:
            self._body_pending = False
            self.close_connection = True
            if not isinstance(exc, _Evicted):
                cast(_Server, self.server).pool.count_timed_out()
            timeout = self.api.config.request_timeout_s
            headers = _RETRY_AFTER if exc.status == 503 else ()
            raise HttpError(exc.status, exc.message(timeout), headers=headers) from None
        self._body_pending = False
        self.conn.reading = False
        if len(body) < length:
            self.close_connection = True
            raise HttpError(400, f"body ended after {len(body)} of {length} bytes")
        return body

    def _send(self, response: Response) -> None:
        self.conn.reading = False
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            self.send_header("Cache-Control", "no-store")
            for name, value in response.headers:
                self.send_header(name, value)
            if self._body_pending or self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)
        except OSError:
            self.close_connection = True
            return
        if self._body_pending:
            self._drain()

    def _drain(self) -> None:
        """Discard an unread body before closing, so the client can read the answer."""
        self._body_pending = False
        self.close_connection = True
        end = time.monotonic() + _DRAIN_S  # in all: a trickling client cannot hold it
        try:
            self.connection.shutdown(socket.SHUT_WR)
            left = _DRAIN_LIMIT_BYTES
            while left > 0 and (wait := end - time.monotonic()) > 0:
                self.connection.settimeout(wait)
                chunk = self.connection.recv(min(65536, left))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    def handle_expect_100(self) -> bool:
        """Refuse an oversized body before the client sends it."""
        text = (self.headers.get("Content-Length") or "").strip()
        if _LENGTH.fullmatch(text) and int(text) > self.api.config.max_body_bytes:
            self._body_pending = False
            self.close_connection = True
            limit = self.api.config.max_body_bytes
            self._send(
                HttpError(413, f"body of {text} bytes exceeds the {limit}-byte limit").response()
            )
            return False
        return super().handle_expect_100()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed requests caught by http.server get a JSON answer too."""
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self._body_pending = False
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # unparsable request line: answer with headers
            self.request_version = "HTTP/1.0"
        self._send(json_response(code, {"error": message or phrase}))

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)
