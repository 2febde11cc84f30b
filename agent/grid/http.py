"""One JSON-over-HTTP call with every failure turned into a clear ``ProviderError``.

Stdlib only (``urllib.request``, so redirects and ``HTTPS_PROXY`` work as usual).
``timeout_s`` is a deadline for the whole request: connecting, the TLS handshake,
sending, the status line and headers, and the body. A socket timeout alone bounds each
read, so a server trickling one byte a second would hold the caller forever; here every
send and receive waits at most for what is left until the deadline, and the connection
is closed when it passes. (Name resolution and a proxy's CONNECT answer are bounded by
the OS and by ``timeout_s`` per read.) The chain calls providers from a background
thread, so a slow answer never delays a sampling cycle, and a provider that times out
is logged and the next one tried. Messages never carry request headers, and any string
given in ``secrets`` is masked out of them.

``http_send`` is the same request for callers that send their own bytes and read any
status themselves (alert webhooks: a 503 is theirs to retry, a 410 to drop).
"""

from __future__ import annotations

import functools
import http.client
import io
import json
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from typing import Any

from agent.grid.base import HttpStatusError, ProviderError

#: Larger answers are refused: no grid API sends this much for one zone.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
USER_AGENT = "sci-agent (+https://github.com/sci-agent)"


def http_json(
    method: str,
    url: str,
    headers: Mapping[str, str] | None = None,
    body: Any = None,
    timeout_s: float = 5.0,
    *,
    provider: str,
    auth_hint: str = "",
    secrets: Iterable[str | None] = (),
) -> Any:
    """Send ``body`` (JSON-encoded when not None) and return the decoded JSON answer.

    Raises ``HttpStatusError`` for a non-2xx status (``auth_hint`` is appended for 401
    and 403) and ``ProviderError`` for a timeout, a connection failure or a body that is
    not JSON.
    """
    hidden = [s for s in secrets if s]
    sent = {"Accept": "application/json", "User-Agent": USER_AGENT, **(headers or {})}
    data = None
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        sent.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url, data=data, headers=sent, method=method)
    deadline = time.monotonic() + timeout_s
    opener = urllib.request.build_opener(_HttpHandler(deadline), _HttpsHandler(deadline))
    try:
        with opener.open(request, timeout=timeout_s) as response:
            raw = response.read(MAX_RESPONSE_BYTES + 1)
            content_type = response.headers.get("Content-Type", "no content type")
    except urllib.error.HTTPError as exc:
        raise _status_error(provider, exc, auth_hint, hidden) from None
    except urllib.error.URLError as exc:
        message = _url_problem(url, exc.reason, timeout_s)
        raise ProviderError(provider, _redact(message, hidden)) from None
    except TimeoutError:
        raise ProviderError(provider, _timed_out(timeout_s)) from None
    except (OSError, http.client.HTTPException) as exc:
        reason = _redact(f"{type(exc).__name__}: {exc}".rstrip(": "), hidden)
        raise ProviderError(provider, f"connection to {_host(url)} failed ({reason})") from None
    if len(raw) > MAX_RESPONSE_BYTES:
        raise ProviderError(provider, f"response larger than {MAX_RESPONSE_BYTES} bytes")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ProviderError(
            provider, f"response is not JSON ({content_type}, {len(raw)} bytes)"
        ) from None


def http_send(
    method: str,
    url: str,
    body: bytes | None,
    headers: Mapping[str, str],
    timeout_s: float,
    *,
    provider: str,
    secrets: Iterable[str | None] = (),
    max_response_bytes: int = 64 * 1024,
) -> tuple[int, bytes]:
    """Send ``body`` as is; return (status, up to ``max_response_bytes`` of the answer).

    Any status is returned, not raised (a redirect too: it is not followed, as a POST
    must not turn into a GET). ``ProviderError`` for a timeout (``timeout_s`` bounds the
    whole request) or a connection failure; its message names the host, never the URL.
    """
    hidden = [s for s in secrets if s]
    sent = {"User-Agent": USER_AGENT, **headers}
    request = urllib.request.Request(url, data=body, headers=sent, method=method)
    deadline = time.monotonic() + timeout_s
    opener = urllib.request.build_opener(
        _HttpHandler(deadline), _HttpsHandler(deadline), _NoRedirect()
    )
    try:
        try:
            with opener.open(request, timeout=timeout_s) as response:
                return response.status, response.read(max_response_bytes)
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read(max_response_bytes)
    except urllib.error.URLError as exc:
        message = _url_problem(url, exc.reason, timeout_s, "the whole request")
        raise ProviderError(provider, _redact(message, hidden)) from None
    except TimeoutError:
        raise ProviderError(provider, _timed_out(timeout_s, "the whole request")) from None
    except (OSError, http.client.HTTPException) as exc:
        reason = _redact(f"{type(exc).__name__}: {exc}".rstrip(": "), hidden)
        raise ProviderError(provider, f"connection to {_host(url)} failed ({reason})") from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Hands a 3xx back as an ``HTTPError`` instead of following it."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        del args, kwargs
        return None


def url_with(base_url: str, path: str, query: Mapping[str, str | int] | None = None) -> str:
    """``base_url`` + ``path`` (each segment already quoted by the caller) + ``?query``."""
    url = base_url.rstrip("/") + "/" + path.lstrip("/")
    return f"{url}?{urllib.parse.urlencode(query)}" if query else url


def _remaining(deadline: float) -> float:
    """Seconds left until ``deadline``; ``TimeoutError`` once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the request deadline passed")
    return left


class _DeadlineReader(io.RawIOBase):
    """Reads a socket with each receive bounded by the time left until ``deadline``."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = deadline
        self._raw = sock.makefile("rb", buffering=0)  # keeps the socket open until closed

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        self._sock.settimeout(_remaining(self._deadline))
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


def _response_class(deadline: float) -> type[http.client.HTTPResponse]:
    """An ``HTTPResponse`` reading its status line, headers and body by ``deadline``."""

    class DeadlineResponse(http.client.HTTPResponse):
        def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
            super().__init__(sock, *args, **kwargs)
            self.fp.close()  # the plain reader: replaced before anything is read
            self.fp = io.BufferedReader(_DeadlineReader(sock, deadline))

    return DeadlineResponse


class _Deadline:
    """What both connections share: a monotonic ``deadline`` for everything they do."""

    sock: Any  # as http.client declares it
    deadline: float

    def _set_deadline(self, deadline: float) -> None:
        self.deadline = deadline
        self.response_class = _response_class(deadline)

    def send(self, data: Any) -> None:
        if self.sock is not None:
            self.sock.settimeout(_remaining(self.deadline))
        super().send(data)  # type: ignore[misc]


class _HttpConnection(_Deadline, http.client.HTTPConnection):
    """Connects, sends and reads by ``deadline`` (a monotonic time)."""

    def __init__(self, *args: Any, deadline: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._set_deadline(deadline)

    def connect(self) -> None:
        self.timeout = _remaining(self.deadline)
        super().connect()


class _HttpsConnection(_Deadline, http.client.HTTPSConnection):
    """``_HttpConnection`` over TLS: the handshake too ends by ``deadline``."""

    def __init__(self, *args: Any, deadline: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._set_deadline(deadline)

    def connect(self) -> None:
        self.timeout = _remaining(self.deadline)
        http.client.HTTPConnection.connect(self)  # TCP (and a proxy's tunnel)
        self.sock.settimeout(_remaining(self.deadline))
        server_hostname = getattr(self, "_tunnel_host", None) or self.host
        context: ssl.SSLContext = self._context  # type: ignore[attr-defined]
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)


class _HttpHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: float) -> None:
        super().__init__()
        self.deadline = deadline

    def do_open(self, http_class: Any, req: urllib.request.Request, **kwargs: Any) -> Any:
        del http_class
        connection = functools.partial(_HttpConnection, deadline=self.deadline)
        return super().do_open(connection, req, **kwargs)


class _HttpsHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: float) -> None:
        super().__init__()
        self.deadline = deadline

    def do_open(self, http_class: Any, req: urllib.request.Request, **kwargs: Any) -> Any:
        del http_class
        connection = functools.partial(_HttpsConnection, deadline=self.deadline)
        return super().do_open(connection, req, **kwargs)


def _timed_out(timeout_s: float, what: str = "grid.timeout_s, the whole request") -> str:
    return f"timed out after {timeout_s:g}s ({what})"


def _status_error(
    provider: str, exc: urllib.error.HTTPError, auth_hint: str, hidden: list[str]
) -> HttpStatusError:
    code = exc.code
    message = f"HTTP {code} {exc.reason or http.client.responses.get(code, '')}".rstrip()
    detail = _error_detail(exc)
    if detail:
        message += f": {detail}"
    if code in (401, 403) and auth_hint:
        message += f" ({auth_hint})"
    exc.close()
    return HttpStatusError(provider, _redact(message, hidden), code)


def _error_detail(exc: urllib.error.HTTPError) -> str:
    """The short explanation many APIs put in an error body (message, error, detail…)."""
    try:
        data = json.loads(exc.read(64 * 1024))
    except (OSError, ValueError, http.client.HTTPException):
        return ""
    if isinstance(data, dict):
        for key in ("message", "error", "detail", "title"):
            value = data.get(key)
            if isinstance(value, str) and value.strip():
                text = " ".join(value.split())
                return text if len(text) <= 200 else text[:199] + "…"
    return ""


def _url_problem(
    url: str, reason: object, timeout_s: float, what: str = "grid.timeout_s, the whole request"
) -> str:
    host = _host(url)
    if isinstance(reason, TimeoutError):
        return _timed_out(timeout_s, what)
    if isinstance(reason, ConnectionRefusedError):
        return f"cannot connect to {host} (connection refused)"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve {host} ({reason.strerror or reason})"
    if isinstance(reason, ssl.SSLError):
        return f"TLS error with {host} ({reason.reason or reason})"
    if isinstance(reason, OSError) and reason.strerror:
        return f"cannot connect to {host} ({reason.strerror})"
    return f"cannot connect to {host} ({reason})"


def _host(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else url


def _redact(text: str, hidden: list[str]) -> str:
    for secret in hidden:
        text = text.replace(secret, "***")
    return text
