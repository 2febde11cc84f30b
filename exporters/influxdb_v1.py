"""Line protocol to an InfluxDB 1.x server's ``/write`` endpoint (stdlib only).

One POST per batch: ``/write?db=DB&rp=RP&precision=ms``, the lines joined by newlines,
gzip-compressed when ``gzip`` is on, basic auth in the ``Authorization`` header (never
the ``u``/``p`` query parameters, which end up in access logs). Redirects are not
followed: ``urllib`` would turn a redirected POST into a GET and lose the body.
InfluxDB 2.x and 3 serve the same endpoint (their v1 compatibility API), and so does
VictoriaMetrics.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from email.message import Message
from typing import Any

from agent.config import InfluxConfig
from exporters.delivery import DeliveryError
from exporters.influx_errors import PREFIX, host_of, network_error, ping_error, status_error

USER_AGENT = "sci-agent (+https://github.com/sci-agent)"
MAX_ERROR_BODY = 64 * 1024


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects, so that a 3xx surfaces as an ``HTTPError``."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> None:
        return None


class InfluxV1Sink:
    """A ``NetworkSink`` for InfluxDB 1.x (``api = "v1"``)."""

    name = "influxdb"

    def __init__(self, cfg: InfluxConfig) -> None:
        if not cfg.database:
            raise ValueError(f'{PREFIX}.database: required by api = "v1"')
        self._cfg = cfg
        self._database = cfg.database
        self._host = host_of(cfg.url)
        base = cfg.url.rstrip("/")
        query = {"db": cfg.database, "precision": "ms"}
        if cfg.retention_policy:
            query["rp"] = cfg.retention_policy
        self._write_url = f"{base}/write?{urllib.parse.urlencode(query)}"
        self._ping_url = f"{base}/ping"
        self._headers = {"User-Agent": USER_AGENT}
        self._secrets: tuple[str | None, ...] = (cfg.password,)
        if cfg.username:
            pair = f"{cfg.username}:{cfg.password or ''}".encode()
            credentials = base64.b64encode(pair).decode("ascii")
            self._headers["Authorization"] = f"Basic {credentials}"
            self._secrets += (credentials,)
        context = ssl.create_default_context()
        if not cfg.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        self._opener = urllib.request.build_opener(
            _NoRedirect(), urllib.request.HTTPSHandler(context=context)
        )

    def send(self, lines: Sequence[str]) -> None:
        """POST ``lines`` to ``/write``; raise a ``DeliveryError`` subclass on failure."""
        if not lines:
            return
        body = "\n".join(lines).encode("utf-8")
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self._cfg.gzip:
            body = gzip.compress(body, compresslevel=6, mtime=0)
            headers["Content-Encoding"] = "gzip"
        self._request("POST", self._write_url, body, headers, lines=len(lines))

    def check(self) -> str:
        """Ping the server, then write an empty batch; return a one-line status.

        The empty write stores nothing but passes the same checks as a real one
        (credentials, WRITE privilege, database, retention policy): ``SHOW DATABASES``
        could not tell a read-only user apart, and VictoriaMetrics answers it with a
        fixed list.
        """
        headers = self._request("GET", self._ping_url, None, {})
        version = headers.get("X-Influxdb-Version")
        server = f"InfluxDB {version}" if version else "InfluxDB-compatible server"
        self._request("POST", self._write_url, b"", {"Content-Type": "text/plain; charset=utf-8"})
        where = f'database "{self._database}"'
        if self._cfg.retention_policy:
            where += f', retention policy "{self._cfg.retention_policy}"'
        user = f" as {self._cfg.username}" if self._cfg.username else " (no credentials)"
        return f"{PREFIX} v1 at {self._host}: {server}, {where} writable{user}"

    def close(self) -> None:
        """Nothing to release: every request opens and closes its own connection."""

    def _request(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: dict[str, str],
        *,
        lines: int = 0,
    ) -> Message:
        request = urllib.request.Request(
            url, data=body, headers={**self._headers, **headers}, method=method
        )
        timeout = self._cfg.timeout_s
        try:
            with self._opener.open(request, timeout=timeout) as response:
                response.read()
                answer: Message = response.headers
                return answer
        except urllib.error.HTTPError as exc:
            raise self._status_error(exc, url, lines) from None
        except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
            raise network_error(exc, url, timeout) from None

    def _status_error(self, exc: urllib.error.HTTPError, url: str, lines: int) -> DeliveryError:
        detail = _error_detail(exc)
        exc.close()
        if self._cfg.username is None:
            auth_hint = "the server requires credentials: set [influxdb] username/password"
        elif exc.code == 403:
            auth_hint = "check [influxdb] username and its WRITE privilege on the database"
        else:
            auth_hint = "check [influxdb] username/password"
        if url == self._ping_url:
            return ping_error(exc.code, detail, auth_hint=auth_hint)
        if "database not found" in detail:
            name = self._database.replace('"', '\\"')
            not_found = f'create it (CREATE DATABASE "{name}") or fix [influxdb] database'
        else:
            not_found = "no /write endpoint at this url: check [influxdb] url"
        if "retention policy not found" in detail:
            detail += ": create it or fix [influxdb] retention_policy"
        return status_error(
            exc.code,
            detail,
            auth_hint=auth_hint,
            not_found_hint=not_found,
            lines=lines,
            retry_after=exc.headers.get("Retry-After") if exc.headers else None,
            secrets=self._secrets,
        )


def _error_detail(exc: urllib.error.HTTPError) -> str:
    """The server's explanation: the JSON body's ``error``, else its header, else the body."""
    try:
        raw = exc.read(MAX_ERROR_BODY)
    except (OSError, http.client.HTTPException):
        raw = b""
    text = raw.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key in ("error", "message"):
            value = data.get(key)
            if isinstance(value, str) and value.strip():
                return value
    header = exc.headers.get("X-Influxdb-Error") if exc.headers else None
    return header or text
