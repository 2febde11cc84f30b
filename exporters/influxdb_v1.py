"""Line protocol to an InfluxDB 1.x server's ``/write`` endpoint (stdlib only).

``/write?db=DB&rp=RP&precision=ms``, basic auth in the ``Authorization`` header (never
the ``u``/``p`` query parameters, which end up in access logs). InfluxDB 2.x and 3 serve
the same endpoint (their v1 compatibility API), and so does VictoriaMetrics.
"""

from __future__ import annotations

import base64
import urllib.parse

from agent.config import InfluxConfig
from agent.httpclient import Response
from exporters.delivery import DeliveryError
from exporters.influx_errors import PREFIX, ping_error, status_error
from exporters.influx_http import TEXT, InfluxHttpSink, detail_of


class InfluxV1Sink(InfluxHttpSink):
    """A ``NetworkSink`` for InfluxDB 1.x (``api = "v1"``)."""

    def __init__(self, cfg: InfluxConfig) -> None:
        if not cfg.database:
            raise ValueError(f'{PREFIX}.database: required by api = "v1"')
        self._database = cfg.database
        base = cfg.url.rstrip("/")
        query = {"db": cfg.database, "precision": "ms"}
        if cfg.retention_policy:
            query["rp"] = cfg.retention_policy
        headers: dict[str, str] = {}
        secrets: tuple[str | None, ...] = (cfg.password,)
        if cfg.username:
            pair = f"{cfg.username}:{cfg.password or ''}".encode()
            credentials = base64.b64encode(pair).decode("ascii")
            headers["Authorization"] = f"Basic {credentials}"
            secrets += (credentials,)
        write_url = f"{base}/write?{urllib.parse.urlencode(query)}"
        super().__init__(cfg, write_url, f"{base}/ping", headers, secrets)

    def check(self) -> str:
        """Ping the server, then write an empty batch; return a one-line status.

        The empty write stores nothing but passes the same checks as a real one
        (credentials, WRITE privilege, database, retention policy): ``SHOW DATABASES``
        could not tell a read-only user apart, and VictoriaMetrics answers it with a
        fixed list.
        """
        version = self._request("GET", self._ping_url, None, {}).headers.get(
            "X-Influxdb-Version"
        )
        server = f"InfluxDB {version}" if version else "InfluxDB-compatible server"
        self._request("POST", self._write_url, b"", dict(TEXT))
        where = f'database "{self._database}"'
        if self._cfg.retention_policy:
            where += f', retention policy "{self._cfg.retention_policy}"'
        user = f" as {self._cfg.username}" if self._cfg.username else " (no credentials)"
        return f"{PREFIX} v1 at {self._host}: {server}, {where} writable{user}"

    def _status_error(self, response: Response, url: str, lines: int) -> DeliveryError:
        detail = detail_of(response)
        if self._cfg.username is None:
            auth_hint = "the server requires credentials: set [influxdb] username/password"
        elif response.status == 403:
            auth_hint = "check [influxdb] username and its WRITE privilege on the database"
        else:
            auth_hint = "check [influxdb] username/password"
        if url == self._ping_url:
            return ping_error(response.status, detail, auth_hint=auth_hint)
        if "database not found" in detail:
            name = self._database.replace('"', '\\"')
            not_found = f'create it (CREATE DATABASE "{name}") or fix [influxdb] database'
        else:
            not_found = "no /write endpoint at this url: check [influxdb] url"
        if "retention policy not found" in detail:
            detail += ": create it or fix [influxdb] retention_policy"
        return status_error(
            response.status,
            detail,
            auth_hint=auth_hint,
            not_found_hint=not_found,
            lines=lines,
            retry_after=response.headers.get("Retry-After"),
            secrets=self._secrets,
        )
