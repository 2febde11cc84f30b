"""Alerts into a real Prometheus Alertmanager (Debian's ``prometheus-alertmanager``):
held while firing, one alert across re-posts, gone once resolved."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from agent.alerts import delivery
from agent.alerts.config import WebhookConfig
from agent.alerts.delivery import Deliverer, send_now
from agent.alerts.formats import ALERTMANAGER_HOLD_S
from agent.alerts.model import RESOLVED, Notification, new_message_id
from agent.alerts.outbox import Outbox
from devtools.servers import AlertmanagerServer
from tests.test_alert_formats import notification


def fresh(**changes: Any) -> Notification:
    now = time.time()
    return notification(**{"webhook": "am", "created_at": now, "started_at": now - 120, **changes})


def ours(am: AlertmanagerServer, alertname: str) -> list[dict[str, Any]]:
    return [a for a in am.alerts() if a["labels"].get("alertname") == alertname]


def unix(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "outbox.db")
    yield box
    box.close()


def test_firing_is_held_then_resolved(alertmanager: AlertmanagerServer, outbox: Outbox) -> None:
    hook = WebhookConfig("am", alertmanager.url + "/", format="alertmanager")
    d = Deliverer(outbox, [hook], 60)
    d.start()
    try:
        firing = fresh(alert="sci-high")
        outbox.put(firing)
        d.wake()
        deadline = time.monotonic() + 10
        while not ours(alertmanager, "sci-high"):
            assert time.monotonic() < deadline, "the alert never showed in Alertmanager"
            time.sleep(0.05)
        (alert,) = ours(alertmanager, "sci-high")
        assert alert["status"]["state"] == "active"
        assert alert["labels"] == {
            "alertname": "sci-high", "host": "web-1", "app": "checkout",
            "severity": "warning", "metric": "sci",
        }
        assert alert["annotations"]["summary"] == "SCI per request is too high"
        assert alert["annotations"]["value"] == "12.3 mgCO2e/unit"
        assert alert["annotations"]["threshold"] == "10 mgCO2e/unit"
        assert alert["generatorURL"] == firing.dashboard_url
        assert abs(unix(alert["startsAt"]) - firing.started_at) < 1
        assert abs(unix(alert["endsAt"]) - (time.time() + ALERTMANAGER_HOLD_S)) < 10

        gone = dataclasses.replace(
            firing, id=new_message_id(), state=RESOLVED, ended_at=time.time(),
            created_at=time.time(), value=0.008,
        )
        outbox.put(gone, supersede=True)
        d.wake()
        deadline = time.monotonic() + 10
        while ours(alertmanager, "sci-high"):
            assert time.monotonic() < deadline, "the resolved alert is still listed"
            time.sleep(0.05)
        assert d.stats()[0].sent == 2 and d.stats()[0].failed_attempts == 0
    finally:
        d.stop(1)


def test_a_repost_while_firing_updates_one_alert(alertmanager: AlertmanagerServer) -> None:
    hook = WebhookConfig("am", alertmanager.url + "/api/v2/alerts", format="alertmanager")
    first = fresh(alert="power-high", metric="host_watts", app=None, value=84.2, threshold=80)
    assert send_now(first, hook, time.time()).ok
    later = dataclasses.replace(first, id=new_message_id(), reminder=True, value=91.0)
    assert send_now(later, hook, time.time() + 1).ok
    (alert,) = ours(alertmanager, "power-high")  # the same labels: one alert, not two
    assert alert["status"]["state"] == "active"
    assert alert["annotations"]["value"] == "91 W"  # the newest annotations
    assert "app" not in alert["labels"]
    # Another scope of the same rule is another alert.
    elsewhere = dataclasses.replace(first, id=new_message_id(), host="web-2")
    assert send_now(elsewhere, hook, time.time()).ok
    assert sorted(a["labels"]["host"] for a in ours(alertmanager, "power-high")) == [
        "web-1", "web-2",
    ]


def test_odd_times_and_the_test_notification_are_accepted(
    alertmanager: AlertmanagerServer,
) -> None:
    hook = WebhookConfig("am", alertmanager.url, format="alertmanager")
    now = time.time()
    # A clock step made ended_at earlier than started_at: endsAt is clamped, not refused.
    odd = fresh(alert="odd", state=RESOLVED, ended_at=now - 300)
    answer = send_now(odd, hook, now)
    assert answer.ok, answer
    assert not ours(alertmanager, "odd")
    test = delivery.test_notification("web-1", hook, None, now)
    answer = send_now(test, hook, now)
    assert answer.ok, answer
    (alert,) = ours(alertmanager, "sci-agent-test")
    assert alert["labels"]["severity"] == "info"
