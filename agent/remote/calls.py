"""Remote AI calls (an app's requests to a hosted model) counted per interval.

Calls arrive from the local endpoint (``POST /v1/calls``) on any thread; the cycle
``take()``s the sums since the previous cycle and the estimator prices them. A report
may stand for several calls (``count``): its tokens and latency are then the calls'
totals. Cache hits (``cached``) are counted apart: they cost no remote energy.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.units.counter import MAX_COUNT, UnitError, kind_of

#: The fields of one report: required, then optional.
REQUIRED_FIELDS = ("app", "provider", "model", "input_tokens", "output_tokens")
OPTIONAL_FIELDS = ("cached", "count", "latency_s")
_MAX_NAME = 200  # provider and model names are tags: keep them short


class UnknownApp(UnitError):
    """A well-formed call report for an app this agent does not know (answered 422)."""


@dataclass(frozen=True, slots=True)
class CallKey:
    """What calls are summed by: the app, the provider and model, cache hit or not."""

    app: str
    provider: str
    model: str
    cached: bool


@dataclass(frozen=True, slots=True)
class CallSums:
    """Calls and their token and latency totals (``latency_s`` 0 when never reported)."""

    count: float = 0.0
    input_tokens: float = 0.0
    output_tokens: float = 0.0
    latency_s: float = 0.0
    timed: float = 0.0  # how many of the calls came with a latency

    def __add__(self, other: CallSums) -> CallSums:
        return CallSums(
            self.count + other.count,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.latency_s + other.latency_s,
            self.timed + other.timed,
        )


def check_call(item: Mapping[str, Any], known_apps: Collection[str]) -> tuple[CallKey, CallSums]:
    """Validate one report's values (its shape is checked by the endpoint).

    Raises ``UnitError`` naming the field: ``app`` for an app not configured (422).
    """
    for name in ("app", "provider", "model"):
        value = item[name]
        if not isinstance(value, str) or not value.strip():
            raise UnitError(name, f"{name} must be a non-empty string, got {kind_of(value)}")
        if len(value) > _MAX_NAME:
            raise UnitError(name, f"{name} must be at most {_MAX_NAME} characters")
    app = item["app"]
    if app not in known_apps:
        configured = ", ".join(sorted(known_apps)) or "none"
        message = f"app {app[:80]!r} is not configured; configured apps: {configured}"
        raise UnknownApp("app", message)
    cached = item.get("cached", False)
    if not isinstance(cached, bool):
        raise UnitError("cached", f"cached must be true or false, got {kind_of(cached)}")
    count = _number(item, "count", 1)
    latency = item.get("latency_s")
    sums = CallSums(
        count=count,
        input_tokens=_number(item, "input_tokens", 0),
        output_tokens=_number(item, "output_tokens", 0),
        latency_s=0.0 if latency is None else _number(item, "latency_s", 0),
        timed=0.0 if latency is None else count,
    )
    return CallKey(app, item["provider"].strip().lower(), item["model"].strip(), cached), sums


def _number(item: Mapping[str, Any], name: str, default: float) -> float:
    """A finite number >= 0 (at most ``MAX_COUNT``) from ``item[name]``."""
    value = item.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UnitError(name, f"{name} must be a number, got {kind_of(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number) or number < 0 or number > MAX_COUNT:
        raise UnitError(name, f"{name} must be a finite number from 0 to {MAX_COUNT:g}")
    return number


class CallLedger:
    """Thread-safe sums of remote calls per ``CallKey`` since the last ``take()``."""

    def __init__(self, apps: Iterable[str]) -> None:
        self._apps = frozenset(apps)
        self._lock = threading.Lock()
        self._interval: dict[CallKey, CallSums] = {}
        self._totals = CallSums()

    @property
    def apps(self) -> frozenset[str]:
        """The configured apps: calls for any other are refused."""
        return self._apps

    def set_apps(self, apps: Iterable[str]) -> None:
        """Know these apps from now on (a reload); sums so far are kept."""
        self._apps = frozenset(apps)

    def add_many(self, reports: Iterable[Mapping[str, Any]]) -> int:
        """Check every report, then add them all or none (``UnitError.index``: the bad one)."""
        checked: list[tuple[CallKey, CallSums]] = []
        for index, item in enumerate(reports):
            try:
                checked.append(check_call(item, self._apps))
            except UnitError as exc:
                exc.index = index
                raise
        with self._lock:
            for key, sums in checked:
                self._interval[key] = self._interval.get(key, CallSums()) + sums
                self._totals = self._totals + sums
        return len(checked)

    def take(self) -> dict[CallKey, CallSums]:
        """The sums since the previous ``take()``, resetting them atomically."""
        with self._lock:
            taken, self._interval = self._interval, {}
        return taken

    def give_back(self, taken: Mapping[CallKey, CallSums]) -> None:
        """Return sums a failed cycle took, so the next ``take()`` has them again."""
        with self._lock:
            for key, sums in taken.items():
                self._interval[key] = self._interval.get(key, CallSums()) + sums

    def totals(self) -> CallSums:
        """Every call counted since the ledger was created."""
        with self._lock:
            return self._totals
