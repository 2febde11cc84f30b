"""The one small interface every page reads through, and the frames it returns.

Every query takes a ``TimeRange`` (interval ends in ``(start_ms, end_ms]``) and returns
a pandas DataFrame already aggregated by the database: time series come bucketed by
``rng.bucket_ms`` (``time`` is the bucket's start, naive UTC; bucket ``t`` holds the interval
ends in ``(t, t + bucket]``, as ranges do), so a 30-day range is a few
hundred rows per series, never the raw 5-second points. ``hosts`` filters are a list of
host names, or None for every host. Pseudo-apps (``_idle``, ``_unattributed``) are
returned like apps; pages decide whether to show them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import pandas as pd

from agent.config import Config
from agent.report import SciReport
from dashboard.timerange import TimeRange
from exporters.store_reader import REMOTE_SUMS as REMOTE_SUMS

Hosts = Sequence[str] | None


#: Columns of each query's frame, in order (the contract both sources honour).
COLUMNS: dict[str, tuple[str, ...]] = {
    "hosts": ("host", "last_ms", "interval_s", "watts"),
    "apps": ("app",),
    "zones": ("zone",),
    "power_by_component": ("time", "host", "component", "watts"),
    "app_totals": (
        "app",
        "unit",
        "energy_kwh",
        "operational_g",
        "embodied_g",
        "remote_g",
        "units",
        "carbon_g",
        "sci",
    ),
    "sci_over_time": (
        "time",
        "app",
        "unit",
        "energy_kwh",
        "operational_g",
        "embodied_g",
        "remote_g",
        "units",
        "carbon_g",
        "sci",
        "units_per_s",
    ),
    "units_per_second": ("time", "units", "units_per_s"),
    "energy_by_component": ("time", "component", "joules"),
    "operational_vs_embodied": ("time", "operational_g", "embodied_g"),
    "intensity_over_time": (
        "time",
        "zone",
        "provider",
        "gco2_per_kwh",
        "fallback_share",
        "intervals",
    ),
    "top_processes": ("app", "process", "joules", "cpu_s"),
    "idle_vs_active": ("time", "active_j", "idle_j", "unattributed_j"),
    "estimated_components": ("host", "component", "source"),
    "remote_over_time": ("time", *REMOTE_SUMS),
}

#: How far back a host's last data is looked for (the store's default retention).
LOOKBACK_MS = 30 * 86400 * 1000


class DataSourceError(Exception):
    """The data could not be read; the message names the cause, never a credential."""


class DataSource(Protocol):
    """Read-only queries over the agent's measurements (see the module docstring)."""

    kind: str  # "store" or "influxdb"

    def describe(self) -> str:
        """Where the data comes from, for people (no credentials)."""
        ...

    def cache_key(self) -> str:
        """A stable identity for caches (no credentials)."""
        ...

    def hosts(self, now_ms: int) -> pd.DataFrame:
        """Every host seen in the last 30 days: its last interval's end, length and watts."""
        ...

    def apps(self, hosts: Hosts = None) -> pd.DataFrame:
        """Application names with SCI rows (pseudo-apps included), sorted."""
        ...

    def zones(self) -> pd.DataFrame:
        """Grid zones with intensity rows, sorted."""
        ...

    def power_by_component(self, hosts: Hosts, rng: TimeRange) -> pd.DataFrame:
        """Mean watts per bucket, host and component."""
        ...

    def app_totals(self, hosts: Hosts, rng: TimeRange) -> pd.DataFrame:
        """Per app over the range: E, operational, embodied and remote grams, units, SCI."""
        ...

    def sci_over_time(
        self, hosts: Hosts, apps: Sequence[str] | None, rng: TimeRange
    ) -> pd.DataFrame:
        """Per bucket and app: sums, SCI = Σ carbon / Σ units of the bucket, units per second.

        Carbon is local (operational + embodied) plus ``remote_g``, the app's AI calls
        (0 without any), as in the ``sci`` rows and the report."""
        ...

    def remote_over_time(self, hosts: Hosts, app: str, rng: TimeRange) -> pd.DataFrame:
        """An app's remote AI calls per bucket: Σ of ``REMOTE_SUMS`` (no rows without calls)."""
        ...

    def units_per_second(self, hosts: Hosts, app: str, rng: TimeRange) -> pd.DataFrame:
        """An app's functional units per second, per bucket."""
        ...

    def energy_by_component(self, hosts: Hosts, app: str, rng: TimeRange) -> pd.DataFrame:
        """An app's joules per bucket and component (cpu, dram, gpu), long format."""
        ...

    def operational_vs_embodied(self, hosts: Hosts, app: str, rng: TimeRange) -> pd.DataFrame:
        """An app's operational (E × I) and embodied (M) grams per bucket."""
        ...

    def intensity_over_time(self, zones: Sequence[str] | None, rng: TimeRange) -> pd.DataFrame:
        """Mean gCO2e/kWh per bucket, zone and provider, with the share of fallback values."""
        ...

    def top_processes(self, host: str, rng: TimeRange, n: int = 10) -> pd.DataFrame:
        """A host's biggest consumers over the range (``_other`` sums the rest)."""
        ...

    def idle_vs_active(self, host: str, rng: TimeRange) -> pd.DataFrame:
        """A host's joules per bucket: used by processes, idle, unattributed."""
        ...

    def estimated_components(self, hosts: Hosts, rng: TimeRange) -> pd.DataFrame:
        """Which (host, component) pairs reported which source (rapl, nvml, model)."""
        ...

    def sci_report(self, config: Config, app: str, start_ms: int, end_ms: int) -> SciReport:
        """``agent.report``'s SCI report of ``app``; raises ``ReportError`` when it has no data."""
        ...


class Derived:
    """Queries both sources derive from ``sci_over_time`` the same way."""

    def sci_over_time(
        self, hosts: Hosts, apps: Sequence[str] | None, rng: TimeRange
    ) -> pd.DataFrame:
        raise NotImplementedError

    def units_per_second(self, hosts: Hosts, app: str, rng: TimeRange) -> pd.DataFrame:
        frame = self.sci_over_time(hosts, [app], rng)
        return frame[["time", "units", "units_per_s"]].reset_index(drop=True)

    def operational_vs_embodied(self, hosts: Hosts, app: str, rng: TimeRange) -> pd.DataFrame:
        frame = self.sci_over_time(hosts, [app], rng)
        return frame[["time", "operational_g", "embodied_g"]].reset_index(drop=True)


_TEXT = {"host", "app", "unit", "component", "zone", "provider", "process", "source"}


def empty(query: str) -> pd.DataFrame:
    """The frame of ``query`` with no rows (typed, so arithmetic on it still works)."""
    return pd.DataFrame(
        {
            c: pd.Series(dtype="datetime64[ns]" if c == "time" else object if c in _TEXT else float)
            for c in COLUMNS[query]
        }
    )


def finish(query: str, df: pd.DataFrame) -> pd.DataFrame:
    """``df`` (``time`` in ms) → the query's frame: its columns in order, ``time`` as UTC."""
    if df.empty:
        return empty(query)
    df = df.copy()
    if "time" in df.columns:
        df["time"] = pd.to_datetime(df["time"].astype("int64"), unit="ms")
    out = df[list(COLUMNS[query])].reset_index(drop=True)
    out.columns.name = None
    return out


def with_sci(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``carbon_g`` (operational + embodied + remote AI calls) and ``sci`` (Σ carbon /
    Σ units; NaN where no unit was counted); a missing ``remote_g`` is 0."""
    df = df.copy()
    if "remote_g" in df.columns:
        df["remote_g"] = pd.to_numeric(df["remote_g"]).astype(float).fillna(0.0)
    else:
        df["remote_g"] = 0.0
    df["carbon_g"] = df["operational_g"] + df["embodied_g"] + df["remote_g"]
    units = df["units"].where(df["units"] > 0)
    df["sci"] = df["carbon_g"] / units
    return df


def with_rates(df: pd.DataFrame, rng: TimeRange) -> pd.DataFrame:
    """Add ``units_per_s``: units over the part of each bucket inside the range (ms times)."""
    df = df.copy()
    start = df["time"].astype("int64")
    lo = start.clip(lower=rng.start_ms)
    hi = (start + rng.bucket_ms).clip(upper=rng.end_ms)
    seconds = ((hi - lo) / 1000).where(hi > lo)
    df["units_per_s"] = df["units"] / seconds
    return df
