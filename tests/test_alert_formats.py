"""Alert formats and signing: the bytes each webhook format gets, checked field by field,
and Standard Webhooks signatures checked with the official library."""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from agent.alerts.config import WebhookConfig
from agent.alerts.formats import (
    ALERTMANAGER_HOLD_S,
    SCHEMA_VERSION,
    alertmanager_url,
    duration,
    human,
    number,
    render,
    rfc3339,
)
from agent.alerts.model import FIRING, RESOLVED, Notification, new_message_id
from agent.alerts.signing import sign, webhook_headers
from agent.httpclient import user_agent

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"x" * 32).decode()
T0 = 1_790_000_000.0  # 2026-09-21T14:13:20Z


def notification(**changes: Any) -> Notification:
    """A firing SCI alert on app checkout, with ``changes``."""
    base = Notification(
        id=new_message_id(),
        webhook="hook",
        key="sci-high/app=checkout",
        alert="sci-high",
        state=FIRING,
        severity="warning",
        host="web-1",
        app="checkout",
        part=None,
        metric="sci",
        op=">",
        value=0.0123,
        threshold=0.01,
        window_s=300.0,
        started_at=T0 - 120,
        ended_at=None,
        created_at=T0,
        summary="SCI per request is too high",
        dashboard_url="https://dash.example/app?app=checkout",
    )
    return dataclasses.replace(base, **changes)


def resolved(n: Notification, at: float) -> Notification:
    return dataclasses.replace(
        n, id=new_message_id(), state=RESOLVED, ended_at=at, created_at=at, value=0.008
    )


# -- signing ---------------------------------------------------------------------------------


def test_signature_is_what_the_official_library_computes_and_verifies() -> None:
    import time

    body = b'{"alert":"x"}'
    now = int(time.time())
    got = sign(SECRET, "msg_1", now, body)
    assert got.startswith("v1,")
    headers = webhook_headers(SECRET, "msg_1", now, body)
    assert headers == {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(now),
        "webhook-signature": got,
    }
    assert Webhook(SECRET).verify(body, headers) == {"alert": "x"}
    with pytest.raises(WebhookVerificationError):
        Webhook(OTHER_SECRET).verify(body, headers)
    with pytest.raises(WebhookVerificationError):  # a changed body
        Webhook(SECRET).verify(b'{"alert":"y"}', headers)


def test_no_secret_no_signature_but_id_and_timestamp() -> None:
    headers = webhook_headers(None, "msg_2", 1700000000, b"{}")
    assert headers == {"webhook-id": "msg_2", "webhook-timestamp": "1700000000"}


def test_signature_known_answer() -> None:
    """A fixed case computed independently of both codes (hmac over the spec's string)."""
    import hashlib
    import hmac

    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    want = hmac.new(key, b"msg_a.1700000000.hello", hashlib.sha256).digest()
    assert sign(SECRET, "msg_a", 1700000000, b"hello") == "v1," + base64.b64encode(want).decode()


# -- rendering, every format -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "slack", "alertmanager"])
def test_every_format_is_json_with_our_headers(fmt: str) -> None:
    hook = WebhookConfig(
        "hook", "https://example.invalid/x", format=fmt, secret=SECRET,
        headers={"Authorization": "Bearer tok-123456"},
    )
    n = notification()
    out = render(n, hook, T0 + 5)
    json.loads(out.body)
    assert out.headers["Content-Type"] == "application/json"
    assert out.headers["User-Agent"] == user_agent() and user_agent().startswith("sci-agent/")
    assert out.headers["Authorization"] == "Bearer tok-123456"
    assert out.headers["webhook-id"] == n.id
    assert out.headers["webhook-timestamp"] == str(int(T0 + 5))
    assert out.headers["webhook-signature"] == sign(SECRET, n.id, int(T0 + 5), out.body)


def test_each_attempt_renders_at_its_own_time_with_the_same_id() -> None:
    hook = WebhookConfig("hook", "https://example.invalid/x", format="alertmanager")
    n = notification()
    first, later = render(n, hook, T0), render(n, hook, T0 + 3600)
    assert first.headers["webhook-id"] == later.headers["webhook-id"] == n.id
    assert first.headers["webhook-timestamp"] != later.headers["webhook-timestamp"]
    assert json.loads(later.body)[0]["endsAt"] == rfc3339(T0 + 3600 + ALERTMANAGER_HOLD_S)


def test_json_body_has_every_documented_field() -> None:
    hook = WebhookConfig("hook", "https://example.invalid/x")
    n = notification()
    body = json.loads(render(n, hook, T0 + 1).body)
    assert body == {
        "version": SCHEMA_VERSION,
        "id": n.id,
        "key": "sci-high/app=checkout",
        "alert": "sci-high",
        "state": "firing",
        "severity": "warning",
        "host": "web-1",
        "app": "checkout",
        "part": None,
        "metric": "sci",
        "op": ">",
        "value": 0.0123,
        "threshold": 0.01,
        "unit": "gCO2e/unit",
        "window_s": 300.0,
        "started_at": "2026-09-21T14:11:20Z",
        "ended_at": None,
        "sent_at": "2026-09-21T14:13:21Z",
        "summary": "SCI per request is too high",
        "text": body["text"],
        "dashboard_url": "https://dash.example/app?app=checkout",
        "reminder": False,
        "test": False,
    }
    assert "12.3 mgCO2e/unit" in body["text"]
    gone = json.loads(render(resolved(n, T0 + 600), hook, T0 + 601).body)
    assert gone["state"] == "resolved"
    assert gone["ended_at"] == "2026-09-21T14:23:20Z"


def test_slack_text_reads_well_with_units() -> None:
    hook = WebhookConfig("hook", "https://hooks.slack.invalid/T/B/x", format="slack")
    body = json.loads(render(notification(), hook, T0).body)
    assert list(body) == ["text"]
    text = body["text"]
    assert "\n" not in text
    assert "[FIRING]" in text and "sci-high" in text and "web-1" in text and "checkout" in text
    assert "12.3 mgCO2e/unit" in text and "above threshold 10 mgCO2e/unit" in text
    assert "over 5 min" in text
    assert text.endswith("<https://dash.example/app?app=checkout|Dashboard>")
    watts = notification(metric="host_watts", app=None, value=84.2468, threshold=80.0)
    text = json.loads(render(watts, hook, T0).body)["text"]
    assert "84.2 W" in text and "80 W" in text
    pct = notification(metric="sci_change_pct", value=23.456, threshold=10.0, dashboard_url=None)
    text = json.loads(render(pct, hook, T0).body)["text"]
    assert "+23.5 %" in text and "+10 %" in text and "Dashboard" not in text
    none = json.loads(render(notification(value=None), hook, T0).body)["text"]
    assert "None" not in none and "no data" in none
    gone = json.loads(render(resolved(notification(), T0 + 60), hook, T0 + 60).body)["text"]
    assert "[RESOLVED]" in gone and "8 mgCO2e/unit" in gone


def test_slack_escapes_its_control_characters() -> None:
    hook = WebhookConfig("hook", "https://hooks.slack.invalid/x", format="slack")
    n = notification(summary="p95 <b> & co >", dashboard_url=None)
    text = json.loads(render(n, hook, T0).body)["text"]
    assert "p95 &lt;b&gt; &amp; co &gt;" in text
    assert "<" not in text and ">" not in text


@pytest.mark.parametrize(
    ("value", "want"),
    [(0.0123, "0.0123"), (84.2468, "84.2"), (84.0, "84"), (1234.5, "1,234"), (0.0, "0"),
     (5.5, "5.5"), (-3.14159, "-3.14"), (150.4, "150")],
)
def test_numbers_for_people(value: float, want: str) -> None:
    assert number(value) == want


@pytest.mark.parametrize(
    ("metric", "value", "want"),
    [("app_watts", 84.2468, "84.2 W"), ("sci_change_pct", 23.456, "+23.5 %"),
     ("sci_change_pct", -5.0, "-5 %"), ("gco2_per_kwh", 412.3, "412 gCO2/kWh"),
     ("staleness_s", 95.0, "95 s"), ("staleness_s", 600.0, "10 min"),
     ("spool_bytes", 12_345_678.0, "11.8 MiB"), ("sci", None, "no data"),
     ("sci", float("nan"), "no data")],
)
def test_values_for_people(metric: str, value: float | None, want: str) -> None:
    assert human(metric, value) == want


def test_durations() -> None:
    assert [duration(s) for s in (30, 60, 90, 300, 3600, 5400, 7200, 86400)] == [
        "30 s", "1 min", "90 s", "5 min", "1 h", "90 min", "2 h", "1 d",
    ]


# -- Alertmanager ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "want"),
    [
        ("http://am:9093", "http://am:9093/api/v2/alerts"),
        ("http://am:9093/", "http://am:9093/api/v2/alerts"),
        ("http://am:9093/api/v2/alerts", "http://am:9093/api/v2/alerts"),
        ("http://am:9093/api/v2/alerts/", "http://am:9093/api/v2/alerts"),
        ("https://gw.example/alertmanager/", "https://gw.example/alertmanager/api/v2/alerts"),
    ],
)
def test_alertmanager_url(url: str, want: str) -> None:
    assert alertmanager_url(url) == want


def test_alertmanager_alert_labels_annotations_and_times() -> None:
    hook = WebhookConfig("am", "http://am:9093", format="alertmanager")
    n = notification()
    out = render(n, hook, T0 + 10)
    assert out.url == "http://am:9093/api/v2/alerts"
    (alert,) = json.loads(out.body)
    assert alert["labels"] == {
        "alertname": "sci-high", "host": "web-1", "app": "checkout",
        "severity": "warning", "metric": "sci",
    }
    assert alert["annotations"]["summary"] == "SCI per request is too high"
    assert alert["annotations"]["value"] == "12.3 mgCO2e/unit"
    assert alert["annotations"]["threshold"] == "10 mgCO2e/unit"
    assert "sci-high" in alert["annotations"]["description"]
    assert alert["startsAt"] == rfc3339(T0 - 120)
    assert alert["endsAt"] == rfc3339(T0 + 10 + ALERTMANAGER_HOLD_S)
    assert alert["generatorURL"] == n.dashboard_url
    (gone,) = json.loads(render(resolved(n, T0 + 50), hook, T0 + 400).body)
    assert gone["endsAt"] == rfc3339(T0 + 50)  # when it resolved, not when it was sent
    part = notification(metric="staleness_s", app=None, part="sink:influxdb", dashboard_url=None)
    (stale,) = json.loads(render(part, hook, T0).body)
    assert stale["labels"] == {
        "alertname": "sci-high", "host": "web-1", "part": "sink:influxdb",
        "severity": "warning", "metric": "staleness_s",
    }
    assert "generatorURL" not in stale


def test_secret_never_reaches_the_body() -> None:
    hook = WebhookConfig("hook", "https://example.invalid/x", secret=SECRET)
    out = render(notification(), hook, T0)
    assert SECRET.encode() not in out.body
    assert not any(SECRET in v for v in out.headers.values())
