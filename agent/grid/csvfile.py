"""Intensities from a local CSV file: your own data, or an export from any source.

Columns: ``time`` (ISO 8601; without an offset it is UTC) and ``gco2_per_kwh``, plus an
optional ``signal`` (``average`` or ``marginal``, default ``average``). Rows may come in
any order. The current value is the latest row at or before now, the forecast the rows
after now. The file is read again when its modification time or size changes; a bad row
is an error naming the file and line.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from agent.config_check import ConfigError
from agent.grid.base import MAX_GCO2_PER_KWH, Provider, ProviderError, out_of_range
from agent.grid.parse import parse_time
from agent.grid.registry import PROVIDERS, require
from agent.records import IntensityValue, Signal, utc_now

if TYPE_CHECKING:
    from agent.config import GridConfig

REQUIRED = ("time", "gco2_per_kwh")


@dataclass(frozen=True, slots=True)
class _Row:
    time: datetime
    gco2_per_kwh: float
    signal: Signal


class CsvProvider(Provider):
    """Reads ``path`` (see the module docstring); checks the file every ``ttl_s``."""

    name = "csv"
    signal: Signal = "average"
    ttl_s = 60.0
    remote = False

    def __init__(self, path: str, now: Callable[[], datetime] = utc_now) -> None:
        self.path = path
        self._now = now
        self._stamp: tuple[int, int] | None = None
        self._rows: list[_Row] = []

    def fetch(self, zone: str) -> IntensityValue:
        rows = self._load()
        now = self._now()
        past = [row for row in rows if row.time <= now]
        if not past:
            raise ProviderError(
                self.name, f"{self.path}: no row at or before now (first row: {rows[0].time})"
            )
        return self._value(zone, past[-1])

    def forecast(self, zone: str) -> list[IntensityValue]:
        now = self._now()
        return [self._value(zone, row) for row in self._load() if row.time > now]

    def _value(self, zone: str, row: _Row) -> IntensityValue:
        return IntensityValue(zone, row.gco2_per_kwh, self.name, row.signal, row.time)

    def _load(self) -> list[_Row]:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise ProviderError(self.name, f"cannot read {self.path}: {exc.strerror}") from None
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._rows = self._parse()
            self._stamp = stamp
        return self._rows

    def _parse(self) -> list[_Row]:
        try:
            with open(self.path, encoding="utf-8", newline="") as f:
                reader = csv.DictReader(f)
                header = [name.strip() for name in reader.fieldnames or []]
                missing = [name for name in REQUIRED if name not in header]
                if missing:
                    raise self._error(1, f"missing column {', '.join(missing)} (has: {header})")
                reader.fieldnames = header
                rows = [self._row(reader.line_num, raw) for raw in reader]
        except OSError as exc:
            raise ProviderError(self.name, f"cannot read {self.path}: {exc.strerror}") from None
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ProviderError(self.name, f"{self.path}: not a CSV file ({exc})") from None
        if not rows:
            raise ProviderError(self.name, f"{self.path}: no data rows")
        return sorted(rows, key=lambda row: row.time)

    def _row(self, line: int, raw: dict[str, str | None]) -> _Row:
        text = (raw.get("time") or "").strip()
        time = parse_time(text)
        if time is None:
            raise self._error(line, f"bad time {text!r} (expected ISO 8601)")
        text = (raw.get("gco2_per_kwh") or "").strip()
        try:
            gco2 = float(text)
        except ValueError:
            gco2 = math.nan
        if out_of_range(gco2) is not None:
            raise self._error(
                line,
                f"bad gco2_per_kwh {text!r} (expected a number from 0 to {MAX_GCO2_PER_KWH:g})",
            )
        text = (raw.get("signal") or "").strip() or self.signal
        if text not in ("average", "marginal"):
            raise self._error(line, f"bad signal {text!r} (expected average or marginal)")
        signal: Signal = "marginal" if text == "marginal" else "average"
        return _Row(time, gco2, signal)

    def _error(self, line: int, message: str) -> ProviderError:
        return ProviderError(self.name, f"{self.path} line {line}: {message}")


# -- registration: the [grid.csv] section, its check and the factory ---------------------------


@dataclass(frozen=True)
class CsvGridConfig:
    path: str | None = None


def _validate_csv(grid: GridConfig) -> None:
    if "csv" in grid.providers and not grid.csv.path:
        raise ConfigError("grid.csv.path: required by the csv provider")


def _build_csv(grid: GridConfig, zone: str) -> Provider:
    path: str | None = grid.csv.path
    require("grid.csv.path", path, "csv")
    assert path is not None
    return CsvProvider(path)


PROVIDERS.register("csv", _build_csv, section=CsvGridConfig, validate=_validate_csv, order=70)
