"""Line protocol to ``/api/v2/write`` (stdlib only, through ``agent.httpclient``).

Serves InfluxDB 2.x, 3 and Cloud, InfluxDB 1.8+'s v2 compatibility API and
VictoriaMetrics: ``/api/v2/write?org=ORG&bucket=BUCKET&precision=ms`` with
``Authorization: Token <token>``. The v1 and v2 writes differ only by that URL and
header, so no client package is needed (the README has the measurement that decided
it). The spool runner owns batching, retries and backoff: a call either delivers the
batch or raises one of the delivery errors.
"""

from __future__ import annotations

import urllib.parse

from agent.config import InfluxConfig
from agent.httpclient import Response
from exporters.delivery import DeliveryError
from exporters.influx_errors import PREFIX, ping_error, status_error
from exporters.influx_http import InfluxHttpSink, detail_of


class InfluxV2Sink(InfluxHttpSink):
    """A ``NetworkSink`` for the InfluxDB v2 write API (``api = "v2"``)."""

    def __init__(self, cfg: InfluxConfig) -> None:
        if not cfg.bucket or not cfg.org:
            key = "bucket" if not cfg.bucket else "org"
            raise ValueError(f'{PREFIX}.{key}: required by api = "v2"')
        self._bucket = cfg.bucket
        self._org = cfg.org
        base = cfg.url.rstrip("/")
        query = urllib.parse.urlencode({"org": cfg.org, "bucket": cfg.bucket, "precision": "ms"})
        headers = {"Accept": "application/json"}
        if cfg.token:  # empty: no Authorization header
            headers["Authorization"] = f"Token {cfg.token}"
        super().__init__(cfg, f"{base}/api/v2/write?{query}", f"{base}/ping", headers, (cfg.token,))

    def check(self) -> str:
        """GET ``/ping``, then POST an empty write; return a one-line status.

        The empty write stores nothing, yet InfluxDB checks the token, the org, the
        bucket and the write permission before it reads the body: it answers 204, or
        400 "writing requires points" once all of them passed. This needs no
        ``/api/v2/buckets`` (which VictoriaMetrics and the 1.8 compatibility API lack)
        and no read permission (a write-only token sees no buckets there).
        """
        version = self._request("GET", self._ping_url, None, {}).headers.get(
            "X-Influxdb-Version"
        )
        body, headers = self._body(b"")
        self._request("POST", self._write_url, body, headers, also_ok=(400,))
        server = f"InfluxDB {version}" if version and version != "unknown" else "v2 API server"
        return (
            f'{PREFIX} v2 at {self._host}: {server}, bucket "{self._bucket}" '
            f'in org "{self._org}" writable'
        )

    def _status_error(self, response: Response, url: str, lines: int) -> DeliveryError:
        detail = detail_of(response)
        if self._cfg.token:
            auth_hint = "check [influxdb] token and its write permission on the bucket"
        else:
            auth_hint = "the server requires a token: set [influxdb] token"
        if url == self._ping_url:
            return ping_error(response.status, detail, auth_hint=auth_hint)
        if "page not found" in detail:  # Go's default 404: no such endpoint
            not_found = (
                "no /api/v2/write at this url (InfluxDB 1.x before 1.8 has only /write): "
                'check [influxdb] url, or set api = "v1"'
            )
        else:
            not_found = "check [influxdb] org and bucket, or create the bucket"
        return status_error(
            response.status,
            detail,
            auth_hint=auth_hint,
            not_found_hint=not_found,
            lines=lines,
            retry_after=response.headers.get("Retry-After"),
            secrets=self._secrets,
        )
