"""Reading fields out of decoded JSON, with errors that name the missing or bad field."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from agent.grid.base import ProviderError, out_of_range


def field(provider: str, data: Any, *path: str | int) -> Any:
    """``data[path[0]][path[1]]…``; a missing key or index raises ``ProviderError``."""
    value = data
    for i, key in enumerate(path):
        where = _where(path[: i + 1])
        if isinstance(key, int):
            if not isinstance(value, list) or not -len(value) <= key < len(value):
                raise ProviderError(provider, f"response has no {where} (empty or not a list)")
            value = value[key]
        else:
            if not isinstance(value, dict) or key not in value:
                raise ProviderError(provider, f"response has no '{where}' field")
            value = value[key]
    return value


def number(provider: str, data: Any, *path: str | int) -> float:
    """A finite number at ``path`` (a null says the source has no value yet)."""
    value = field(provider, data, *path)
    if value is None:
        raise ProviderError(provider, f"'{_where(path)}' is null (no value for now)")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProviderError(provider, f"'{_where(path)}' is not a number: {value!r:.40}")
    return float(value)


def intensity(provider: str, data: Any, *path: str | int, scale: float = 1.0) -> float:
    """The number at ``path`` × ``scale`` as gCO2e/kWh, within 0-5,000 (else an error)."""
    value = number(provider, data, *path) * scale
    problem = out_of_range(value)
    if problem is not None:
        raise ProviderError(provider, f"'{_where(path)}' is implausible: {problem}")
    return value


def items(provider: str, data: Any, *path: str | int) -> list[Any]:
    """A JSON list at ``path``."""
    value = field(provider, data, *path)
    if not isinstance(value, list):
        raise ProviderError(provider, f"'{_where(path)}' is not a list")
    return value


def timestamp(provider: str, data: Any, *path: str | int) -> datetime:
    """An ISO 8601 time at ``path``, as aware UTC (a time without offset is taken as UTC)."""
    value = field(provider, data, *path)
    if not isinstance(value, str):
        raise ProviderError(provider, f"'{_where(path)}' is not a time: {value!r:.40}")
    parsed = parse_time(value)
    if parsed is None:
        raise ProviderError(provider, f"'{_where(path)}' is not an ISO 8601 time: {value!r:.40}")
    return parsed


def parse_time(text: str) -> datetime | None:
    """An ISO 8601 time as aware UTC, or None when it does not parse."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _where(path: tuple[str | int, ...]) -> str:
    out = ""
    for key in path:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else key)
    return out
