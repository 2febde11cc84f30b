"""How both InfluxDB sinks turn an HTTP status or a network failure into a delivery error.

Only the data's own faults are ``RejectedError`` (400, 422, 413: the runner drops or
bisects the batch). 401/403 are ``AuthError``. Everything else, 404 included (the
database, bucket or org may be created later) and any unexpected status (a proxy's
405, a redirect, VictoriaMetrics' 400 for an unknown path), is ``RetryableError``:
when in doubt, keep the data. Messages carry the server's own explanation, never a
credential.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import urllib.parse
from collections.abc import Iterable

from exporters.delivery import AuthError, DeliveryError, RejectedError, RetryableError

PREFIX = "influxdb"
MAX_DETAIL = 300
TLS_HINT = "install its CA certificate, or set [influxdb] verify_tls = false"
MIN_SECRET = 4  # shorter strings would mask ordinary words of the message


def status_error(
    status: int,
    detail: str,
    *,
    auth_hint: str,
    not_found_hint: str,
    lines: int = 0,
    retry_after: str | None = None,
    secrets: Iterable[str | None] = (),
) -> DeliveryError:
    """The delivery error for a non-2xx answer; ``detail`` is the server's message."""
    reason = http.client.responses.get(status, "")
    head = f"{PREFIX}: {status} {reason}".rstrip()
    detail = _redact(_short(detail), secrets)
    if status in (401, 403):
        said = f" ({detail})" if detail else ""
        return AuthError(f"{head}{said}: {auth_hint}")
    text = f"{head}: {detail}" if detail else head
    if status == 400 and "unsupported path" in detail:  # VictoriaMetrics: a wrong url
        return RetryableError(f"{text}: check [influxdb] url")
    if status in (400, 422):
        return RejectedError(text)
    if status == 413:
        size = f" ({lines} lines)" if lines else ""
        return RejectedError(f"{text}: the batch{size} is larger than the server accepts")
    if status == 404:
        return RetryableError(f"{text}: {not_found_hint}")
    if status == 429 and retry_after:
        text += f" (retry after {retry_after}s)"
    elif 300 <= status < 400:
        text += ": redirected; set [influxdb] url to the final address"
    return RetryableError(text)


def ping_error(status: int, detail: str, *, auth_hint: str) -> DeliveryError:
    """The error for a ``GET /ping`` that did not answer 2xx: the url is wrong, mostly."""
    if status in (401, 403):
        return status_error(status, detail, auth_hint=auth_hint, not_found_hint="")
    reason = http.client.responses.get(status, "")
    said = f" ({_short(detail)})" if detail else ""
    return RetryableError(
        f"{PREFIX}: GET /ping answered {status} {reason}{said}: no InfluxDB API at this url; "
        "check [influxdb] url"
    )


def network_error(exc: BaseException, url: str, timeout_s: float) -> RetryableError:
    """A ``RetryableError`` naming what went wrong on the way to ``url``'s host."""
    host = host_of(url)
    cause = _root_cause(exc)
    if isinstance(cause, TimeoutError) or "timed out" in str(cause).lower():
        message = f"timed out after {timeout_s:g}s talking to {host}"
    elif isinstance(cause, ConnectionRefusedError):
        message = f"cannot connect to {host} (connection refused)"
    elif isinstance(cause, socket.gaierror):
        message = f"cannot resolve {host} ({cause.strerror or cause})"
    elif isinstance(cause, ssl.SSLCertVerificationError):
        message = f"TLS certificate of {host} not trusted ({cause.verify_message}): {TLS_HINT}"
    elif isinstance(cause, ssl.SSLError):
        message = f"TLS error with {host} ({cause.reason or cause}): is it an https server?"
    elif isinstance(cause, ConnectionError | http.client.HTTPException):
        message = f"connection to {host} lost ({type(cause).__name__})"
    elif isinstance(cause, OSError) and cause.strerror:
        message = f"cannot connect to {host} ({cause.strerror})"
    else:
        message = f"cannot connect to {host} ({type(cause).__name__}: {cause})".replace(": )", ")")
    return RetryableError(f"{PREFIX}: {message}")


def host_of(url: str) -> str:
    """``host:port`` of ``url``, the only part of it a message shows."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        return url
    try:
        port = parts.port
    except ValueError:
        port = None
    return parts.hostname + (f":{port}" if port else "")


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of a chain (urllib3 and urllib wrap the socket error)."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        reason = getattr(exc, "reason", None)  # urllib's URLError, urllib3's MaxRetryError
        if isinstance(reason, BaseException):
            exc = reason
        elif exc.__cause__ is not None:
            exc = exc.__cause__
        elif exc.__context__ is not None and not exc.__suppress_context__:
            exc = exc.__context__
        else:
            break
    return exc


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"


def _redact(text: str, secrets: Iterable[str | None]) -> str:
    """Mask credentials a server might echo in its message."""
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET:
            text = text.replace(secret, "***")
    return text
