"""The ``[influxdb]`` sink: InfluxDB 1.x or 2.x-compatible, behind a durable spool.

The sink itself is built by ``exporters.influx_sink`` (imported only when the section
is enabled; the v2 path imports influxdb-client only then).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.config_check import ConfigError
from agent.redaction import redact_url
from exporters.sinks import SINKS

if TYPE_CHECKING:
    from agent.config import Config
    from exporters.base import Sink

INFLUX_APIS = ("v1", "v2")


@dataclass(frozen=True)
class InfluxConfig:
    """An InfluxDB 1.x (``/write``) or 2.x-compatible (``/api/v2/write``) server."""

    enabled: bool = False
    url: str = "http://127.0.0.1:8086"
    api: str = "v2"  # "v2": token/org/bucket (InfluxDB 2, 3, Cloud, VictoriaMetrics); "v1"
    # api = "v2"
    token: str | None = None
    org: str | None = None
    bucket: str | None = None
    # api = "v1"
    database: str | None = None
    retention_policy: str | None = None  # unset: the database's default
    username: str | None = None
    password: str | None = None
    # delivery
    batch_size: int = 5000  # lines per request
    flush_interval_s: float = 1.0
    timeout_s: float = 10.0
    gzip: bool = True
    verify_tls: bool = True
    top_processes: int = 20  # per-process points kept per interval, plus one "other"


def validate_influx(cfg: InfluxConfig, prefix: str = "influxdb") -> None:
    """Check values beyond their types; raise ``ValueError`` naming the key.

    Shapes (url, api, numbers) are checked even while disabled; what a server needs
    (bucket, org, database) only once ``enabled``: a half-written section that is off
    does not stop the agent.
    """
    if cfg.api not in INFLUX_APIS:
        raise ValueError(f"{prefix}.api: must be v1 or v2, got {cfg.api!r}")
    shown = redact_url(cfg.url)
    try:
        parts = urllib.parse.urlsplit(cfg.url)
    except ValueError as exc:  # an unclosed IPv6 bracket
        raise ValueError(f"{prefix}.url: not a URL ({exc}): {shown!r}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{prefix}.url: must start with http:// or https://, got {shown!r}")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number or out of range
    except ValueError:
        raise ValueError(f"{prefix}.url: invalid port in {shown!r}") from None
    if not parts.hostname:
        raise ValueError(f"{prefix}.url: no host in {shown!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"{prefix}.url: must not carry a query or fragment, got {shown!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{prefix}.url: put credentials in token or username/password")
    if cfg.batch_size < 1:
        raise ValueError(f"{prefix}.batch_size: must be 1 or more, got {cfg.batch_size}")
    for key in ("flush_interval_s", "timeout_s"):
        value = getattr(cfg, key)
        if not value > 0:
            raise ValueError(f"{prefix}.{key}: must be greater than 0, got {value}")
    if cfg.top_processes < 0:
        raise ValueError(f"{prefix}.top_processes: must be 0 or more")
    other = "v1" if cfg.api == "v2" else "v2"
    other_keys = (
        ("database", "retention_policy", "username", "password")
        if cfg.api == "v2"
        else ("token", "org", "bucket")
    )
    for key in other_keys:
        if getattr(cfg, key) is not None:
            raise ValueError(f'{prefix}.{key}: only used with api = "{other}"')
    if cfg.password is not None and not cfg.username:
        raise ValueError(f"{prefix}.username: required when password is set")
    if not cfg.enabled:
        return
    required = ("org", "bucket") if cfg.api == "v2" else ("database",)
    for key in required:
        if not getattr(cfg, key):
            raise ValueError(f'{prefix}.{key}: required by api = "{cfg.api}"')


def _validate(config: Config) -> None:
    try:
        validate_influx(config.influxdb)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _build_influx(config: Config) -> Sink | None:
    from exporters.influx_sink import build_influx_sink

    cfg: InfluxConfig = config.influxdb
    if not cfg.enabled:
        return None
    return build_influx_sink(cfg, config.spool, config.max_process_names_per_day)


SINKS.register("influxdb", _build_influx, section=InfluxConfig, validate=_validate, order=30)
