"""The alert engine: a sink that remembers recent intervals and a thread that judges them.

``write`` (called by the sampling loop) only reduces each interval to a few numbers
and wakes the engine's own thread, so evaluating rules, reading the store for a
baseline, saving state and queueing notifications never delay a cycle. The thread
evaluates after every interval and at least every ``EVALUATE_EVERY_S`` (staleness
grows while no interval arrives), steps each alert's state machine
(``agent.alerts.state``) and puts one ``Notification`` per event and webhook in the
outbox, which the delivery threads drain.

For an Alertmanager webhook a firing alert is re-posted every ``REPOST_S`` (a newer
post replaces an undelivered older one in the outbox), as Alertmanager expects from
a client; reminders (``repeat_s``) go to the other formats.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from agent.alerts.baseline import SciBaseline
from agent.alerts.config import AlertRuleConfig, AlertsConfig, WebhookConfig
from agent.alerts.formats import duration, human
from agent.alerts.model import Notification, new_message_id
from agent.alerts.state import (
    FIRING,
    PENDING,
    REMINDER,
    RESOLVED,
    AlertStatus,
    load_states,
    save_states,
    scope_key,
    step,
)
from agent.alerts.window import MetricWindow, WindowTotals, summarize
from agent.records import IDLE_APP, UNATTRIBUTED_APP, IntervalResult

log = logging.getLogger("sci_agent.alerts")

EVALUATE_EVERY_S = 10.0
REPOST_S = 60.0  # Alertmanager: re-post a firing alert this often
SAVE_EVERY_S = 60.0  # values for `sci-agent alerts`, when no state changed
MAX_UNQUEUED = 1000  # notifications held in memory while the outbox refuses them
STATE_FILE = "alerts-state.json"  # in [alerts] state_dir, beside the outbox
OUTBOX_FILE = "outbox.db"
_PSEUDO_APPS = frozenset({IDLE_APP, UNATTRIBUTED_APP})

#: What a default summary calls each metric.
LABELS = {
    "host_watts": "host power",
    "app_watts": "power of {app}",
    "sci": "SCI of {app}",
    "sci_change_pct": "SCI of {app} against its last 7 days",
    "gco2_per_kwh": "grid carbon intensity",
    "staleness_s": "time since {part} last worked",
    "spool_bytes": "undelivered export spool",
}


class Outbox(Protocol):
    """Where notifications wait for delivery (``agent.alerts.outbox.Outbox``)."""

    def put(self, n: Notification, supersede: bool = False) -> None: ...


@dataclass
class Health:
    """What the engine asks the running agent for, besides intervals.

    ``last_worked``: Unix time each part (the sampling cycle, each sensor, each sink)
    last worked, None when it never has; ``spool_bytes``: bytes waiting in the export
    spools. Set by the runtime once the loop exists.
    """

    last_worked: Callable[[], Mapping[str, float | None]] = dict
    spool_bytes: Callable[[], float] = lambda: 0.0


@dataclass(frozen=True)
class Scope:
    """One alert's scope and the metric's value there (None: no data)."""

    app: str | None
    part: str | None
    value: float | None
    unit: str | None = None  # the app's functional unit (sci)


@dataclass
class _Judged:
    """The events of one evaluation, for tests and the log."""

    notifications: list[Notification] = field(default_factory=list)
    changed: bool = False


class AlertEngine:
    """Evaluates ``[[alerts.rules]]`` on recent intervals; a ``Sink`` for the loop."""

    name = "alerts"

    def __init__(
        self,
        cfg: AlertsConfig,
        host: str,
        *,
        outbox: Outbox,
        wake_delivery: Callable[[], None] = lambda: None,
        baseline: SciBaseline | None = None,
        health: Health | None = None,
        interval_s: float = 5.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.host = host
        self.interval_s = interval_s
        self.rules = self._rules_here(cfg)
        self.webhooks: dict[str, WebhookConfig] = {w.name: w for w in cfg.webhooks}
        self.outbox = outbox
        self.wake_delivery = wake_delivery
        self.baseline = baseline
        self.health = health or Health()
        self.state_path = Path(cfg.state_dir) / STATE_FILE
        self.window = MetricWindow((r.window_s for r in self.rules), interval_s)
        self.evaluate_every_s = min(EVALUATE_EVERY_S, interval_s)
        self.started = wall_clock()
        self.statuses: dict[str, AlertStatus] = {}
        self._wall_clock = wall_clock
        self._reposted: dict[tuple[str, str], float] = {}  # (alert key, webhook) → last post
        self._unqueued: list[tuple[Notification, bool]] = []  # the outbox refused them
        self._saved_at = 0.0
        self._errors: set[str] = set()
        self._lock = threading.Lock()  # evaluation and state
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _rules_here(self, cfg: AlertsConfig) -> list[AlertRuleConfig]:
        """The rules whose ``host`` glob matches this host."""
        return [r for r in cfg.rules if r.host is None or fnmatch.fnmatchcase(self.host, r.host)]

    # -- Sink ------------------------------------------------------------------------

    def open(self) -> None:
        """Load the saved states (rules removed since are forgotten) and start the thread."""
        names = {r.name for r in self.rules}
        saved = load_states(self.state_path)
        self.statuses = {k: s for k, s in saved.items() if s.rule in names}
        firing = [s.key for s in self.statuses.values() if s.state == FIRING]
        now = self._wall_clock()
        for status in self.statuses.values():
            if status.state == FIRING:  # its window refills: "no data" counts from now
                status.last_true = max(status.last_true or 0.0, now)
        if firing:
            log.info("alerts: still firing from before the restart: %s", ", ".join(sorted(firing)))
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="alerts", daemon=True)
        self._thread.start()

    def write(self, batch: Sequence[IntervalResult]) -> None:
        """Remember the intervals and wake the evaluator; cheap, never waits on it."""
        self.window.add(summarize(r) for r in batch)
        self._wake.set()

    def close(self) -> None:
        """Stop the evaluator and save the states."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        with self._lock:
            self._save(force=True)

    def reload(self, cfg: AlertsConfig, wake_delivery: Callable[[], None] | None = None) -> None:
        """New rules and webhooks; alerts of rules still configured keep their state.

        ``state_dir`` is not changed by a reload (the caller asks for a restart).
        """
        with self._lock:
            self.cfg = replace(cfg, state_dir=self.cfg.state_dir)
            self.rules = self._rules_here(cfg)
            self.webhooks = {w.name: w for w in cfg.webhooks}
            names = {r.name for r in self.rules}
            self.statuses = {k: s for k, s in self.statuses.items() if s.rule in names}
            self._reposted = {k: t for k, t in self._reposted.items() if k[1] in self.webhooks}
            self.window.set_windows(r.window_s for r in self.rules)
            if wake_delivery is not None:
                self.wake_delivery = wake_delivery
            self._save(force=True)
        log.info(
            "alerts: %d rule(s), %d webhook(s) after reload", len(self.rules), len(self.webhooks)
        )

    def state_counts(self) -> dict[tuple[str, str], int]:
        """(rule, state) → alerts in that state, pending and firing, zeros included."""
        with self._lock:
            counts = {(r.name, state): 0 for r in self.rules for state in (PENDING, FIRING)}
            for status in self.statuses.values():
                key = (status.rule, status.state)
                if key in counts:
                    counts[key] += 1
        return counts

    # -- evaluation ------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.evaluate_every_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.evaluate()
            except Exception as exc:  # the engine must outlive any bad evaluation
                message = f"{type(exc).__name__}: {exc}"
                if message not in self._errors:
                    self._errors.add(message)
                    log.error("alerts: evaluation failed, trying again: %s", message, exc_info=exc)

    def evaluate(self, now: float | None = None) -> list[Notification]:
        """Judge every rule at ``now``; queue and return the notifications made."""
        now = self._wall_clock() if now is None else now
        judged = _Judged()
        with self._lock:
            self._requeue()
            cache: dict[float, WindowTotals] = {}
            for rule in self.rules:
                totals = cache.get(rule.window_s)
                if totals is None:
                    totals = cache[rule.window_s] = self.window.totals(rule.window_s, now)
                self._judge(rule, self._scopes(rule, totals, now), now, judged)
            self._save(force=judged.changed, now=now)
        if judged.notifications:
            self.wake_delivery()
        return judged.notifications

    def _judge(
        self, rule: AlertRuleConfig, scopes: Iterable[Scope], now: float, judged: _Judged
    ) -> None:
        seen: dict[str, Scope] = {}
        for scope in scopes:
            seen[scope_key(rule.name, scope.app, scope.part)] = scope
        for known in self.statuses.values():  # a scope gone quiet still steps (no data)
            if known.rule == rule.name and known.key not in seen:
                seen[known.key] = Scope(known.app, known.part, None)
        for key, scope in seen.items():
            found = self.statuses.get(key)
            if found is None:
                if scope.value is None:
                    continue  # nothing known, nothing to keep
                found = self.statuses[key] = AlertStatus(
                    key, rule.name, scope.app, scope.part, since=now
                )
            status = found
            before = status.state
            event = step(rule, status, scope.value, now)
            judged.changed |= status.state != before
            if event is not None:
                self._notify(rule, status, scope, event, now, judged)
            if status.state == FIRING:
                self._repost(rule, status, scope, now, judged)

    def _scopes(self, rule: AlertRuleConfig, totals: WindowTotals, now: float) -> list[Scope]:
        metric = rule.metric
        if metric == "host_watts":
            return [Scope(None, None, _finite(totals.host_watts))]
        if metric == "gco2_per_kwh":
            return [Scope(None, None, _finite(totals.gco2_per_kwh))]
        if metric == "spool_bytes":
            return [Scope(None, None, _finite(self.health.spool_bytes()))]
        if metric == "staleness_s":
            return [
                Scope(None, part, max(0.0, now - (last if last is not None else self.started)))
                for part, last in self.health.last_worked().items()
            ]
        scopes = []
        for app, app_totals in totals.apps.items():
            if not self._matches(rule, app):
                continue
            if metric == "app_watts":
                value = totals.app_watts(app)
            elif metric == "sci":
                value = totals.sci(app)
            else:  # sci_change_pct
                value = self._change_pct(rule, totals, app, now)
            scopes.append(Scope(app, None, _finite(value), app_totals.unit))
        return scopes

    def _change_pct(
        self, rule: AlertRuleConfig, totals: WindowTotals, app: str, now: float
    ) -> float | None:
        current = totals.sci(app)
        if current is None or self.baseline is None:
            return None
        reference = self.baseline.sci(app, rule.window_s, now)
        if reference is None or reference <= 0:
            return None
        return (current / reference - 1.0) * 100.0

    @staticmethod
    def _matches(rule: AlertRuleConfig, app: str) -> bool:
        if rule.app is None:
            return app not in _PSEUDO_APPS
        return fnmatch.fnmatchcase(app, rule.app)

    # -- notifications -----------------------------------------------------------------

    def _notify(
        self,
        rule: AlertRuleConfig,
        status: AlertStatus,
        scope: Scope,
        event: str,
        now: float,
        judged: _Judged,
    ) -> None:
        where = status.key
        shown = human(rule.metric, status.value, scope.unit)
        if event == FIRING:
            log.warning("alert %s firing: %s (%s %g)", where, shown, rule.op, rule.threshold)
        elif event == RESOLVED:
            log.info("alert %s resolved: %s", where, shown)
        for name in rule.webhooks:
            hook = self.webhooks[name]
            alertmanager = hook.format == "alertmanager"
            if event == REMINDER and alertmanager:
                continue  # Alertmanager gets its re-posts instead
            n = self._notification(rule, status, scope, hook, event, now)
            self._queue(n, alertmanager)
            judged.notifications.append(n)
            if alertmanager:
                self._reposted[(status.key, name)] = now
            if event == RESOLVED:
                self._reposted.pop((status.key, name), None)

    def _repost(
        self, rule: AlertRuleConfig, status: AlertStatus, scope: Scope, now: float, judged: _Judged
    ) -> None:
        for name in rule.webhooks:
            hook = self.webhooks[name]
            if hook.format != "alertmanager":
                continue
            last = self._reposted.get((status.key, name))
            if last is not None and now - last < REPOST_S:
                continue
            n = self._notification(rule, status, scope, hook, REMINDER, now)
            self._queue(n, True)
            judged.notifications.append(n)
            self._reposted[(status.key, name)] = now

    def _notification(
        self,
        rule: AlertRuleConfig,
        status: AlertStatus,
        scope: Scope,
        hook: WebhookConfig,
        event: str,
        now: float,
    ) -> Notification:
        started = status.started_at if status.started_at is not None else status.since
        return Notification(
            id=new_message_id(),
            webhook=hook.name,
            key=status.key,
            alert=rule.name,
            state=RESOLVED if event == RESOLVED else FIRING,
            severity=rule.severity,
            host=self.host,
            app=status.app,
            part=status.part,
            metric=rule.metric,
            op=rule.op,
            value=status.value,
            threshold=rule.threshold,
            window_s=rule.window_s,
            started_at=started,
            ended_at=now if event == RESOLVED else None,
            created_at=now,
            summary=summary(rule, status, self.host, scope.unit),
            dashboard_url=self.cfg.dashboard_url,
            reminder=event == REMINDER,
            unit=scope.unit,
        )

    def _queue(self, n: Notification, supersede: bool) -> None:
        """Put ``n`` in the outbox; when it cannot take it (disk full), hold it in memory
        (bounded) and try again at the next evaluation."""
        try:
            self.outbox.put(n, supersede=supersede)
        except Exception as exc:
            if len(self._unqueued) >= MAX_UNQUEUED:
                log.error(
                    "alerts: outbox unavailable, dropping %s %s for %s", n.key, n.state, n.webhook
                )
                return
            if not self._unqueued:
                log.error(
                    "alerts: cannot queue notifications (%s: %s); holding them in memory",
                    type(exc).__name__,
                    exc,
                )
            self._unqueued.append((n, supersede))

    def _requeue(self) -> None:
        """Queue what the outbox could not take before, oldest first."""
        held, self._unqueued = self._unqueued, []
        for n, supersede in held:
            self._queue(n, supersede)
        if held and not self._unqueued:
            log.info("alerts: the outbox takes notifications again (%d queued)", len(held))
            self.wake_delivery()

    def _save(self, force: bool, now: float | None = None) -> None:
        now = self._wall_clock() if now is None else now
        if not force and now - self._saved_at < SAVE_EVERY_S:
            return
        try:
            save_states(self.state_path, self.statuses.values(), self.host)
        except OSError as exc:
            message = f"cannot save alert states to {self.state_path}: {exc}"
            if message not in self._errors:
                self._errors.add(message)
                log.error("alerts: %s", message)
            return
        self._saved_at = now


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def summary(rule: AlertRuleConfig, status: AlertStatus, host: str, unit: str | None = None) -> str:
    """The rule's ``summary`` with ``{app}``, ``{host}``, ``{part}``, ``{value}`` and
    ``{threshold}`` filled in; by default what is wrong, in one line."""
    value = human(rule.metric, status.value, unit)
    threshold = human(rule.metric, rule.threshold, unit)
    fills = {
        "{app}": status.app or "",
        "{host}": host,
        "{part}": status.part or "",
        "{value}": value,
        "{threshold}": threshold,
    }
    text = rule.summary
    if text is None:
        label = (
            LABELS[rule.metric]
            .replace("{app}", status.app or "")
            .replace("{part}", status.part or "")
        )
        text = (
            f"{label} on {host} is {value} ({rule.op} {threshold} over {duration(rule.window_s)})"
        )
        return text
    for placeholder, filled in fills.items():
        text = text.replace(placeholder, filled)
    return text
