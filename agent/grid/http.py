"""One JSON-over-HTTP call for grid providers, every failure a clear ``ProviderError``.

The request itself is ``agent.httpclient.request`` (stdlib, redirects and ``HTTPS_PROXY``
as usual, ``timeout_s`` a deadline for the whole request). The chain calls providers
from a background thread, so a slow answer never delays a sampling cycle, and a provider
that times out is logged and the next one tried. Messages never carry request headers,
and any string given in ``secrets`` is masked out of them.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

from agent.grid.base import HttpStatusError, ProviderError
from agent.httpclient import HttpError, request

#: Larger answers are refused: no grid API sends this much for one zone.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024


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
    sent = {"Accept": "application/json", **(headers or {})}
    data = None
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        sent.setdefault("Content-Type", "application/json")
    try:
        response = request(
            method,
            url,
            headers=sent,
            body=data,
            timeout_s=timeout_s,
            max_response_bytes=MAX_RESPONSE_BYTES,
            secrets=secrets,
        )
        return response.json()
    except HttpError as exc:
        if exc.status is not None:
            hint = f" ({auth_hint})" if exc.status in (401, 403) and auth_hint else ""
            raise HttpStatusError(provider, exc.message + hint, exc.status) from None
        if exc.kind == "timeout":
            message = f"timed out after {timeout_s:g}s (grid.timeout_s, the whole request)"
            raise ProviderError(provider, message) from None
        raise ProviderError(provider, exc.message) from None


def url_with(base_url: str, path: str, query: Mapping[str, str | int] | None = None) -> str:
    """``base_url`` + ``path`` (each segment already quoted by the caller) + ``?query``."""
    url = base_url.rstrip("/") + "/" + path.lstrip("/")
    return f"{url}?{urllib.parse.urlencode(query)}" if query else url
