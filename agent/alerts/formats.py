"""A notification as the bytes one webhook format expects, rendered at each attempt.

- ``json`` (the default): a flat, versioned object (``version`` 1, documented field by
  field in docs/alerts.md); fields are only ever added within a version.
- ``slack``: a Slack incoming-webhook body, ``{"text": "…"}``: one line a person reads
  (Mattermost and others take the same body).
- ``alertmanager``: a Prometheus Alertmanager's ``POST /api/v2/alerts``: a list of one
  alert whose labels identify it (``alertname``, ``host``, ``app``, ``part``,
  ``severity``, ``metric``), so a re-post updates the same alert. While firing,
  ``endsAt`` is the attempt's time plus ``ALERTMANAGER_HOLD_S``: the alert stays active
  only as long as the agent keeps re-posting it (every 60 s), and resolves by itself
  if the agent goes away, as Prometheus does with its 4× resend rule.

Every body goes with ``Content-Type: application/json``, a ``User-Agent``, the
webhook's configured headers (``user:password@`` in the URL becomes a Basic
``Authorization`` header, unless one is configured) and the Standard Webhooks headers
(signed when the webhook has a secret). The timestamp and ``endsAt`` are the
attempt's, so a retry an hour later is not refused as a stale replay.
"""

from __future__ import annotations

import base64
import json
import math
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent.alerts.config import WebhookConfig
from agent.alerts.model import FIRING, RESOLVED, Notification
from agent.alerts.signing import webhook_headers
from agent.httpclient import user_agent
from sci import humanize

#: The ``version`` of the ``json`` body; bumped only when a field changes meaning.
SCHEMA_VERSION = 1
#: How long Alertmanager keeps a firing alert active without a re-post (seconds):
#: five times the engine's 60 s re-post interval, so a lost post or two do not resolve it.
ALERTMANAGER_HOLD_S = 300.0
ALERTMANAGER_PATH = "/api/v2/alerts"

#: Each metric's unit, as shown to people (json ``unit`` too); an SCI names its
#: functional unit when the app has one (``gCO2e/request``).
UNITS = {
    "host_watts": "W",
    "app_watts": "W",
    "sci": "gCO2e/unit",
    "gco2_per_kwh": "gCO2/kWh",
    "staleness_s": "s",
    "spool_bytes": "bytes",
    "sci_change_pct": "%",
}
_OP_WORDS = {">": "above", ">=": "at or above", "<": "below", "<=": "at or below"}


@dataclass(frozen=True)
class Rendered:
    """One attempt's request: where, what and with which headers."""

    url: str
    body: bytes
    headers: dict[str, str]


def render(n: Notification, hook: WebhookConfig, now: float) -> Rendered:
    """``n`` in ``hook.format`` for an attempt at Unix time ``now``."""
    renderer = _RENDERERS.get(hook.format)
    if renderer is None:
        raise ValueError(f"webhook {hook.name}: unknown format {hook.format!r}")
    url, payload = renderer(n, hook, now)
    url, basic = _basic_auth(url)
    body = json.dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8")
    headers = {"Content-Type": "application/json", "User-Agent": user_agent()}
    if basic:
        headers["Authorization"] = basic
    headers |= hook.headers  # a configured Authorization wins
    headers |= webhook_headers(hook.secret, n.id, int(now), body)
    return Rendered(url, body, headers)


def _basic_auth(url: str) -> tuple[str, str | None]:
    """``url`` without ``user:password@``, and that as a Basic ``Authorization`` value."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url, None
    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    netloc = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), f"Basic {token}"


# -- the three formats ---------------------------------------------------------------------


def json_body(n: Notification, now: float) -> dict[str, Any]:
    """The ``json`` format's object (schema version ``SCHEMA_VERSION``)."""
    return {
        "version": SCHEMA_VERSION,
        "id": n.id,
        "key": n.key,
        "alert": n.alert,
        "state": n.state,
        "severity": n.severity,
        "host": n.host,
        "app": n.app,
        "part": n.part,
        "metric": n.metric,
        "op": n.op,
        "value": _finite(n.value),
        "threshold": _finite(n.threshold),
        "unit": unit_of(n.metric, n.unit),
        "window_s": n.window_s,
        "started_at": rfc3339(n.started_at),
        "ended_at": rfc3339(n.ended_at) if n.ended_at is not None else None,
        "sent_at": rfc3339(now),
        "summary": n.summary,
        "text": describe(n),
        "dashboard_url": n.dashboard_url,
        "reminder": n.reminder,
        "test": n.test,
    }


def slack_text(n: Notification) -> str:
    """The Slack line: a marker, the description, and a dashboard link when set."""
    if n.test:
        mark = ":information_source: [TEST]"
    elif n.state == RESOLVED:
        mark = ":white_check_mark: [RESOLVED]"
    elif n.reminder:
        mark = ":rotating_light: [STILL FIRING]"
    else:
        mark = ":rotating_light: [FIRING]"
    text = f"{mark} {_slack_escape(describe(n, with_state=False))}"
    if n.dashboard_url:
        text += f" <{n.dashboard_url}|Dashboard>"
    return text


def alertmanager_alert(n: Notification, now: float) -> dict[str, Any]:
    """One ``postableAlert`` of Alertmanager's API v2."""
    labels = {"alertname": n.alert, "host": n.host}
    if n.app is not None:
        labels["app"] = n.app
    if n.part is not None:
        labels["part"] = n.part
    labels |= {"severity": n.severity, "metric": n.metric}
    if n.state == RESOLVED:
        ends = n.ended_at if n.ended_at is not None else now
    else:
        ends = now + ALERTMANAGER_HOLD_S
    alert: dict[str, Any] = {
        "labels": labels,
        "annotations": {
            "summary": n.summary,
            "description": describe(n),
            "value": human(n.metric, n.value, n.unit),
            "threshold": human(n.metric, n.threshold, n.unit),
        },
        "startsAt": rfc3339(n.started_at),
        "endsAt": rfc3339(max(ends, n.started_at)),
    }
    if n.dashboard_url:
        alert["generatorURL"] = n.dashboard_url
    return alert


def alertmanager_url(url: str) -> str:
    """``url`` ending in ``/api/v2/alerts`` (added unless there; a trailing / is fine)."""
    parts = urllib.parse.urlsplit(url)
    path = parts.path.rstrip("/")
    if not path.endswith(ALERTMANAGER_PATH):
        path += ALERTMANAGER_PATH
    return urllib.parse.urlunsplit(parts._replace(path=path))


def _json(n: Notification, hook: WebhookConfig, now: float) -> tuple[str, Any]:
    return hook.url, json_body(n, now)


def _slack(n: Notification, hook: WebhookConfig, now: float) -> tuple[str, Any]:
    return hook.url, {"text": slack_text(n)}


def _alertmanager(n: Notification, hook: WebhookConfig, now: float) -> tuple[str, Any]:
    return alertmanager_url(hook.url), [alertmanager_alert(n, now)]


_RENDERERS: dict[str, Callable[[Notification, WebhookConfig, float], tuple[str, Any]]] = {
    "json": _json,
    "slack": _slack,
    "alertmanager": _alertmanager,
}


# -- text for people -------------------------------------------------------------------------


def describe(n: Notification, with_state: bool = True) -> str:
    """One plain line: alert, state, severity, scope, value against threshold, summary."""
    state = "test" if n.test else ("still firing" if n.reminder and n.state == FIRING else n.state)
    state = f" {state}" if with_state else ""
    scope = f"host {n.host}"
    if n.app is not None:
        scope += f", app {n.app}"
    if n.part is not None:
        scope += f", {n.part}"
    value = human(n.metric, n.value, n.unit)
    limit = human(n.metric, n.threshold, n.unit)
    window = duration(n.window_s)
    line = f"{n.alert}{state} ({n.severity}) on {scope}: {n.metric} {value}"
    if n.state == RESOLVED and not n.test:
        line += f", back within threshold {limit} (over {window})"
    else:
        line += f", {_OP_WORDS.get(n.op, n.op)} threshold {limit} (over {window})"
    summary = n.summary.strip()
    return f"{line}. {summary}" if summary else f"{line}."


def unit_of(metric: str, functional_unit: str | None = None) -> str:
    """The metric's unit; an SCI's names the functional unit when there is one."""
    unit = UNITS.get(metric, "")
    if metric == "sci" and functional_unit:
        return f"gCO2e/{functional_unit}"
    return unit


def human(metric: str, value: float | None, functional_unit: str | None = None) -> str:
    """``value`` with its unit for people: ``84.2 W``, ``+23.5 %``, ``12.3 mgCO2e/request``."""
    if value is None or not math.isfinite(value):
        return "no data"
    if metric == "sci_change_pct":
        return f"{'+' if value > 0 else ''}{number(value)} %"
    if metric == "staleness_s":
        return duration(value)
    if metric == "spool_bytes":
        return _bytes(value)
    if metric == "sci":  # SI prefixes: 17.7 µgCO2e/request, never 0.0000177
        grams = humanize.grams(value)  # "17.7 µg"
        return f"{grams}CO2e/{functional_unit or 'unit'}"
    unit = unit_of(metric, functional_unit)
    return f"{number(value)} {unit}" if unit else number(value)


def number(value: float) -> str:
    """Three significant digits or so, without trailing zeros: 84.2, 0.0123, 1,234."""
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 1:
        decimals = 0 if size >= 100 else 1 if size >= 10 else 2
        text = f"{value:.{decimals}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    if size == 0:
        return "0"
    return humanize.number(value, 3)  # 0.0000177, never 1.77e-05


def duration(seconds: float) -> str:
    """``45 s``, ``5 min``, ``1.5 h``, ``2 d``."""
    for size, unit in ((86_400.0, "d"), (3600.0, "h"), (60.0, "min")):
        if abs(seconds) >= 2 * size or (abs(seconds) >= size and seconds % size == 0):
            return f"{number(seconds / size)} {unit}"
    return f"{number(seconds)} s"


def rfc3339(unix: float) -> str:
    """Unix time as an RFC 3339 UTC string to the second: ``2026-11-30T20:46:52Z``."""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _bytes(value: float) -> str:
    for size, unit in ((1024.0**3, "GiB"), (1024.0**2, "MiB"), (1024.0, "KiB")):
        if abs(value) >= size:
            return f"{number(value / size)} {unit}"
    return f"{number(value)} bytes"


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _slack_escape(text: str) -> str:
    """Slack's three control characters as entities (a summary may hold them)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
