"""The records passed between alert evaluation and delivery.

``Notification`` is what the rule engine hands to the outbox: one message about one
alert (rule × scope) for one webhook. Delivery renders it in the webhook's format at
each attempt; its ``id`` is the Standard Webhooks ``webhook-id``, the same on every
retry, so a receiver can drop duplicates.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, fields
from typing import Any

FIRING = "firing"
RESOLVED = "resolved"


def new_message_id() -> str:
    """A fresh ``webhook-id``: ``msg_`` and 32 hex digits."""
    return f"msg_{uuid.uuid4().hex}"


@dataclass(frozen=True)
class Notification:
    """One message about one alert to one webhook."""

    id: str  # webhook-id: unique per notification, the same on each of its retries
    webhook: str  # the [[alerts.webhooks]] name it goes to
    key: str  # the alert's identity, rule and scope ("sci-regression/app=checkout")
    alert: str  # the rule's name
    state: str  # FIRING or RESOLVED
    severity: str
    host: str
    app: str | None  # the app, for per-app metrics
    part: str | None  # the sensor or sink, for staleness_s ("sink:influxdb")
    metric: str
    op: str
    value: float | None  # the metric's value when the notification was made
    threshold: float
    window_s: float
    started_at: float  # Unix time the condition started to hold
    ended_at: float | None  # Unix time the alert resolved (RESOLVED only)
    created_at: float  # Unix time this notification was made
    summary: str
    dashboard_url: str | None = None
    reminder: bool = False  # a repeat while firing (repeat_s), or Alertmanager's re-post
    test: bool = False  # sent by ``sci-agent alerts test``
    unit: str | None = None  # the app's functional unit, for an SCI ("request")

    def to_json(self) -> str:
        """The notification as a JSON object (how the outbox stores it)."""
        return json.dumps(asdict(self), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Notification:
        """The inverse of ``to_json``; unknown keys (from a newer agent) are ignored."""
        data: dict[str, Any] = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
