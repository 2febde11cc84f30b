"""``sci-agent alerts`` (the rules and their states) and ``sci-agent alerts test``.

Both read the config; the listing also reads the state file and the outbox the running
agent keeps in ``[alerts] state_dir``, so it works whether the agent runs or not.
``alerts test`` sends one test notification straight to each webhook (not through
the outbox) and prints each answer, so a team sees at once whether a URL, a secret or a
proxy is wrong. Neither ever prints a webhook's URL, secret or headers.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from agent.alerts.config import AlertRuleConfig, AlertsConfig
from agent.alerts.delivery import send_now, test_notification
from agent.alerts.engine import OUTBOX_FILE, STATE_FILE
from agent.alerts.formats import human
from agent.alerts.outbox import Outbox
from agent.alerts.state import AlertStatus, load_states
from sci import humanize


def list_alerts(cfg: AlertsConfig, host: str) -> str:
    """The rules, each alert's state and value, and what waits in the outbox."""
    if not cfg.rules and not cfg.webhooks:
        return "no alert rules: add [[alerts.rules]] and [[alerts.webhooks]] (docs/alerts.md)\n"
    states = load_states(Path(cfg.state_dir) / STATE_FILE)
    lines = ["RULE                     CONDITION                               WEBHOOKS"]
    for rule in cfg.rules:
        lines.append(f"{rule.name:<24} {_condition(rule):<39} {', '.join(rule.webhooks) or '-'}")
    lines += ["", "ALERT                                    STATE     SINCE (UTC)          VALUE"]
    shown = 0
    by_name = {r.name: r for r in cfg.rules}
    for status in sorted(states.values(), key=lambda s: s.key):
        known = by_name.get(status.rule)
        if known is None:
            continue
        lines.append(_status_line(status, known))
        shown += 1
    if not shown:
        lines.append("(no alert evaluated yet: the agent writes states while it runs)")
    pending = _pending(cfg)
    if pending:
        lines += ["", "waiting for delivery: " + ", ".join(f"{k} {v}" for k, v in pending.items())]
    return "\n".join(lines) + "\n"


def _condition(rule: AlertRuleConfig) -> str:
    scope = f" app={rule.app}" if rule.app else ""
    wait = f" for {rule.for_s:g}s" if rule.for_s else ""
    threshold = humanize.number(rule.threshold, 6)  # 0.00002, never 2e-05
    return f"{rule.metric}{scope} {rule.op} {threshold} over {rule.window_s:g}s{wait}"


def _status_line(status: AlertStatus, rule: AlertRuleConfig) -> str:
    since = datetime.fromtimestamp(status.since, UTC).strftime("%Y-%m-%d %H:%M:%S")
    value = human(rule.metric, status.value)
    return f"{status.key:<40} {status.state:<9} {since}  {value}"


def _pending(cfg: AlertsConfig) -> dict[str, int]:
    path = Path(cfg.state_dir) / OUTBOX_FILE
    if not path.exists():
        return {}
    outbox = Outbox(path)
    try:
        return {h.name: n for h in cfg.webhooks if (n := outbox.pending(h.name))}
    finally:
        outbox.close()


def test_webhooks(cfg: AlertsConfig, host: str, only: str | None = None) -> tuple[str, int]:
    """Send a test notification to each webhook (or ``only``); the report and exit status."""
    hooks = [h for h in cfg.webhooks if only is None or h.name == only]
    if not cfg.webhooks:
        return "no [[alerts.webhooks]] in the config\n", 2
    if not hooks:
        known = ", ".join(h.name for h in cfg.webhooks)
        return f"no webhook named {only!r} (configured: {known})\n", 2
    lines, failed = [], 0
    for hook in hooks:
        now = time.time()
        answer = send_now(test_notification(host, hook, cfg.dashboard_url, now), hook, now)
        took = f"{answer.elapsed_s * 1000:.0f} ms"
        if answer.error is not None:
            failed += 1
            lines.append(f"{hook.name} ({hook.format}): failed after {took}: {answer.error}")
            continue
        ok = answer.status is not None and 200 <= answer.status < 300
        failed += not ok
        body = answer.body.strip().replace("\n", " ")
        verdict = "delivered" if ok else "refused"
        lines.append(
            f"{hook.name} ({hook.format}): {verdict}, HTTP {answer.status} in {took}"
            + (f": {body}" if body else "")
        )
    return "\n".join(lines) + "\n", 1 if failed else 0
