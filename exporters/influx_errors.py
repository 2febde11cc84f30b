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
from collections.abc import Iterable

from agent.httpclient import HttpError, redact, shorten
from exporters.delivery import AuthError, DeliveryError, RejectedError, RetryableError

PREFIX = "influxdb"
MAX_DETAIL = 300
TLS_HINT = "install its CA certificate, or set [influxdb] verify_tls = false"


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
    detail = redact(shorten(detail, MAX_DETAIL), secrets)
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
    said = f" ({shorten(detail, MAX_DETAIL)})" if detail else ""
    return RetryableError(
        f"{PREFIX}: GET /ping answered {status} {reason}{said}: no InfluxDB API at this url; "
        "check [influxdb] url"
    )


def network_error(exc: HttpError) -> RetryableError:
    """A ``RetryableError`` naming what went wrong on the way to the server."""
    hint = {"tls-certificate": f": {TLS_HINT}", "tls": ": is it an https server?"}
    return RetryableError(f"{PREFIX}: {exc.message}{hint.get(exc.kind, '')}")
