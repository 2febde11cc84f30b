"""The embedded store (SQLite), read-only through ``exporters/store_reader.py``.

The reader aggregates in SQL (bucketed by key range scans, see its docstring); this
source only shapes its rows into the frames of ``dashboard/data/base.py``. Values
chosen in the UI only ever reach SQL as bound parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from agent import report
from agent.config import Config
from agent.report import SciReport
from dashboard.data.base import (
    LOOKBACK_MS,
    REMOTE_SUMS,
    DataSourceError,
    Derived,
    Hosts,
    empty,
    finish,
    with_rates,
    with_sci,
)
from dashboard.timerange import TimeRange
from exporters.store_reader import StoreReader, StoreReadError, open_reader


class SqliteSource(Derived):
    """Reads the agent's store at ``path`` (a missing file reads as no data yet)."""

    kind = "store"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def describe(self) -> str:
        return f"embedded store {self.path}"

    def cache_key(self) -> str:
        return f"store:{self.path.resolve()}"

    def _run(self, query: str, build: Callable[[StoreReader], pd.DataFrame]) -> pd.DataFrame:
        """Run ``build`` on a reader; no store is no data, a failure a DataSourceError."""
        if not self.path.exists():
            return empty(query)
        try:
            with open_reader(self.path) as store:
                return build(store)
        except StoreReadError as exc:
            raise DataSourceError(str(exc)) from None

    def _apps(self, store: StoreReader, hosts: Sequence[str], table: str) -> list[str]:
        names: set[str] = set()
        for host in hosts:
            names.update(store.distinct(table, "app", ("host", host)))
        return sorted(names)

    # -- the protocol --------------------------------------------------------------------

    def hosts(self, now_ms: int) -> pd.DataFrame:
        def build(store: StoreReader) -> pd.DataFrame:
            rows = []
            for host in store.distinct("intervals", "host"):
                row = store.latest_interval(host)
                if row is None or row[0] < now_ms - LOOKBACK_MS:
                    continue
                ts, seconds, joules = row
                rows.append((host, ts, seconds, joules / seconds if seconds else 0.0))
            return pd.DataFrame(rows, columns=["host", "last_ms", "interval_s", "watts"])

        return finish("hosts", self._run("hosts", build))

    def apps(self, hosts: Hosts = None) -> pd.DataFrame:
        def build(store: StoreReader) -> pd.DataFrame:
            return pd.DataFrame({"app": self._apps(store, store.hosts_of("sci", hosts), "sci")})

        return finish("apps", self._run("apps", build))

    def zones(self) -> pd.DataFrame:
        def build(store: StoreReader) -> pd.DataFrame:
            return pd.DataFrame({"zone": store.distinct("grid_intensity", "zone")})

        return finish("zones", self._run("zones", build))

    def power_by_component(self, hosts: Hosts, rng: TimeRange) -> pd.DataFrame:
        def build(store: StoreReader) -> pd.DataFrame:
            keys = [
                (h, c)
                for h in store.hosts_of("host_energy", hosts)
                for c in store.distinct("host_energy", "component", ("host", h))
            ]
            rows = store.power_buckets(keys, rng)
            return pd.DataFrame(rows, columns=["host", "component", "time", "n", "watts"])

        return finish("power_by_component", self._run("power_by_component", build))

    def _sci_rows(
        self,
        store: StoreReader,
        hosts: Hosts,
        apps: Sequence[str] | None,
        rng: TimeRange,
        bucketed: bool,
    ) -> pd.DataFrame:
        """Σ of the SCI terms per app (and bucket), over the chosen hosts."""
        wanted = None if apps is None else set(apps)
        keys = [
            (h, a)
            for h in store.hosts_of("sci", hosts)
            for a in store.distinct("sci", "app", ("host", h))
            if wanted is None or a in wanted
        ]
        sums = ["energy_kwh", "operational_g", "embodied_g", "units", "remote_g"]
        rows = store.sci_buckets(keys, rng, bucketed)
        df = pd.DataFrame(rows, columns=["host", "app", "time", "n", "unit", *sums])
        group = ["time", "app"] if bucketed else ["app"]
        if df.empty:
            return pd.DataFrame(columns=[*group, "unit", *sums])
        # the hosts' partial sums of each app (and bucket): a few rows per group
        out = df.groupby(group, as_index=False).agg(
            unit=("unit", lambda u: max((x for x in u if x), default=None)),
            **{c: (c, "sum") for c in sums},
        )
        return out.sort_values(group).reset_index(drop=True)

    def app_totals(self, hosts: Hosts, rng: TimeRange) -> pd.DataFrame:
        def build(store: StoreReader) -> pd.DataFrame:
            df = self._sci_rows(store, hosts, None, rng, bucketed=False)
            return df if df.empty else with_sci(df)

        return finish("app_totals", self._run("app_totals", build))

    def sci_over_time(
        self, hosts: Hosts, apps: Sequence[str] | None, rng: TimeRange
    ) -> pd.DataFrame:
        def build(store: StoreReader) -> pd.DataFrame:
            df = self._sci_rows(store, hosts, apps, rng, bucketed=True)
            return df if df.empty else with_rates(with_sci(df), rng)

        return finish("sci_over_time", self._run("sci_over_time", build))

    def remote_over_time(self, hosts: Hosts, app: str, rng: TimeRange) -> pd.DataFrame:
        def build(store: StoreReader) -> pd.DataFrame:
            rows = store.remote_buckets(hosts, app, rng, REMOTE_SUMS)
            df = pd.DataFrame(rows, columns=["time", *REMOTE_SUMS])
            df[list(REMOTE_SUMS)] = df[list(REMOTE_SUMS)].astype(float)
            return df

        return finish("remote_over_time", self._run("remote_over_time", build))

    def energy_by_component(self, hosts: Hosts, app: str, rng: TimeRange) -> pd.DataFrame:
        def build(store: StoreReader) -> pd.DataFrame:
            keys = [(h, app) for h in store.hosts_of("app_energy", hosts)]
            rows = store.app_energy_buckets(keys, rng)
            parts = pd.DataFrame(rows, columns=["host", "app", "time", "n", "cpu", "dram", "gpu"])
            if parts.empty:
                return empty("energy_by_component")
            wide = parts.groupby("time", as_index=False)[["cpu", "dram", "gpu"]].sum()
            return wide.melt("time", var_name="component", value_name="joules")

        return finish("energy_by_component", self._run("energy_by_component", build))

    def intensity_over_time(self, zones: Sequence[str] | None, rng: TimeRange) -> pd.DataFrame:
        def build(store: StoreReader) -> pd.DataFrame:
            if zones is not None and not zones:
                return empty("intensity_over_time")
            return pd.DataFrame(
                store.intensity_buckets(zones, rng),
                columns=["time", "zone", "provider", "gco2_per_kwh", "fallback_share", "intervals"],
            )

        return finish("intensity_over_time", self._run("intensity_over_time", build))

    def top_processes(self, host: str, rng: TimeRange, n: int = 10) -> pd.DataFrame:
        """Σ per (app, process) over the host's ``(host, ts_ms)`` key range, ranked."""

        def build(store: StoreReader) -> pd.DataFrame:
            rows = store.process_totals(host, rng)
            df = pd.DataFrame(rows, columns=["app", "process", "joules", "cpu_s"])
            if df.empty:
                return empty("top_processes")
            df = df.groupby(["app", "process"], as_index=False)[["joules", "cpu_s"]].sum()
            return df.sort_values("joules", ascending=False).head(n)

        return finish("top_processes", self._run("top_processes", build))

    def idle_vs_active(self, host: str, rng: TimeRange) -> pd.DataFrame:
        def build(store: StoreReader) -> pd.DataFrame:
            return pd.DataFrame(
                store.idle_vs_active(host, rng),
                columns=["time", "active_j", "idle_j", "unattributed_j"],
            )

        return finish("idle_vs_active", self._run("idle_vs_active", build))

    def estimated_components(self, hosts: Hosts, rng: TimeRange) -> pd.DataFrame:
        """Sources of each component's first and last rows in the range (index lookups)."""

        def build(store: StoreReader) -> pd.DataFrame:
            found: set[tuple[str, str, str]] = set()
            for host in store.hosts_of("host_energy", hosts):
                for part in store.distinct("host_energy", "component", ("host", host)):
                    for last in (False, True):
                        source = store.component_source(host, part, rng, last)
                        if source is not None:
                            found.add((host, part, source))
            return pd.DataFrame(sorted(found), columns=["host", "component", "source"])

        return finish("estimated_components", self._run("estimated_components", build))

    def sci_report(self, config: Config, app: str, start_ms: int, end_ms: int) -> SciReport:
        start = datetime.fromtimestamp(start_ms / 1000, UTC)
        end = datetime.fromtimestamp(end_ms / 1000, UTC)
        return report.build(config, app, start, end, str(self.path))
