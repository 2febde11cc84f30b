"""The agent's local HTTP endpoint, where applications report their functional units.

Routes live in a small table (``LocalApi.add_route``), so later endpoints plug in
without touching the request plumbing. Every answer is JSON, and the server keeps
serving whatever arrives: a failing handler becomes a 500 and is logged once.

Status codes:

- 202 ``{"accepted": N}``: the reports were counted.
- 400 the body is not UTF-8 JSON, has the wrong shape, a field has the wrong type, a
  field is missing or unknown, or a count is negative, not finite or too large.
- 401 ``http.token`` is set and the request lacks ``Authorization: Bearer <token>``.
- 404 unknown path; 405 the path exists but not for this method (``Allow`` lists them).
- 408 the body did not arrive in time; 411 a body without ``Content-Length``;
  413 ``Content-Length`` above ``http.max_body_bytes`` (the body is never read);
  415 ``Content-Type`` is not ``application/json``.
- 422 a well-formed report this agent's configuration refuses: unknown app, an app
  without a unit, or the wrong unit for the app.

Errors are ``{"error": "...", "field": "count", "index": 3}``: ``field`` when one
field is at fault, ``index`` when the report came in a batch. A rejected request
counts nothing, not even the valid reports of its batch.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
import re
import selectors
import socket
import socketserver
import threading
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

from agent.config import HttpConfig
from agent.units.counter import UnitCounter, UnitError, kind_of

log = logging.getLogger("sci_agent.http")

#: Methods whose requests must carry a body with a ``Content-Length``.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
REPORT_FIELDS = ("app", "unit", "count")
_READ_TIMEOUT_S = 10.0  # per socket operation: a stalled client frees its thread
_DRAIN_LIMIT_BYTES = 1 << 20  # unread body discarded before closing, so the answer arrives
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

    def __init__(self, config: HttpConfig, counter: UnitCounter) -> None:
        self.config = config
        self.counter = counter
        self._routes: dict[str, dict[str, Route]] = {}
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._failures: set[str] = set()
        self._responses: dict[tuple[str, str, int], int] = {}
        self.add_route("GET", "/healthz", self._healthz, auth=False)
        self.add_route("POST", "/v1/units", self._post_units)

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
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            raise HttpError(401, "invalid bearer token", headers=challenge)

    def response_counts(self) -> dict[tuple[str, str, int], int]:
        """Responses sent so far per (method, route path or "other", status)."""
        with self._lock:
            return dict(self._responses)

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
        self._server = server
        self._thread = threading.Thread(target=server.serve, name="sci-agent-http", daemon=True)
        self._thread.start()
        bound = str(server.server_address[0])
        log.info("local API listening on %s", self.url)
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
        payload = request.json()
        batch = isinstance(payload, list)
        if isinstance(payload, list):
            items: list[Any] = payload
        elif isinstance(payload, dict):
            items = [payload]
        else:
            raise HttpError(
                400, f"body must be a JSON object or an array of objects, got {kind_of(payload)}"
            )
        reports = [_report(item, i if batch else None) for i, item in enumerate(items)]
        try:
            self.counter.add_many(reports)
        except UnitError as exc:
            index = exc.index if batch else None
            where = f"item {index}: " if index is not None else ""
            status = 400 if exc.field == "count" else 422
            raise HttpError(status, where + exc.message, exc.field, index=index) from None
        return json_response(202, {"accepted": len(reports)})


def _report(item: object, index: int | None) -> tuple[str, str, Any]:
    """Check the shape of one report; its values are checked by the counter."""
    where = f"item {index}: " if index is not None else ""
    if not isinstance(item, dict):
        raise HttpError(
            400, f"{where}a report must be a JSON object, got {kind_of(item)}", index=index
        )
    for key in REPORT_FIELDS:
        if key not in item:
            raise HttpError(400, f"{where}missing field {key!r}", key, index=index)
    for key in item:
        if key not in REPORT_FIELDS:
            raise HttpError(
                400,
                f"{where}unknown field {key[:64]!r} (expected app, unit, count)",
                key[:64],
                index=index,
            )
    for key in ("app", "unit"):
        if not isinstance(item[key], str):
            raise HttpError(
                400, f"{where}{key} must be a string, got {kind_of(item[key])}", key, index=index
            )
    return item["app"], item["unit"], item["count"]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: Any, api: LocalApi, family: int) -> None:
        self.address_family = family
        self.api = api
        self._stopping = False
        self._wake_r, self._wake_w = socket.socketpair()
        try:
            super().__init__(address, _RequestHandler)
        except BaseException:
            self._wake_r.close()
            self._wake_w.close()
            raise

    def serve(self) -> None:
        """Accept connections until ``wake``; blocks without timeouts, so an idle
        agent is never woken up (``serve_forever`` polls every 0.5 s)."""
        with selectors.DefaultSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping:
                for key, _ in selector.select():
                    if key.fileobj is self and not self._stopping:
                        self.handle_request()  # readable: accepts without waiting

    def wake(self) -> None:
        """Make ``serve`` return."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def server_close(self) -> None:
        super().server_close()
        self._wake_r.close()
        self._wake_w.close()

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the FQDN, which can stall on a broken resolver.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s failed", client_address, exc_info=True)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sci-agent"
    sys_version = ""
    timeout = _READ_TIMEOUT_S
    disable_nagle_algorithm = True  # headers and body are two writes
    _body_pending = False  # a request body is still unread on the socket

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
        except TimeoutError:
            self._body_pending = False
            self.close_connection = True
            raise HttpError(408, f"body not received within {_READ_TIMEOUT_S:g}s") from None
        self._body_pending = False
        if len(body) < length:
            self.close_connection = True
            raise HttpError(400, f"body ended after {len(body)} of {length} bytes")
        return body

    def _send(self, response: Response) -> None:
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
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.5)
            left = _DRAIN_LIMIT_BYTES
            while left > 0:
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
