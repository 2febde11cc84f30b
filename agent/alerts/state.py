"""Each alert's state machine, ok → pending → firing → resolved, and its file.

An alert is one rule in one scope (the host, one app, or one sensor or sink). ``step``
moves it with the metric's value at ``now`` and says what to notify:

- ok or resolved: when the condition holds it goes pending (firing at once when
  ``for_s`` is 0); pending: firing once the condition has held ``for_s``, back to ok
  the first time it does not.
- firing: a reminder every ``repeat_s`` (when set). It resolves only after the value
  has been clear for ``keep_firing_for_s`` without a break, where clear means past
  ``clear_threshold`` (hysteresis; default the threshold). So a value that flaps
  around the threshold keeps one alert firing instead of sending a storm.
- no value (an app gone quiet, no units in the window): nothing changes, except that a
  firing alert with no data for its window (or ``keep_firing_for_s``, the longer)
  resolves, and a pending one goes back to ok.

States are saved to a JSON file (atomically: temporary file, fsync, rename) whenever
one changes, so a restart neither forgets a firing alert nor notifies it again.
"""

from __future__ import annotations

import json
import logging
import operator
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from agent.alerts.config import AlertRuleConfig
from agent.alerts.model import FIRING, RESOLVED

log = logging.getLogger("sci_agent.alerts")

OK = "ok"
PENDING = "pending"
REMINDER = "reminder"  # an event, not a state

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
__all__ = ["FIRING", "OK", "PENDING", "REMINDER", "RESOLVED", "AlertStatus", "step"]
STATE_VERSION = 1


@dataclass
class AlertStatus:
    """One alert's state and the times that drive it (Unix seconds)."""

    key: str  # "rule", "rule/app=checkout", "rule/part=sink:influxdb"
    rule: str
    app: str | None = None
    part: str | None = None
    state: str = OK
    since: float = 0.0  # when it entered ``state``
    started_at: float | None = None  # when the condition started to hold (pending, firing)
    last_true: float | None = None  # the last evaluation at which it held (firing)
    clear_since: float | None = None  # firing: clear without a break since
    last_notified: float | None = None  # the last firing notification or reminder
    value: float | None = None  # the metric at the last evaluation
    evaluated_at: float | None = None


def scope_key(rule: str, app: str | None = None, part: str | None = None) -> str:
    """The alert's identity: the rule, and its app or part when it has one."""
    if app is not None:
        return f"{rule}/app={app}"
    if part is not None:
        return f"{rule}/part={part}"
    return rule


def holds(op: str, value: float, threshold: float) -> bool:
    """``value op threshold``."""
    return _COMPARE[op](value, threshold)


def step(rule: AlertRuleConfig, status: AlertStatus, value: float | None, now: float) -> str | None:
    """Move ``status`` with ``value`` at ``now``; the event to notify (FIRING, RESOLVED,
    REMINDER) or None."""
    status.value = value
    status.evaluated_at = now
    if value is None:
        return _no_data(rule, status, now)
    if status.state == FIRING:
        return _while_firing(rule, status, value, now)
    if not holds(rule.op, value, rule.threshold):
        if status.state == PENDING:
            _enter(status, OK, now)
            status.started_at = None
        return None
    if status.state != PENDING:
        _enter(status, PENDING, now)
        status.started_at = now
    assert status.started_at is not None
    if now - status.started_at >= rule.for_s:
        _enter(status, FIRING, now)
        status.last_true = now
        status.clear_since = None
        status.last_notified = now
        return FIRING
    return None


def _while_firing(
    rule: AlertRuleConfig, status: AlertStatus, value: float, now: float
) -> str | None:
    clear_at = rule.threshold if rule.clear_threshold is None else rule.clear_threshold
    if holds(rule.op, value, clear_at):  # not clear yet (past the clearing line)
        status.last_true = now
        status.clear_since = None
        if rule.repeat_s > 0 and now - (status.last_notified or status.since) >= rule.repeat_s:
            status.last_notified = now
            return REMINDER
        return None
    if status.clear_since is None:
        status.clear_since = now
    if now - status.clear_since >= rule.keep_firing_for_s:
        _enter(status, RESOLVED, now)
        return RESOLVED
    return None


def _no_data(rule: AlertRuleConfig, status: AlertStatus, now: float) -> str | None:
    if status.state == PENDING:
        _enter(status, OK, now)
        status.started_at = None
    elif status.state == FIRING:
        last = status.last_true if status.last_true is not None else status.since
        if now - last >= max(rule.window_s, rule.keep_firing_for_s):
            _enter(status, RESOLVED, now)
            return RESOLVED
    return None


def _enter(status: AlertStatus, state: str, now: float) -> None:
    status.state = state
    status.since = now


# -- the state file ------------------------------------------------------------------------


def load_states(path: Path) -> dict[str, AlertStatus]:
    """The saved states by key; a missing file is empty, a bad one is logged and empty."""
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"version {data.get('version')!r}, expected {STATE_VERSION}")
        known = {f.name for f in fields(AlertStatus)}
        statuses = [
            AlertStatus(**{k: v for k, v in s.items() if k in known}) for s in data["alerts"]
        ]
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("alerts: ignoring the state file %s (%s): every alert starts ok", path, exc)
        return {}
    return {s.key: s for s in statuses}


def save_states(path: Path, statuses: Iterable[AlertStatus], host: str) -> None:
    """Write the states atomically; raises ``OSError`` (the caller logs it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "version": STATE_VERSION,
        "host": host,
        "alerts": [asdict(s) for s in sorted(statuses, key=lambda s: s.key)],
    }
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(body, f, indent=1, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
