"""Alert delivery to real HTTP receivers on loopback that verify Standard Webhooks
signatures with the official ``standardwebhooks`` package."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.alerts import delivery
from agent.alerts.config import WebhookConfig
from agent.alerts.delivery import Deliverer, send_now
from agent.alerts.model import RESOLVED, Notification, new_message_id
from agent.alerts.outbox import Outbox
from devtools.servers import Answer, WebhookReceiver, free_port
from tests.test_alert_formats import OTHER_SECRET, SECRET, notification

FAST = {"base_backoff_s": 0.05, "max_backoff_s": 0.2, "jitter": lambda: 1.0}
TOKEN_PATH = "/services/T0001/B0001/SlackTokenXyz123"


def fresh(**changes: Any) -> Notification:
    """A firing notification made now (ages are measured on the real clock)."""
    now = time.time()
    return notification(created_at=now, started_at=now - 60, **changes)


def wait_until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "outbox.db")
    yield box
    box.close()


@pytest.fixture
def receivers() -> Iterator[list[WebhookReceiver]]:
    """Receivers a test makes; all closed at the end."""
    made: list[WebhookReceiver] = []
    yield made
    for r in made:
        r.close()


def receiver(made: list[WebhookReceiver], **kwargs: Any) -> WebhookReceiver:
    r = WebhookReceiver(**kwargs)
    made.append(r)
    return r


@pytest.fixture
def deliverers() -> Iterator[list[Deliverer]]:
    made: list[Deliverer] = []
    yield made
    for d in made:
        d.stop(0)


def deliverer(
    made: list[Deliverer], outbox: Outbox, hooks: list[WebhookConfig], max_age_s: float = 60,
    **kwargs: Any,
) -> Deliverer:
    d = Deliverer(outbox, hooks, max_age_s, **{**FAST, **kwargs})
    made.append(d)
    d.start()
    return d


def test_firing_and_resolved_arrive_signed(
    outbox: Outbox, receivers: list[WebhookReceiver], deliverers: list[Deliverer]
) -> None:
    r = receiver(receivers, secret=SECRET)
    hook = WebhookConfig("team", r.url + "/hook", secret=SECRET)
    d = deliverer(deliverers, outbox, [hook])
    firing = fresh(webhook="team")
    gone = dataclasses.replace(
        firing, id=new_message_id(), state=RESOLVED, ended_at=time.time(), created_at=time.time()
    )
    outbox.put(firing)
    outbox.put(gone)
    d.wake()
    r.wait_for(2)
    first, second = r.received
    assert [first.verified, second.verified] == [True, True], (first.error, second.error)
    assert [first.json()["state"], second.json()["state"]] == ["firing", "resolved"]
    assert [first.id, second.id] == [firing.id, gone.id]
    assert first.path == "/hook"
    wait_until(lambda: d.stats()[0].sent == 2)
    (stats,) = d.stats()
    assert (stats.name, stats.pending, stats.failed_attempts, stats.dropped) == ("team", 0, 0, 0)
    assert stats.last_success_unix is not None and stats.last_error is None


def test_wrong_secret_fails_verification(
    outbox: Outbox, receivers: list[WebhookReceiver], deliverers: list[Deliverer]
) -> None:
    r = receiver(receivers, secret=SECRET)
    d = deliverer(deliverers, outbox, [WebhookConfig("team", r.url, secret=OTHER_SECRET)])
    outbox.put(fresh(webhook="team"))
    d.wake()
    r.wait_for(1)
    assert r.received[0].verified is False
    assert "signature" in (r.received[0].error or "").lower()


def test_no_secret_sends_id_and_timestamp_only(receivers: list[WebhookReceiver]) -> None:
    r = receiver(receivers)
    n = fresh(webhook="team")
    answer = send_now(n, WebhookConfig("team", r.url), time.time())
    assert answer.ok and answer.status == 200 and answer.body == '{"ok":true}'
    got = r.received[0].headers
    assert "webhook-signature" not in got
    assert got["webhook-id"] == n.id
    assert abs(int(got["webhook-timestamp"]) - time.time()) < 5


def test_receiver_down_then_up_gets_each_once_with_one_id(
    outbox: Outbox, receivers: list[WebhookReceiver], deliverers: list[Deliverer]
) -> None:
    port = free_port()  # nothing listens yet: connections are refused
    hook = WebhookConfig("team", f"http://127.0.0.1:{port}/in", secret=SECRET)
    d = deliverer(deliverers, outbox, [hook])
    sent = [fresh(webhook="team", key=f"alert-{i}") for i in range(2)]
    for n in sent:
        outbox.put(n)
    d.wake()
    wait_until(lambda: d.stats()[0].failed_attempts >= 4)
    assert "refused" in (d.stats()[0].last_error or "")
    # Up on the same port; it answers 503 twice before it accepts.
    r = receiver(receivers, secret=SECRET, port=port, answers=[Answer(503), Answer(503)])
    r.wait_for(2)
    wait_until(lambda: outbox.pending() == 0)
    time.sleep(0.3)  # time for a duplicate to show, if there were one
    accepted = sorted(x.id for x in r.accepted())
    assert accepted == sorted(n.id for n in sent)  # each exactly once
    assert all(x.verified for x in r.received)
    # Every attempt of one notification carried that notification's webhook-id.
    ids = {x.id for x in r.received}
    assert ids == {n.id for n in sent}
    assert len(r.received) == 4


def test_slow_receiver_does_not_delay_another_webhook(
    outbox: Outbox, receivers: list[WebhookReceiver], deliverers: list[Deliverer]
) -> None:
    slow = receiver(receivers, default=Answer(200, delay_s=5.0))
    quick = receiver(receivers)
    hooks = [
        WebhookConfig("slow", slow.url, timeout_s=1.5),
        WebhookConfig("quick", quick.url, timeout_s=1.5),
    ]
    d = deliverer(deliverers, outbox, hooks)
    outbox.put(fresh(webhook="slow"))
    d.wake()
    slow.wait_for(1, accepted=False)
    started = time.monotonic()
    outbox.put(fresh(webhook="quick"))
    d.wake()
    quick.wait_for(1)
    assert time.monotonic() - started < 1.0  # while the slow attempt still hangs
    slow.wait_for(2, accepted=False)  # cut at timeout_s, then retried
    first, second = slow.received[:2]
    assert 1.5 <= second.at - first.at < 3.0
    stats = {s.name: s for s in d.stats()}
    assert "timed out after 1.5s" in (stats["slow"].last_error or "")
    assert stats["slow"].pending == 1 and stats["quick"].sent == 1


def test_too_old_is_dropped_and_logged_without_url_or_secret(
    outbox: Outbox,
    receivers: list[WebhookReceiver],
    deliverers: list[Deliverer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    r = receiver(receivers, default=Answer(503, b'{"error":"busy"}'))
    hook = WebhookConfig(
        "pager", r.url + TOKEN_PATH, secret=SECRET, headers={"Authorization": "Bearer tok-98765"}
    )
    with caplog.at_level(logging.DEBUG, "sci_agent.alerts"):
        d = deliverer(deliverers, outbox, [hook], max_age_s=0.6)
        n = fresh(webhook="pager")
        outbox.put(n)
        d.wake()
        wait_until(lambda: d.stats()[0].dropped == 1, timeout_s=5)
        age = time.time() - n.created_at
        # the count goes up just before the warning is logged: wait for that too
        wait_until(lambda: any("dropped" in m for m in caplog.messages), timeout_s=5)
    assert age < 3.0
    assert outbox.pending() == 0
    (stats,) = d.stats()
    assert stats.failed_attempts >= 2 and stats.sent == 0
    assert stats.last_error == "HTTP 503 Service Unavailable"
    drops = [m for m in caplog.messages if "dropped" in m]
    assert len(drops) == 1
    assert "pager" in drops[0] and "sci-high" in drops[0] and "firing" in drops[0]
    assert "max_age_s" in drops[0]
    text = caplog.text
    for secret in (TOKEN_PATH, "SlackTokenXyz", SECRET, SECRET.removeprefix("whsec_"),
                   "tok-98765", r.url):
        assert secret not in text
    n_attempts = len(r.received)
    time.sleep(0.3)
    assert len(r.received) == n_attempts  # no attempt after the drop


def test_network_errors_never_show_the_url(receivers: list[WebhookReceiver]) -> None:
    port = free_port()
    hook = WebhookConfig("pager", f"http://user:pw-secret@127.0.0.1:{port}{TOKEN_PATH}")
    answer = send_now(fresh(webhook="pager"), hook, time.time())
    assert answer.status is None and answer.error is not None
    assert "refused" in answer.error
    assert "SlackTokenXyz" not in answer.error and "pw-secret" not in answer.error


def test_user_and_password_in_the_url_become_basic_auth(receivers: list[WebhookReceiver]) -> None:
    r = receiver(receivers)
    hook = WebhookConfig("am", r.url.replace("//", "//am%40ops:pa%3Ass@") + "/x")
    assert send_now(fresh(webhook="am"), hook, time.time()).ok
    got = r.received[0]
    assert got.path == "/x"
    assert got.headers["authorization"] == "Basic " + base64.b64encode(b"am@ops:pa:ss").decode()


def test_gone_410_is_dropped_not_retried(
    outbox: Outbox,
    receivers: list[WebhookReceiver],
    deliverers: list[Deliverer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    r = receiver(receivers, default=Answer(410))
    with caplog.at_level(logging.WARNING, "sci_agent.alerts"):
        d = deliverer(deliverers, outbox, [WebhookConfig("old", r.url)])
        outbox.put(fresh(webhook="old"))
        d.wake()
        wait_until(lambda: d.stats()[0].dropped == 1)
    time.sleep(0.3)
    assert len(r.received) == 1 and outbox.pending() == 0
    assert "410 Gone" in caplog.text


def test_outbox_survives_a_restart(
    tmp_path: Path, receivers: list[WebhookReceiver], deliverers: list[Deliverer]
) -> None:
    port = free_port()
    hook = WebhookConfig("team", f"http://127.0.0.1:{port}/", secret=SECRET)
    path = tmp_path / "state" / "outbox.db"
    box = Outbox(path)
    first = Deliverer(box, [hook], 60, **FAST)
    first.start()
    n = fresh(webhook="team")
    box.put(n)
    first.wake()
    wait_until(lambda: first.stats()[0].failed_attempts >= 1)
    started = time.monotonic()
    first.stop(0.5)
    assert time.monotonic() - started < 1.0
    box.close()
    # The agent starts again; the receiver is back.
    r = receiver(receivers, secret=SECRET, port=port)
    again = Outbox(path)
    try:
        assert again.pending("team") == 1
        deliverer(deliverers, again, [hook])
        r.wait_for(1)
        assert r.received[0].id == n.id and r.received[0].verified
        wait_until(lambda: again.pending() == 0)
    finally:
        for d in deliverers:
            d.stop(0)
        deliverers.clear()
        again.close()


def test_stop_makes_one_last_pass_within_its_deadline(
    outbox: Outbox, receivers: list[WebhookReceiver]
) -> None:
    r = receiver(receivers)
    d = Deliverer(outbox, [WebhookConfig("team", r.url)], 60, idle_wait_s=60, **FAST)
    d.start()
    time.sleep(0.1)  # the thread is idle, waiting
    outbox.put(fresh(webhook="team"))  # no wake(): only the stop pass sends it
    d.stop(2.0)
    assert len(r.accepted()) == 1 and outbox.pending() == 0


def test_stop_leaves_what_it_cannot_send_in_time(
    outbox: Outbox, receivers: list[WebhookReceiver]
) -> None:
    r = receiver(receivers, default=Answer(200, delay_s=2.0))
    d = Deliverer(outbox, [WebhookConfig("team", r.url, timeout_s=5)], 60, **FAST)
    for i in range(3):
        outbox.put(fresh(webhook="team", key=f"k{i}"))
    d.start()
    started = time.monotonic()
    d.stop(0.5)
    assert time.monotonic() - started < 0.8
    assert outbox.pending() == 3


def test_slack_receiver_gets_text_with_numbers_for_people(
    outbox: Outbox, receivers: list[WebhookReceiver], deliverers: list[Deliverer]
) -> None:
    r = receiver(receivers)
    d = deliverer(deliverers, outbox, [WebhookConfig("chat", r.url + TOKEN_PATH, format="slack")])
    outbox.put(fresh(webhook="chat", metric="app_watts", value=84.2468, threshold=80.0))
    outbox.put(fresh(webhook="chat", key="pct", metric="sci_change_pct", value=23.46, threshold=10))
    d.wake()
    r.wait_for(2)
    texts = [json.loads(x.body)["text"] for x in r.received]
    assert "84.2 W" in texts[0] and "80 W" in texts[0] and "[FIRING]" in texts[0]
    assert "+23.5 %" in texts[1] and "+10 %" in texts[1]
    assert all("None" not in t for t in texts)
    assert r.received[0].headers["content-type"] == "application/json"


def test_the_test_notification(receivers: list[WebhookReceiver]) -> None:
    r = receiver(receivers, secret=SECRET)
    hook = WebhookConfig("team", r.url, secret=SECRET)
    n = delivery.test_notification("web-1", hook, "https://dash.example/", time.time())
    assert (n.alert, n.state, n.severity, n.test, n.webhook) == (
        "sci-agent-test", "firing", "info", True, "team",
    )
    assert "test" in n.summary
    answer = send_now(n, hook, time.time())
    assert answer.ok and r.received[0].verified
    body = r.received[0].json()
    assert body["test"] is True and body["dashboard_url"] == "https://dash.example/"
    long = receiver(receivers, default=Answer(500, b"\xff" + b"x" * 2000))
    answer = send_now(n, WebhookConfig("team", long.url), time.time())
    assert answer.status == 500 and answer.error == "HTTP 500 Internal Server Error"
    assert len(answer.body) == 500 and answer.body.startswith("\ufffd")


def test_secret_key_never_in_stats_or_repr(receivers: list[WebhookReceiver]) -> None:
    hook = WebhookConfig("team", "http://127.0.0.1:9" + TOKEN_PATH, secret=SECRET)
    assert SECRET not in repr(hook) and TOKEN_PATH not in repr(hook)
    assert base64.b64decode(SECRET.removeprefix("whsec_"))  # a valid secret for the test


def test_a_redirect_is_not_followed(receivers: list[WebhookReceiver]) -> None:
    target = receiver(receivers)
    r = receiver(receivers, default=Answer(307, headers={"Location": target.url + "/x"}))
    answer = send_now(fresh(webhook="team"), WebhookConfig("team", r.url), time.time())
    assert answer.status == 307 and answer.error == "HTTP 307 Temporary Redirect"
    assert len(r.received) == 1 and target.received == []


def test_backoff_doubles_with_full_jitter_to_its_cap_then_max_age(
    outbox: Outbox, deliverers: list[Deliverer], caplog: pytest.LogCaptureFixture
) -> None:
    """On an injected wall clock: each retry waits jitter × min(base × 2ⁿ, cap), and the
    last retry is pulled in to the maximum age, where the notification is dropped."""
    t0 = 1_800_000_000.0
    wall = [t0]
    hook = WebhookConfig("dead", f"http://127.0.0.1:{free_port()}/", timeout_s=1)
    d = deliverer(
        deliverers, outbox, [hook], max_age_s=20.0, wall_clock=lambda: wall[0],
        jitter=lambda: 0.5, base_backoff_s=1.0, max_backoff_s=8.0, idle_wait_s=0.05,
    )
    n = notification(webhook="dead", created_at=t0, started_at=t0)
    outbox.put(n)
    d.wake()
    waits = []
    for attempt in range(1, 8):
        wait_until(lambda a=attempt: d.stats()[0].failed_attempts == a)  # type: ignore[misc]
        next_at = outbox.next_at("dead")
        assert next_at is not None
        waits.append(next_at - wall[0])
        wall[0] = next_at
        d.wake()
    assert waits == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]  # now t0 + 19.5
    wait_until(lambda: d.stats()[0].failed_attempts == 8)
    assert outbox.next_at("dead") == t0 + 20.0  # not t0 + 19.5 + … past the maximum age
    with caplog.at_level(logging.WARNING, "sci_agent.alerts"):
        wall[0] = t0 + 20.0
        d.wake()
        wait_until(lambda: d.stats()[0].dropped == 1)
    assert d.stats()[0].failed_attempts == 8 and outbox.pending() == 0
    assert "after 20 s" in caplog.text and "dead" in caplog.text
