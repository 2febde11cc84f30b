"""``request``: one HTTP call with a whole-request deadline and errors a user can act on."""

from __future__ import annotations

import functools
import http.client
import json
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.message import Message
from typing import Any

from agent.httpclient._deadline import HttpHandler, HttpsHandler, NoRedirect
from agent.redaction import MIN_SECRET, redact, redact_url


@functools.cache
def user_agent() -> str:
    """``sci-agent/<version>``, sent with every request unless the caller sets its own.

    Looked up on first use: reading the installed version costs tens of milliseconds.
    """
    import importlib.metadata

    try:
        return f"sci-agent/{importlib.metadata.version('sci-agent')}"
    except importlib.metadata.PackageNotFoundError:
        return "sci-agent/0+unknown"


#: Larger answers are refused (or cut, with ``truncate``) unless the caller says otherwise.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
#: Error bodies are read up to this much: enough for any server's explanation.
MAX_ERROR_BODY = 64 * 1024
MAX_DETAIL = 200
_DETAIL_KEYS = ("message", "error", "detail", "title")


class HttpError(Exception):
    """A request without a usable answer; ``message`` says why and holds no secret.

    ``kind`` is one of ``dns``, ``refused``, ``timeout``, ``tls-certificate``, ``tls``,
    ``connection``, ``url``, ``status``, ``too-large``, ``not-json``. For ``status``,
    ``response`` is the answer (its body cut to ``MAX_ERROR_BODY``) and ``detail`` the
    server's own explanation of it.
    """

    def __init__(
        self,
        kind: str,
        message: str,
        host: str,
        *,
        response: Response | None = None,
        detail: str = "",
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.host = host
        self.response = response
        self.detail = detail

    @property
    def status(self) -> int | None:
        return self.response.status if self.response is not None else None


@dataclass(frozen=True)
class Response:
    """An answer: status, headers (case-insensitive ``.get``) and the body read."""

    status: int
    reason: str
    headers: Message
    body: bytes
    host: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def content_type(self) -> str:
        return str(self.headers.get("Content-Type") or "no content type")

    def text(self) -> str:
        """The body decoded with its declared charset (UTF-8 otherwise), never failing."""
        charset = self.headers.get_content_charset() or "utf-8"
        try:
            return self.body.decode(charset, "replace")
        except LookupError:
            return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; ``HttpError`` (``not-json``) naming its type and size if not."""
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            message = f"response is not JSON ({self.content_type}, {len(self.body)} bytes)"
            raise HttpError("not-json", message, self.host) from None


def request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout_s: float = 5.0,
    max_response_bytes: int = MAX_RESPONSE_BYTES,
    truncate: bool = False,
    raise_for_status: bool = True,
    follow_redirects: bool = True,
    use_proxy: bool = True,
    verify_tls: bool = True,
    secrets: Iterable[str | None] = (),
) -> Response:
    """Send one request and read its answer, all within ``timeout_s``.

    A non-2xx answer raises ``HttpError`` (``status``) unless ``raise_for_status`` is
    off. A body over ``max_response_bytes`` raises (``too-large``), or with ``truncate``
    is cut there. Redirects are followed unless ``follow_redirects`` is off (then a 3xx
    is an answer like any other); ``HTTP(S)_PROXY`` is honoured unless ``use_proxy`` is
    off. Every ``HttpError`` names the host, never the URL, and masks ``secrets``.
    """
    hidden = [s for s in secrets if s and len(s) >= MIN_SECRET]
    host = host_of(url)
    sent = {"User-Agent": user_agent(), **(headers or {})}
    _check_url(url, host)
    deadline = time.monotonic() + timeout_s
    try:
        req = urllib.request.Request(url, data=body, headers=sent, method=method)
        opener = _opener(deadline, follow_redirects, use_proxy, verify_tls)
        try:
            with opener.open(req, timeout=timeout_s) as answer:
                raw = answer.read(max_response_bytes + 1)
                response = Response(answer.status, answer.reason, answer.headers, raw, host)
        except urllib.error.HTTPError as exc:
            with exc:
                raw = exc.read(min(MAX_ERROR_BODY, max_response_bytes))
                reason = str(exc.reason or "")
                response = Response(exc.code, reason, exc.headers or Message(), raw, host)
    except ValueError as exc:  # urllib: a port that is not a number, a control character
        problem = redact(redact_url(str(exc)), hidden)
        raise HttpError("url", f"cannot use the URL for {host} ({problem})", host) from None
    except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
        raise transport_error(exc, host, timeout_s, hidden) from None
    if len(response.body) > max_response_bytes:
        if not truncate:
            message = f"response larger than {max_response_bytes} bytes"
            raise HttpError("too-large", message, host)
        response = Response(
            response.status,
            response.reason,
            response.headers,
            response.body[:max_response_bytes],
            host,
        )
    if raise_for_status and not response.ok:
        raise status_error(response, hidden)
    return response


def _check_url(url: str, host: str) -> None:
    """``HttpError`` (``url``) unless ``url`` is http(s) with a host: urllib would also open
    ``file:``, ``ftp:`` and ``data:`` URLs."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise HttpError("url", f"cannot use the URL for {host} ({exc})", host) from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        message = f"cannot use the URL for {host} (expected http:// or https:// and a host)"
        raise HttpError("url", message, host)


def _opener(
    deadline: float, follow_redirects: bool, use_proxy: bool, verify_tls: bool
) -> urllib.request.OpenerDirector:
    """http and https only (``build_opener`` would add ftp, file and data handlers)."""
    opener = urllib.request.OpenerDirector()
    handlers: list[urllib.request.BaseHandler] = [
        # scrape targets and loopback agents are reached directly, the rest as configured
        urllib.request.ProxyHandler(None if use_proxy else {}),
        HttpHandler(deadline),
        HttpsHandler(deadline, verify_tls),
        urllib.request.HTTPDefaultErrorHandler(),
        NoRedirect() if not follow_redirects else urllib.request.HTTPRedirectHandler(),
        urllib.request.HTTPErrorProcessor(),
    ]
    for handler in handlers:
        opener.add_handler(handler)
    return opener


def status_error(response: Response, secrets: Iterable[str | None] = ()) -> HttpError:
    """``HTTP 503 Service Unavailable: <the server's explanation>`` for a non-2xx answer."""
    hidden = [s for s in secrets if s and len(s) >= MIN_SECRET]
    reason = response.reason or http.client.responses.get(response.status, "")
    detail = redact(shorten(explanation(response)), hidden)
    message = f"HTTP {response.status} {reason}".rstrip()
    if detail:
        message += f": {detail}"
    return HttpError("status", message, response.host, response=response, detail=detail)


def explanation(response: Response) -> str:
    """What the server said went wrong: a JSON body's message, error, detail or title, or a
    plain-text body; "" for anything else (an HTML error page says nothing useful)."""
    try:
        data = json.loads(response.body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        data = None
    if isinstance(data, dict):
        for key in _DETAIL_KEYS:
            value = data.get(key)
            if isinstance(value, str) and value.strip():
                return " ".join(value.split())
        return ""
    if data is None and response.content_type.startswith("text/plain"):
        return " ".join(response.text().split())
    return ""


def transport_error(
    exc: BaseException, host: str, timeout_s: float, secrets: Iterable[str] = ()
) -> HttpError:
    """The ``HttpError`` for a request that got no answer, by its root cause."""
    cause = _root_cause(exc)
    if isinstance(cause, TimeoutError) or "timed out" in str(cause).lower():
        kind, message = "timeout", f"timed out after {timeout_s:g}s talking to {host}"
    elif isinstance(cause, ConnectionRefusedError):
        kind, message = "refused", f"cannot connect to {host} (connection refused)"
    elif isinstance(cause, socket.gaierror):
        kind, message = "dns", f"cannot resolve {host} ({cause.strerror or cause})"
    elif isinstance(cause, ssl.SSLCertVerificationError):
        kind = "tls-certificate"
        message = f"TLS certificate of {host} not trusted ({cause.verify_message})"
    elif isinstance(cause, ssl.SSLError):
        kind, message = "tls", f"TLS error with {host} ({cause.reason or cause})"
    elif isinstance(cause, ConnectionError | http.client.HTTPException):
        kind, message = "connection", f"connection to {host} lost ({type(cause).__name__})"
    elif isinstance(cause, OSError) and cause.strerror:
        kind, message = "connection", f"cannot connect to {host} ({cause.strerror})"
    else:
        problem = f"{type(cause).__name__}: {cause}".rstrip(": ")
        kind, message = "connection", f"cannot connect to {host} ({problem})"
    return HttpError(kind, redact(message, secrets), host)


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of a chain (urllib wraps the socket error in ``reason``)."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        reason = getattr(exc, "reason", None)
        if isinstance(reason, BaseException):
            exc = reason
        elif exc.__cause__ is not None:
            exc = exc.__cause__
        elif exc.__context__ is not None and not exc.__suppress_context__:
            exc = exc.__context__
        else:
            break
    return exc


def host_of(url: str) -> str:
    """``host:port`` of ``url``, the only part of it an error message shows."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return redact_url(url)
    if not parts.hostname:
        return redact_url(url)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return host + (f":{port}" if port else "")


def shorten(text: str, limit: int = MAX_DETAIL) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
