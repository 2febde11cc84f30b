"""Line protocol to ``/api/v2/write`` through the official ``influxdb-client`` package.

Serves InfluxDB 2.x, 3 and Cloud, InfluxDB 1.8+'s v2 compatibility API and
VictoriaMetrics. The client writes SYNCHRONOUSly with its own retries off
(``retries=False``): the spool runner owns batching, retries and backoff, so a call
either delivers the batch or raises one of the delivery errors. The package is an
optional extra, imported only when this sink is built.
"""

from __future__ import annotations

import http.client
from collections.abc import Sequence
from typing import Any

from agent.config import InfluxConfig
from exporters.delivery import DeliveryError, RetryableError
from exporters.influx_errors import (
    PREFIX,
    TLS_HINT,
    host_of,
    network_error,
    ping_error,
    status_error,
)

MISSING_CLIENT = (
    "the v2 InfluxDB path needs influxdb-client: pip install 'sci-agent[influxdb]'"
    ' (or set [influxdb] api = "v1")'
)


class InfluxV2Sink:
    """A ``NetworkSink`` for the InfluxDB v2 write API (``api = "v2"``)."""

    name = "influxdb"

    def __init__(self, cfg: InfluxConfig) -> None:
        if not cfg.bucket or not cfg.org:
            key = "bucket" if not cfg.bucket else "org"
            raise ValueError(f'{PREFIX}.{key}: required by api = "v2"')
        try:
            from influxdb_client.client.influxdb_client import InfluxDBClient
            from influxdb_client.client.write_api import SYNCHRONOUS
            from influxdb_client.domain.write_precision import WritePrecision
            from influxdb_client.rest import ApiException
            from influxdb_client.service.write_service import WriteService
            from urllib3 import disable_warnings
            from urllib3.exceptions import HTTPError as Urllib3Error
            from urllib3.exceptions import InsecureRequestWarning
        except ImportError:
            raise ImportError(MISSING_CLIENT) from None
        if not cfg.verify_tls:  # chosen in the config: not worth a warning per request
            disable_warnings(InsecureRequestWarning)
        self._cfg = cfg
        self._bucket = cfg.bucket
        self._org = cfg.org
        self._host = host_of(cfg.url)
        self._precision = WritePrecision.MS
        self._api_exception: type[Exception] = ApiException
        self._transport_errors: tuple[type[BaseException], ...] = (
            Urllib3Error,
            OSError,
            http.client.HTTPException,
        )
        self._client: Any = InfluxDBClient(
            url=cfg.url,
            token=cfg.token or "",  # empty: no Authorization header
            org=cfg.org,
            timeout=max(1, round(cfg.timeout_s * 1000)),  # milliseconds
            enable_gzip=cfg.gzip,
            verify_ssl=cfg.verify_tls,
            retries=False,  # urllib3 raises at once; the runner retries
        )
        self._write_api: Any = self._client.write_api(write_options=SYNCHRONOUS)
        service: Any = WriteService  # untyped generated code
        self._write_service: Any = service(self._client.api_client)

    def send(self, lines: Sequence[str]) -> None:
        """Write ``lines`` (ms precision); raise a ``DeliveryError`` subclass on failure."""
        if not lines:
            return
        try:
            self._write_api.write(
                bucket=self._bucket,
                org=self._org,
                record=list(lines),
                write_precision=self._precision,
            )
        except Exception as exc:
            error = self._delivery_error(exc, lines=len(lines))
            if error is None:
                raise
            raise error from None

    def check(self) -> str:
        """GET ``/ping``, then POST an empty write; return a one-line status.

        The empty write stores nothing, yet InfluxDB checks the token, the org, the
        bucket and the write permission before it reads the body: it answers 204, or
        400 "writing requires points" once all of them passed. This needs no
        ``/api/v2/buckets`` (which VictoriaMetrics and the 1.8 compatibility API lack)
        and no read permission (a write-only token sees no buckets there).
        """
        try:
            version = self._client.version()
        except Exception as exc:
            error = self._delivery_error(exc, ping=True)
            if error is None:
                raise
            raise error from None
        try:
            self._write_service.post_write(
                org=self._org,
                bucket=self._bucket,
                body=b"",
                precision=self._precision,
                content_type="text/plain; charset=utf-8",
            )
        except Exception as exc:
            error = self._delivery_error(exc)
            if error is None:
                raise
            if not (isinstance(exc, self._api_exception) and getattr(exc, "status", 0) == 400):
                raise error from None
        server = f"InfluxDB {version}" if version and version != "unknown" else "v2 API server"
        return (
            f'{PREFIX} v2 at {self._host}: {server}, bucket "{self._bucket}" '
            f'in org "{self._org}" writable'
        )

    def close(self) -> None:
        """Close the client's connection pool."""
        self._write_api.close()
        self._client.close()

    def _delivery_error(
        self, exc: Exception, *, lines: int = 0, ping: bool = False
    ) -> DeliveryError | None:
        """The delivery error for one of the client's exceptions; None for any other."""
        timeout = self._cfg.timeout_s
        if isinstance(exc, self._api_exception):
            status = int(getattr(exc, "status", 0) or 0)
            if status == 0:  # the client wraps urllib3's SSLError as ApiException(status=0)
                reason = str(getattr(exc, "reason", ""))
                detail = reason.splitlines()[-1] if reason else ""
                if "CERTIFICATE_VERIFY_FAILED" in reason:
                    return RetryableError(
                        f"{PREFIX}: TLS certificate of {self._host} not trusted: {TLS_HINT}"
                    )
                return RetryableError(f"{PREFIX}: TLS error with {self._host} ({detail})")
            return self._status_error(exc, status, lines, ping)
        if isinstance(exc, self._transport_errors):
            return network_error(exc, self._cfg.url, timeout)
        return None

    def _status_error(self, exc: Exception, status: int, lines: int, ping: bool) -> DeliveryError:
        message = getattr(exc, "message", None)
        detail = message if isinstance(message, str) else str(getattr(exc, "body", "") or "")
        retry_after = getattr(exc, "retry_after", None)
        if self._cfg.token:
            auth_hint = "check [influxdb] token and its write permission on the bucket"
        else:
            auth_hint = "the server requires a token: set [influxdb] token"
        if ping:
            return ping_error(status, detail, auth_hint=auth_hint)
        if "page not found" in detail:  # Go's default 404: no such endpoint
            not_found = (
                "no /api/v2/write at this url (InfluxDB 1.x before 1.8 has only /write): "
                'check [influxdb] url, or set api = "v1"'
            )
        else:
            not_found = "check [influxdb] org and bucket, or create the bucket"
        return status_error(
            status,
            detail,
            auth_hint=auth_hint,
            not_found_hint=not_found,
            lines=lines,
            retry_after=str(retry_after) if retry_after else None,
            secrets=(self._cfg.token,),
        )
