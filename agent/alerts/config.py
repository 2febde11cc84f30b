"""The ``[alerts]`` config: rules, webhooks and where alert state is kept.

Decoded by ``agent.config`` like every other table; ``validate_alerts`` raises
``ValueError`` naming the key (``alerts.rules[0].metric``), which the loader turns into
a ``ConfigError`` (exit 2 at start).
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
from dataclasses import dataclass, field

from agent.redaction import redact_url

#: What a rule can watch; the scope of each (per host, per app, per sensor or sink).
HOST_METRICS = ("host_watts", "gco2_per_kwh", "spool_bytes")
APP_METRICS = ("app_watts", "sci", "sci_change_pct")
PART_METRICS = ("staleness_s",)  # one scope per sensor, sink and the sampling loop
METRICS = HOST_METRICS + APP_METRICS + PART_METRICS
OPS = (">", ">=", "<", "<=")
FORMATS = ("json", "slack", "alertmanager")
#: Windows longer than a day would hold too many intervals in memory.
MAX_WINDOW_S = 86_400.0
SECRET_PREFIX = "whsec_"

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$")
_SEVERITY = re.compile(r"^[a-z0-9_-]{1,32}$")
_HEADER = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")
#: Headers the agent sets itself (content, signature); a configured one would break them.
_RESERVED_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "host",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)


@dataclass(frozen=True)
class AlertRuleConfig:
    """One ``[[alerts.rules]]``: a condition on a metric, per scope, and who hears of it."""

    name: str
    metric: str
    threshold: float
    op: str = ">"
    window_s: float = 300.0  # the metric over this window (SCI: Σ carbon ÷ Σ units)
    for_s: float = 0.0  # the condition holds this long before the alert fires
    keep_firing_for_s: float = 60.0  # and stays clear this long before it resolves
    clear_threshold: float | None = None  # hysteresis: clear only past this (default threshold)
    repeat_s: float = 0.0  # a reminder while firing, every repeat_s; 0: none
    app: str | None = None  # glob over app names (app metrics only); unset: every app
    host: str | None = None  # glob: the rule applies only on hosts that match
    severity: str = "warning"
    webhooks: tuple[str, ...] = ()  # [[alerts.webhooks]] names
    summary: str | None = None  # one line for humans; a default names metric and threshold


@dataclass(frozen=True)
class WebhookConfig:
    """One ``[[alerts.webhooks]]`` destination."""

    name: str
    url: str = field(repr=False)  # a Slack-style URL is itself a credential: never logged
    format: str = "json"  # "json", "slack" or "alertmanager"
    secret: str | None = field(default=None, repr=False)  # whsec_…: Standard Webhooks signing
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # e.g. Authorization
    timeout_s: float = 10.0  # one attempt, connect to last byte


@dataclass(frozen=True)
class AlertsConfig:
    """Alert rules, their destinations, and the folder their state and outbox live in."""

    state_dir: str = "var/alerts"  # rule states and the outbox, kept across restarts
    dashboard_url: str | None = None  # linked from every notification when set
    max_age_s: float = 86_400.0  # an undelivered notification is dropped (logged) after this
    rules: tuple[AlertRuleConfig, ...] = ()
    webhooks: tuple[WebhookConfig, ...] = ()


def validate_alerts(cfg: AlertsConfig, prefix: str = "alerts") -> None:
    """Check what types cannot; ``ValueError`` names the key and the cause."""
    if not cfg.state_dir.strip():
        raise ValueError(f"{prefix}.state_dir: must not be empty")
    if cfg.dashboard_url is not None:
        _http_url(f"{prefix}.dashboard_url", cfg.dashboard_url)
    if not cfg.max_age_s > 0:
        raise ValueError(f"{prefix}.max_age_s: must be greater than 0, got {cfg.max_age_s}")
    names: set[str] = set()
    for i, hook in enumerate(cfg.webhooks):
        _validate_webhook(hook, f"{prefix}.webhooks[{i}]", names)
        names.add(hook.name)
    seen: set[str] = set()
    for i, rule in enumerate(cfg.rules):
        _validate_rule(rule, f"{prefix}.rules[{i}]", names, seen)
        seen.add(rule.name)


def _validate_webhook(hook: WebhookConfig, where: str, names: set[str]) -> None:
    if not _NAME.match(hook.name):
        raise ValueError(
            f"{where}.name: {hook.name!r} must be 1-64 letters, digits, '_', '.', ':' or '-'"
        )
    if hook.name in names:
        raise ValueError(f"{where}.name: {hook.name!r} is defined twice")
    _http_url(f"{where}.url", hook.url, shown=False)
    if hook.format not in FORMATS:
        raise ValueError(
            f"{where}.format: unknown format {hook.format!r} (one of {', '.join(FORMATS)})"
        )
    if hook.secret is not None:
        secret_key(hook.secret, f"{where}.secret")
    for header, value in hook.headers.items():
        if not _HEADER.match(header):
            raise ValueError(f"{where}.headers: {header!r} is not a valid header name")
        if header.lower() in _RESERVED_HEADERS:
            raise ValueError(f"{where}.headers.{header}: set by the agent, cannot be configured")
        if "\r" in value or "\n" in value:
            raise ValueError(f"{where}.headers.{header}: must be one line (value hidden)")
    if not hook.timeout_s > 0:
        raise ValueError(f"{where}.timeout_s: must be greater than 0, got {hook.timeout_s}")


def _validate_rule(rule: AlertRuleConfig, where: str, webhooks: set[str], seen: set[str]) -> None:
    if not _NAME.match(rule.name):
        raise ValueError(
            f"{where}.name: {rule.name!r} must be 1-64 letters, digits, '_', '.', ':' or '-'"
        )
    if rule.name in seen:
        raise ValueError(f"{where}.name: {rule.name!r} is defined twice")
    if rule.metric not in METRICS:
        raise ValueError(
            f"{where}.metric: unknown metric {rule.metric!r} (one of {', '.join(METRICS)})"
        )
    if rule.op not in OPS:
        raise ValueError(f"{where}.op: must be one of {' '.join(OPS)}, got {rule.op!r}")
    if not 0 < rule.window_s <= MAX_WINDOW_S:
        raise ValueError(
            f"{where}.window_s: must be greater than 0 and at most {MAX_WINDOW_S:g} (one day),"
            f" got {rule.window_s:g}"
        )
    for key in ("for_s", "keep_firing_for_s", "repeat_s"):
        if getattr(rule, key) < 0:
            raise ValueError(f"{where}.{key}: must be 0 or more, got {getattr(rule, key):g}")
    if rule.app is not None and rule.metric not in APP_METRICS:
        raise ValueError(
            f"{where}.app: metric {rule.metric} is not per app"
            f" (app applies to {', '.join(APP_METRICS)})"
        )
    if not _SEVERITY.match(rule.severity):
        raise ValueError(
            f"{where}.severity: {rule.severity!r} must be 1-32 lower-case letters, digits,"
            " '_' or '-' (e.g. info, warning, critical)"
        )
    for name in rule.webhooks:
        if name not in webhooks:
            known = ", ".join(sorted(webhooks)) or "none defined"
            raise ValueError(f"{where}.webhooks: unknown webhook {name!r} ({known})")
    if len(set(rule.webhooks)) != len(rule.webhooks):
        raise ValueError(f"{where}.webhooks: a webhook is listed twice")
    clear = rule.clear_threshold
    if clear is not None:
        above = rule.op in (">", ">=")
        if (above and clear > rule.threshold) or (not above and clear < rule.threshold):
            side = "at or below" if above else "at or above"
            raise ValueError(
                f"{where}.clear_threshold: must be {side} threshold {rule.threshold:g}"
                f" for op {rule.op!r}, got {clear:g}"
            )


def secret_key(secret: str, key: str = "secret") -> bytes:
    """The HMAC key of a Standard Webhooks secret ``whsec_<base64>``; never shows it."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"{key}: expected {SECRET_PREFIX}<base64> (value hidden)")
    try:
        raw = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            f"{key}: the part after {SECRET_PREFIX} is not base64 (value hidden)"
        ) from None
    if not 24 <= len(raw) <= 64:
        raise ValueError(f"{key}: must hold 24 to 64 random bytes, got {len(raw)} (value hidden)")
    return raw


def _http_url(key: str, url: str, shown: bool = True) -> None:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        got = repr(redact_url(url)) if shown else "(value hidden)"
        raise ValueError(f"{key}: expected an http:// or https:// URL, got {got}")
