"""Time ranges and bucket sizes: ~200-400 points per series whatever the range."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

#: The range picker's presets: label → seconds back from now.
PRESETS: dict[str, int] = {
    "Last 15 minutes": 15 * 60,
    "Last hour": 3600,
    "Last 6 hours": 6 * 3600,
    "Last 24 hours": 86400,
    "Last 7 days": 7 * 86400,
    "Last 30 days": 30 * 86400,
}
CUSTOM = "Custom"
DEFAULT_PRESET = "Last hour"

#: Bucket sizes a chart may use, in seconds (each divides a day evenly, or is one).
NICE_BUCKETS_S = (
    5,
    10,
    15,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
    10800,
    21600,
    43200,
    86400,
)
MAX_POINTS = 400


def bucket_s_for(range_s: float, max_points: int = MAX_POINTS, min_s: float = 0) -> int:
    """The smallest nice bucket giving at most ``max_points`` buckets over ``range_s``."""
    need = max(range_s / max_points, min_s)
    for step in NICE_BUCKETS_S:
        if step >= need:
            return step
    return math.ceil(need / 86400) * 86400


@dataclass(frozen=True)
class TimeRange:
    """Interval ends in ``(start_ms, end_ms]``, with the bucket its charts use."""

    start_ms: int
    end_ms: int
    bucket_ms: int

    @classmethod
    def ending(
        cls, end_ms: int, seconds: float, min_bucket_s: float = 0, align: bool = True
    ) -> TimeRange:
        """``seconds`` back from ``end_ms``; with ``align`` the start is a bucket boundary,
        so no chart starts with a partial bucket."""
        bucket_ms = bucket_s_for(seconds, min_s=min_bucket_s) * 1000
        start = end_ms - round(seconds * 1000)
        return cls((start // bucket_ms) * bucket_ms if align else start, end_ms, bucket_ms)

    @classmethod
    def between(
        cls, start: datetime, end: datetime, min_bucket_s: float = 0, align: bool = True
    ) -> TimeRange:
        """A custom range; naive datetimes are UTC."""
        lo, hi = to_ms(start), to_ms(end)
        if hi <= lo:
            raise ValueError("the range's end must be after its start")
        return cls.ending(hi, (hi - lo) / 1000, min_bucket_s, align)

    @property
    def seconds(self) -> float:
        return (self.end_ms - self.start_ms) / 1000

    @property
    def bucket_s(self) -> float:
        return self.bucket_ms / 1000

    def previous(self) -> TimeRange:
        """The period of the same length just before this one."""
        span = self.end_ms - self.start_ms
        return TimeRange(self.start_ms - span, self.start_ms, self.bucket_ms)

    def label(self) -> str:
        return f"{fmt_ms(self.start_ms)} → {fmt_ms(self.end_ms)} UTC"


def to_ms(t: datetime) -> int:
    """A datetime (naive = UTC) → integer ms since the epoch."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return round(t.timestamp() * 1000)


def now_ms() -> int:
    return round(datetime.now(UTC).timestamp() * 1000)


def fmt_ms(ms: float) -> str:
    """``2024-05-01 12:00`` (UTC)."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def fmt_ago(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3.5 h``, ``2.0 d``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
