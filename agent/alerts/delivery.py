"""Delivery: one daemon thread per webhook drains its part of the outbox.

Each attempt renders the notification at the attempt's time and POSTs it, bounded as a
whole by the webhook's ``timeout_s``. The answer decides:

- 2xx: delivered, removed from the outbox;
- 410 Gone: the receiver does not want it (Standard Webhooks): removed, logged;
- anything else (another status, a timeout, a refused connection): kept, retried after
  an exponential backoff with full jitter (1 s doubling to 300 s, each wait uniform
  below that ceiling), until the notification is older than ``alerts.max_age_s``;
  then it is dropped and logged at warning.

A slow or dead receiver only holds its own thread; the sampling loop never waits on a
webhook (the engine only ``put``s into the outbox and calls ``wake``). Logs name the
webhook, never its URL, headers or secret: a Slack URL is itself a credential, and
any of them that an error message could echo is masked.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.client import responses

from agent.alerts.config import WebhookConfig
from agent.alerts.formats import render
from agent.alerts.model import FIRING, Notification, new_message_id
from agent.alerts.outbox import Outbox
from agent.httpclient import HttpError, redact, request

log = logging.getLogger("sci_agent.alerts")

BASE_BACKOFF_S = 1.0
MAX_BACKOFF_S = 300.0
#: How long an idle webhook thread sleeps when nothing wakes it (it re-reads the outbox).
IDLE_WAIT_S = 60.0
#: Notifications read from the outbox per pass.
BATCH = 10
EXCERPT_CHARS = 500
MAX_ANSWER_BYTES = 64 * 1024
TEST_ALERT = "sci-agent-test"


@dataclass(frozen=True)
class Answer:
    """What a receiver said to one POST (``status`` None: no answer at all)."""

    status: int | None
    body: str  # the first EXCERPT_CHARS characters, decoded leniently
    error: str | None  # None for a 2xx; never holds the URL, a header or the secret
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True)
class WebhookStats:
    """One webhook's delivery counters, for /metrics and ``sci-agent alerts``."""

    name: str
    sent: int
    failed_attempts: int
    dropped: int
    pending: int
    last_success_unix: float | None
    last_error: str | None


def send_now(
    n: Notification, hook: WebhookConfig, now: float, timeout_s: float | None = None
) -> Answer:
    """Render ``n`` for ``hook`` at ``now`` and POST it once; never raises."""
    start = time.monotonic()
    try:
        rendered = render(n, hook, now)
        response = request(
            "POST",
            rendered.url,
            headers=rendered.headers,
            body=rendered.body,
            timeout_s=hook.timeout_s if timeout_s is None else max(timeout_s, 0.001),
            max_response_bytes=MAX_ANSWER_BYTES,
            truncate=True,  # only an excerpt is kept
            raise_for_status=False,  # a 503 is ours to retry, a 410 to drop
            follow_redirects=False,  # a POST must not turn into a GET
            secrets=_secrets(hook),
        )
    except HttpError as exc:
        return Answer(None, "", mask(exc.message, hook), time.monotonic() - start)
    except Exception as exc:  # a render bug: still an answer
        problem = mask(f"{type(exc).__name__}: {exc}", hook)
        return Answer(None, "", problem, time.monotonic() - start)
    elapsed = time.monotonic() - start
    status = response.status
    body = response.body.decode("utf-8", errors="replace")[:EXCERPT_CHARS]
    error = None if response.ok else _status_text(status)
    return Answer(status, body, error, elapsed)


def test_notification(
    host: str, hook: WebhookConfig, dashboard_url: str | None, now: float
) -> Notification:
    """The notification ``sci-agent alerts test`` sends to ``hook``."""
    return Notification(
        id=new_message_id(),
        webhook=hook.name,
        key=f"{TEST_ALERT}/host={host}",
        alert=TEST_ALERT,
        state=FIRING,
        severity="info",
        host=host,
        app=None,
        part=None,
        metric="host_watts",
        op=">",
        value=None,
        threshold=0.0,
        window_s=60.0,
        started_at=now,
        ended_at=None,
        created_at=now,
        summary=f"A test notification from sci-agent on {host}: this webhook works;"
        " no alert is firing.",
        dashboard_url=dashboard_url,
        test=True,
    )


class Deliverer:
    """Delivers the outbox's notifications, one daemon thread per webhook.

    ``clock`` (monotonic seconds, for the stop deadline), ``wall_clock`` (Unix time:
    ages, retry times, rendering) and ``jitter`` (uniform in [0, 1)) are injectable,
    and so are the backoff bounds, for tests.
    """

    def __init__(
        self,
        outbox: Outbox,
        webhooks: Sequence[WebhookConfig],
        max_age_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
        base_backoff_s: float = BASE_BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
        idle_wait_s: float = IDLE_WAIT_S,
    ) -> None:
        self.outbox = outbox
        self.max_age_s = max_age_s
        self.clock = clock
        self.wall_clock = wall_clock
        self.jitter = jitter
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self.idle_wait_s = idle_wait_s
        self._lock = threading.Lock()  # the counters; expiry may count another's drops
        self._workers = {hook.name: _Worker(self, hook) for hook in webhooks}

    def start(self) -> None:
        """Start every webhook's thread (once)."""
        for worker in self._workers.values():
            worker.start()

    def wake(self) -> None:
        """New notifications are in the outbox: look now (a backoff still runs out)."""
        for worker in self._workers.values():
            worker.wake.set()

    def stop(self, deadline_s: float) -> None:
        """One last pass over what is due, for at most ``deadline_s``; the rest stays in
        the outbox for the next start."""
        end = self.clock() + deadline_s
        for worker in self._workers.values():
            worker.stop_at(end)
        for worker in self._workers.values():
            worker.join(max(0.0, end - self.clock()))
        for name, worker in self._workers.items():
            try:
                left = self.outbox.pending(name)
            except Exception:  # a closed or broken outbox: nothing more to say
                continue
            if left or worker.running:
                log.warning(
                    "webhook %s: %d notification(s) stay in the outbox for the next start",
                    name,
                    left,
                )

    def stats(self) -> list[WebhookStats]:
        """Counters per webhook, in configuration order."""
        out = []
        for name, w in self._workers.items():
            try:
                pending = self.outbox.pending(name)
            except Exception:
                pending = 0
            with self._lock:
                out.append(
                    WebhookStats(
                        name, w.sent, w.failed_attempts, w.dropped, pending, w.last_success,
                        w.last_error,
                    )
                )
        return out

    # -- shared by the workers ------------------------------------------------------------

    def expire(self, now: float) -> None:
        """Drop what is older than ``max_age_s`` (any webhook's), counted and logged."""
        for n in self.outbox.expire(now, self.max_age_s):
            self.note_dropped(n, now, "older than alerts.max_age_s")

    def note_dropped(self, n: Notification, now: float, why: str) -> None:
        worker = self._workers.get(n.webhook)
        last = None
        if worker is not None:
            with self._lock:
                worker.dropped += 1
                last = worker.last_error
        log.warning(
            "webhook %s: dropped the %s notification of alert %s after %.0f s (%s%s)",
            n.webhook,
            n.state,
            n.alert,
            now - n.created_at,
            why,
            f"; last error: {last}" if last else "",
        )


class _Worker:
    """The thread of one webhook: passes over its due notifications, then waits."""

    def __init__(self, owner: Deliverer, hook: WebhookConfig) -> None:
        self.owner = owner
        self.hook = hook
        self.sent = 0
        self.failed_attempts = 0
        self.dropped = 0
        self.last_success: float | None = None
        self.last_error: str | None = None
        self.wake = threading.Event()
        self._stopping = threading.Event()
        self._end = 0.0  # the stop deadline (owner's clock), once stopping
        self._failing = False  # in a streak of failures (logged once, at its start)
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"alerts-{self.hook.name}", daemon=True
        )
        self._thread.start()

    def stop_at(self, end: float) -> None:
        self._end = end
        self._stopping.set()
        self.wake.set()

    def join(self, timeout_s: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    # -- the loop -------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                busy = self._pass()
            except Exception as exc:  # the outbox failed (disk, a closed database)
                if self._stopping.is_set():
                    break  # stop() gave up waiting and the outbox may be closed already
                self._note_error(f"outbox: {type(exc).__name__}: {exc}")
                busy = False
            if not busy:
                self._wait()
        try:
            while self.owner.clock() < self._end and self._pass():
                pass
        except Exception as exc:
            log.debug("webhook %s: last pass stopped: %s", self.hook.name, exc)

    def _pass(self) -> bool:
        """Attempt what is due now; True when there may be more to do at once."""
        owner = self.owner
        now = owner.wall_clock()
        owner.expire(now)
        batch = owner.outbox.due(self.hook.name, now, BATCH)
        for n in batch:
            timeout = self.hook.timeout_s
            if self._stopping.is_set():
                timeout = min(timeout, self._end - owner.clock())
                if timeout <= 0:
                    return False
            self._attempt(n, timeout)
        return bool(batch)

    def _wait(self) -> None:
        """Until the next entry is due, ``wake`` or ``stop`` (at most ``idle_wait_s``)."""
        try:
            next_at = self.owner.outbox.next_at(self.hook.name)
        except Exception:
            next_at = None
        wait = self.owner.idle_wait_s
        if next_at is not None:
            wait = min(wait, max(0.0, next_at - self.owner.wall_clock()))
        self.wake.wait(wait)
        self.wake.clear()

    # -- one attempt ----------------------------------------------------------------------

    def _attempt(self, n: Notification, timeout_s: float) -> None:
        owner = self.owner
        now = owner.wall_clock()
        if now - n.created_at >= owner.max_age_s:
            owner.outbox.delivered(n.id)
            owner.note_dropped(n, now, "older than alerts.max_age_s")
            return
        answer = send_now(n, self.hook, now, timeout_s)
        if answer.ok:
            owner.outbox.delivered(n.id)
            self._delivered(owner.wall_clock())
        elif answer.status == 410:
            owner.outbox.delivered(n.id)
            with owner._lock:
                self.last_error = answer.error
            owner.note_dropped(n, now, "the receiver answered 410 Gone")
        else:
            self._retry(n, answer.error or "no answer")

    def _delivered(self, now: float) -> None:
        with self.owner._lock:
            self.sent += 1
            self.last_success = now
        if self._failing:
            log.info("webhook %s: delivering again", self.hook.name)
            self._failing = False

    def _retry(self, n: Notification, error: str) -> None:
        owner = self.owner
        attempts = owner.outbox.attempts(n.id) + 1
        ceiling = min(owner.max_backoff_s, owner.base_backoff_s * 2.0 ** min(attempts - 1, 30))
        delay = max(owner.jitter() * ceiling, owner.base_backoff_s / 10)
        now = owner.wall_clock()
        next_at = min(now + delay, n.created_at + owner.max_age_s)
        owner.outbox.failed(n.id, next_at, error)
        with owner._lock:
            self.failed_attempts += 1
        self._note_error(error, f"the {n.state} notification of alert {n.alert} waits")

    def _note_error(self, error: str, what: str = "") -> None:
        """Keep ``error``; log it at warning once per streak of failures, then at debug."""
        with self.owner._lock:
            self.last_error = error
        level = logging.DEBUG if self._failing else logging.WARNING
        self._failing = True
        suffix = f"; {what} (retrying with backoff)" if what else ""
        log.log(level, "webhook %s: %s%s", self.hook.name, error, suffix)


def mask(text: str, hook: WebhookConfig) -> str:
    """``text`` with the webhook's URL, its parts, headers and secret replaced by ***."""
    return redact(text, _secrets(hook))


def _secrets(hook: WebhookConfig) -> list[str]:
    """What must never be shown: the URL, its path, query and user info, the secret,
    header values (longest first, so a part does not leave the rest of a whole)."""
    parts = urllib.parse.urlsplit(hook.url)
    found = [hook.url, parts.path, parts.query, parts.username or "", parts.password or ""]
    if hook.secret:
        found += [hook.secret, hook.secret.removeprefix("whsec_")]
    found += list(hook.headers.values())
    return sorted({s for s in found if len(s) >= 4 and s != "/"}, key=len, reverse=True)


def _status_text(status: int) -> str:
    return f"HTTP {status} {responses.get(status, '')}".rstrip()
