"""What both InfluxDB sinks share: line protocol POSTed through ``agent.httpclient``.

One POST per batch, the lines joined by newlines, gzip-compressed when ``gzip`` is on.
Redirects are not followed (a redirected POST would turn into a GET and lose the body),
every request ends by ``timeout_s``, and a failure becomes the delivery error the spool
runner acts on (``influx_errors``). The v1 and v2 sinks differ only by URL, headers and
the hints their messages give.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence

from agent.config import InfluxConfig
from agent.httpclient import HttpError, Response, explanation, host_of, request
from exporters.delivery import DeliveryError
from exporters.influx_errors import network_error

MAX_ANSWER_BYTES = 64 * 1024  # sinks read only status, headers and an error's explanation
TEXT = {"Content-Type": "text/plain; charset=utf-8"}


class InfluxHttpSink:
    """A ``NetworkSink`` writing to ``write_url``; subclasses say how errors read."""

    name = "influxdb"

    def __init__(
        self,
        cfg: InfluxConfig,
        write_url: str,
        ping_url: str,
        headers: dict[str, str],
        secrets: tuple[str | None, ...],
    ) -> None:
        self._cfg = cfg
        self._host = host_of(cfg.url)
        self._write_url = write_url
        self._ping_url = ping_url
        self._headers = headers
        self._secrets = secrets

    def send(self, lines: Sequence[str]) -> None:
        """POST ``lines`` (ms precision); raise a ``DeliveryError`` subclass on failure."""
        if not lines:
            return
        body, headers = self._body("\n".join(lines).encode("utf-8"))
        self._request("POST", self._write_url, body, headers, lines=len(lines))

    def close(self) -> None:
        """Nothing to release: every request opens and closes its own connection."""

    def _body(self, raw: bytes) -> tuple[bytes, dict[str, str]]:
        """``raw`` gzip-compressed when ``gzip`` is on, and the headers saying so."""
        if not self._cfg.gzip:
            return raw, dict(TEXT)
        return gzip.compress(raw, compresslevel=6, mtime=0), {**TEXT, "Content-Encoding": "gzip"}

    def _request(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: dict[str, str],
        *,
        lines: int = 0,
        also_ok: tuple[int, ...] = (),
    ) -> Response:
        """The 2xx (or ``also_ok``) answer; any other raises ``_status_error``'s error."""
        try:
            response = request(
                method,
                url,
                headers={**self._headers, **headers},
                body=body,
                timeout_s=self._cfg.timeout_s,
                max_response_bytes=MAX_ANSWER_BYTES,
                truncate=True,
                raise_for_status=False,
                follow_redirects=False,
                verify_tls=self._cfg.verify_tls,
                secrets=self._secrets,
            )
        except HttpError as exc:
            raise network_error(exc) from None
        if not response.ok and response.status not in also_ok:
            raise self._status_error(response, url, lines)
        return response

    def _status_error(self, response: Response, url: str, lines: int) -> DeliveryError:
        raise NotImplementedError


def detail_of(response: Response) -> str:
    """The server's explanation: the JSON body's message, else its header, else the body."""
    header = response.headers.get("X-Influxdb-Error")
    return explanation(response) or (str(header) if header else response.text().strip())
