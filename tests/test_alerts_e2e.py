"""Alerts end to end: the real agent, a real receiver verifying signatures, restarts, reloads."""

from __future__ import annotations

import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.alerts.config import AlertRuleConfig, AlertsConfig, WebhookConfig
from agent.alerts.delivery import Deliverer
from agent.alerts.engine import AlertEngine
from agent.alerts.outbox import Outbox
from devtools.servers import AlertmanagerServer, Answer, WebhookReceiver
from tests.test_agent_run import AGENT, write_config
from tests.test_alert_engine import interval

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def alert_config(url: str, threshold: float, webhook_extra: str = "") -> str:
    return f"""
[alerts]
state_dir = "{{dir}}/alerts"
dashboard_url = "http://dashboard.example:8501"
[[alerts.webhooks]]
name = "team"
url = "{url}"
secret = "{SECRET}"
{webhook_extra}
[[alerts.rules]]
name = "host-power"
metric = "host_watts"
threshold = {threshold}
window_s = 2
keep_firing_for_s = 0
webhooks = ["team"]
"""


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver(SECRET)
    yield r
    r.close()


def hook_url(r: WebhookReceiver) -> str:
    return f"{r.url}/hook"


def until(predicate: Callable[[], bool], timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def start_agent(cfg: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*AGENT, "--config", str(cfg), "run"], stderr=subprocess.PIPE, text=True
    )


def stop_agent(agent: subprocess.Popen[str]) -> str:
    agent.send_signal(signal.SIGTERM)
    _, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err
    return err


def scrape(cfg: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The running agent's /metrics (its port from the config), by name and sorted labels."""
    listen = re.search(r'listen = "([^"]+)"', cfg.read_text())
    assert listen is not None
    with urllib.request.urlopen(f"http://{listen[1]}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def states(r: WebhookReceiver) -> list[str]:
    """The states of the host-power notifications the receiver accepted, in order."""
    return [x.json()["state"] for x in r.accepted() if x.json().get("alert") == "host-power"]


def test_firing_and_resolved_arrive_signed_once_across_a_restart_and_a_reload(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    extra = alert_config(hook_url(receiver), 0.0).replace("{dir}", str(tmp_path))
    cfg = write_config(tmp_path, extra)
    agent = start_agent(cfg)
    try:
        assert until(lambda: states(receiver) == ["firing"]), receiver.received
        first = receiver.accepted()[0]
        assert first.verified is True  # the specification's own library verified it
        body = first.json()
        assert (body["host"], body["metric"], body["alert"]) == (
            "test-host",
            "host_watts",
            "host-power",
        )
        assert body["value"] > 0 and body["threshold"] == 0
        assert body["dashboard_url"] == "http://dashboard.example:8501"
        assert first.headers["webhook-id"] == body["id"]
        metrics = scrape(cfg)
        assert metrics[("sci_agent_alerts", (("rule", "host-power"), ("state", "firing")))] == 1
        sent = metrics[
            ("sci_agent_alert_notifications_total", (("result", "sent"), ("webhook", "team")))
        ]
        assert sent >= 1
    finally:
        err = stop_agent(agent)
    assert SECRET not in err and hook_url(receiver) not in err

    listing = subprocess.run(
        [*AGENT, "--config", str(cfg), "alerts"], capture_output=True, text=True, timeout=60
    )
    assert listing.returncode == 0, listing.stderr
    assert "host-power" in listing.stdout and "firing" in listing.stdout
    assert " W" in listing.stdout  # the value with its unit

    agent = start_agent(cfg)  # restarted mid-firing: no second firing notification
    try:
        time.sleep(4.0)  # 8 intervals, at least 8 evaluations
        assert states(receiver) == ["firing"]
        cfg.write_text(cfg.read_text().replace("threshold = 0.0", "threshold = 1000000.0"))
        agent.send_signal(signal.SIGHUP)  # rules reload live
        assert until(lambda: states(receiver) == ["firing", "resolved"]), receiver.received
    finally:
        stop_agent(agent)
    resolved = receiver.accepted()[-1]
    assert resolved.verified is True
    assert resolved.json()["key"] == body["key"]
    assert resolved.json()["ended_at"] is not None
    assert resolved.headers["webhook-id"] != first.headers["webhook-id"]


def test_a_slow_receiver_never_delays_the_sampling_loops_writes(tmp_path: Path) -> None:
    slow = WebhookReceiver(SECRET, default=Answer(200, b"ok", delay_s=3.0))  # > the timeout
    hook = WebhookConfig("slow", hook_url(slow), secret=SECRET, timeout_s=1.0)
    rule = AlertRuleConfig(
        "power", "host_watts", 0.0, window_s=10.0, repeat_s=1.0, webhooks=("slow",)
    )
    cfg = AlertsConfig(state_dir=str(tmp_path), rules=(rule,), webhooks=(hook,))
    outbox = Outbox(tmp_path / "outbox.db")
    deliverer = Deliverer(outbox, cfg.webhooks, cfg.max_age_s)
    engine = AlertEngine(cfg, "h1", outbox=outbox, wake_delivery=deliverer.wake, interval_s=0.2)
    deliverer.start()
    engine.open()
    longest = 0.0
    try:
        now = datetime.now(UTC)
        for k in range(25):  # 5 s of 0.2 s cycles, a reminder due every second
            result = interval(now + timedelta(seconds=0.2 * k), 40.0, {}, seconds=0.2)
            began = time.perf_counter()
            engine.write([result])
            longest = max(longest, time.perf_counter() - began)
            time.sleep(0.2)
        assert slow.received, "the receiver was reached"
    finally:
        engine.close()
        deliverer.stop(0.0)
        outbox.close()
        slow.close()
    assert longest < 0.05, f"a write waited {longest:.3f} s"


def test_alerts_test_reports_each_webhooks_answer(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    extra = alert_config(hook_url(receiver), 0.0).replace("{dir}", str(tmp_path))
    dead = "http://127.0.0.1:9/services/T0/B0/topsecret"  # nothing listens on port 9
    extra += f'[[alerts.webhooks]]\nname = "dead"\nurl = "{dead}"\ntimeout_s = 2\n'
    cfg = write_config(tmp_path, extra)
    out = subprocess.run(
        [*AGENT, "--config", str(cfg), "alerts", "test", "--webhook", "team"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "team (json): delivered, HTTP 200" in out.stdout
    got = receiver.accepted()
    assert len(got) == 1 and got[0].verified is True and got[0].json()["test"] is True
    both = subprocess.run(
        [*AGENT, "--config", str(cfg), "alerts", "test"], capture_output=True, text=True, timeout=60
    )
    assert both.returncode == 1
    assert "dead (json): failed" in both.stdout and "connection refused" in both.stdout
    assert "topsecret" not in both.stdout + both.stderr  # the host is named, never the path
    unknown = subprocess.run(
        [*AGENT, "--config", str(cfg), "alerts", "test", "--webhook", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        unknown.returncode == 2
        and "no webhook named 'nope' (configured: team, dead)" in unknown.stderr
    )




def test_the_agent_drives_a_real_alertmanager_firing_then_resolved(
    tmp_path: Path, alertmanager: AlertmanagerServer
) -> None:
    am_url = f"http://127.0.0.1:{alertmanager.port}"
    extra = (
        alert_config(am_url, 0.0, 'format = "alertmanager"')
        .replace("{dir}", str(tmp_path))
        .replace('name = "host-power"', 'name = "host-power-am"')
        .replace(f'secret = "{SECRET}"\n', "")
    )
    cfg = write_config(tmp_path, extra)

    def ours() -> list[dict[str, Any]]:
        return [
            a
            for a in alertmanager.alerts(active="true")
            if a["labels"].get("alertname") == "host-power-am"
        ]

    agent = start_agent(cfg)
    try:
        assert until(lambda: len(ours()) == 1), alertmanager.alerts()
        labels = ours()[0]["labels"]
        assert (labels["host"], labels["severity"], labels["metric"]) == (
            "test-host",
            "warning",
            "host_watts",
        )
        assert "host power" in ours()[0]["annotations"]["summary"]
        cfg.write_text(cfg.read_text().replace("threshold = 0.0", "threshold = 1000000.0"))
        agent.send_signal(signal.SIGHUP)
        assert until(lambda: ours() == []), alertmanager.alerts()
    finally:
        stop_agent(agent)
