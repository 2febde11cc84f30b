"""Building InfluxQL safely: every value chosen in the UI goes through ``literal``.

A string literal is single-quoted with ``\\`` → ``\\\\``, ``'`` → ``\\'`` and a newline as
``\\n``; an identifier is double-quoted the same way with ``"``. InfluxQL's scanner turns
those escapes back into the original characters, so a name containing quotes or
backslashes matches itself and can never end the literal early.
"""

from __future__ import annotations

from collections.abc import Sequence

from dashboard.timerange import TimeRange


def _escape(text: str, quote: str) -> str:
    return text.replace("\\", "\\\\").replace(quote, "\\" + quote).replace("\n", "\\n")


def literal(value: str) -> str:
    """A string literal: ``a'b`` → ``'a\\'b'``."""
    return "'" + _escape(value, "'") + "'"


def ident(name: str) -> str:
    """An identifier: ``app`` → ``"app"``."""
    return '"' + _escape(name, '"') + '"'


def equals_any(key: str, values: Sequence[str]) -> str:
    """``("host" = 'a' OR "host" = 'b')``; an empty list matches nothing."""
    if not values:
        return "false"
    return "(" + " OR ".join(f"{ident(key)} = {literal(v)}" for v in values) + ")"


def time_range(rng: TimeRange) -> str:
    """Interval ends in ``(start, end]``, as integer milliseconds."""
    return f"time > {int(rng.start_ms)}ms AND time <= {int(rng.end_ms)}ms"


def by_time(rng: TimeRange) -> str:
    """``time(300000ms, 1ms)``: the chart's bucket, shifted so that a bucket holds the
    interval ends in ``(t, t + bucket]`` like the store's; subtract 1 ms from its times."""
    return f"time({int(rng.bucket_ms)}ms, 1ms)"


def where(*conditions: str | None) -> str:
    """Join the conditions given with AND."""
    return " AND ".join(c for c in conditions if c)
