"""The embedded store (SQLite), read-only; aggregation happens in SQL.

Series are bucketed with ``GROUP BY ((ts_ms - 1) / bucket_ms)``: bucket ``t`` holds the
interval ends in ``(t, t + bucket]``, as a range holds those in ``(start, end]``. Queries
name the hosts, apps and components they read (found by skip-scans over the primary keys), so SQLite
walks the ``(host, …, ts_ms)`` keys as contiguous ranges instead of the ``ts_ms`` index.
Values chosen in the UI only ever reach SQL as bound parameters.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from agent import report
from agent.config import Config
from agent.report import SciReport
from dashboard.data.base import (
    LOOKBACK_MS,
    DataSourceError,
    Derived,
    Hosts,
    empty,
    finish,
    with_rates,
    with_sci,
)
from dashboard.timerange import TimeRange

#: Connections a query spreads its keys over (each SQLite call runs without the GIL).
WORKERS = min(4, os.cpu_count() or 1)
_RANGE = "ts_ms > ? AND ts_ms <= ?"


def _marks(values: Sequence[object]) -> str:
    return ",".join("?" * len(values))


class SqliteSource(Derived):
    """Reads the agent's store at ``path`` (a missing file reads as no data yet)."""

    kind = "store"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def describe(self) -> str:
        return f"embedded store {self.path}"

    def cache_key(self) -> str:
        return f"store:{self.path.resolve()}"

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        db = sqlite3.connect(uri, uri=True, timeout=5.0)
        try:
            db.execute("PRAGMA query_only=1")
            yield db
        finally:
            db.close()

    def _run(self, query: str, build: Callable[[sqlite3.Connection], pd.DataFrame]) -> pd.DataFrame:
        """Run ``build`` on a read-only connection; no store (or no tables yet) is no data."""
        if not self.path.exists():
            return empty(query)
        try:
            with self._db() as db:
                return build(db)
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return empty(query)
            raise DataSourceError(f"cannot read the store {self.path}: {exc}") from None
        except sqlite3.Error as exc:
            raise DataSourceError(f"cannot read the store {self.path}: {exc}") from None

    # -- key skip-scans ------------------------------------------------------------------

    def _distinct(
        self, db: sqlite3.Connection, table: str, column: str, prefix: tuple[str, str] | None
    ) -> list[str]:
        """Distinct values of a key column (optionally under a key prefix), index-only."""
        where, args = ("", ()) if prefix is None else (f" AND {prefix[0]} = ?", (prefix[1],))
        out: list[str] = []
        (value,) = db.execute(f"SELECT min({column}) FROM {table} WHERE 1{where}", args).fetchone()
        while value is not None:
            out.append(value)
            (value,) = db.execute(
                f"SELECT min({column}) FROM {table} WHERE {column} > ?{where}", (value, *args)
            ).fetchone()
        return out

    def _hosts(self, db: sqlite3.Connection, hosts: Hosts, table: str) -> list[str]:
        known = self._distinct(db, table, "host", None)
        return known if hosts is None else [h for h in known if h in set(hosts)]

    def _apps(self, db: sqlite3.Connection, hosts: Sequence[str], table: str) -> list[str]:
        names: set[str] = set()
        for host in hosts:
            names.update(self._distinct(db, table, "app", ("host", host)))
        return sorted(names)

    def _per_bucket(
        self,
        table: str,
        key_columns: Sequence[str],
        keys: Sequence[Sequence[str]],
        aggregates: Sequence[str],
        rng: TimeRange,
        bucketed: bool = True,
    ) -> list[tuple[object, ...]]:
        """``(*key, t, rows, *aggregates)`` for each key and bucket holding rows.

        One statement per key walks the buckets (a recursive CTE) and aggregates each by
        a range scan of the ``(*key, ts_ms)`` primary key: no sorter, where a plain
        ``GROUP BY (ts_ms - 1) / bucket`` sorts every row first (3-4× slower on a week).
        Keys are spread over a few connections in threads (SQLite runs without the GIL).
        Not ``bucketed``: one bucket, the whole range.
        """
        match = " AND ".join(f"{c} = ?" for c in key_columns)
        packed = f"json_array(count(*), {', '.join(aggregates)})"
        if bucketed:
            step = rng.bucket_ms
            sql = (
                "WITH RECURSIVE b(t) AS (SELECT ? UNION ALL SELECT t + ? FROM b WHERE t + ? < ?)"
                f" SELECT t, (SELECT {packed} FROM {table} WHERE {match}"
                " AND ts_ms > max(t, ?) AND ts_ms <= min(t + ?, ?)) FROM b"
            )
            first = (rng.start_ms // step) * step

            def args(key: Sequence[str]) -> tuple[object, ...]:
                return (first, step, step, rng.end_ms, *key, rng.start_ms, step, rng.end_ms)
        else:
            sql = f"SELECT ?, {packed} FROM {table} WHERE {match} AND {_RANGE}"

            def args(key: Sequence[str]) -> tuple[object, ...]:
                return (rng.start_ms, *key, rng.start_ms, rng.end_ms)

        def work(chunk: Sequence[Sequence[str]]) -> list[tuple[object, ...]]:
            out: list[tuple[object, ...]] = []
            with self._db() as db:
                for key in chunk:
                    for t, values in db.execute(sql, args(key)):
                        count, *sums = json.loads(values)
                        if count:
                            out.append((*key, t, count, *sums))
            return out

        workers = max(1, min(WORKERS, len(keys)))
        chunks = [keys[i::workers] for i in range(workers)]
        if workers == 1:
            return work(keys)
        with ThreadPoolExecutor(workers, thread_name_prefix="dashboard-sqlite") as pool:
            return [row for part in pool.map(work, chunks) for row in part]

    # -- the protocol --------------------------------------------------------------------

    def hosts(self, now_ms: int) -> pd.DataFrame:
        def build(db: sqlite3.Connection) -> pd.DataFrame:
            rows = []
            for host in self._distinct(db, "intervals", "host", None):
                row = db.execute(
                    "SELECT ts_ms, interval_s, total_j FROM intervals WHERE host = ?"
                    " ORDER BY ts_ms DESC LIMIT 1",
                    (host,),
                ).fetchone()
                if row is None or row[0] < now_ms - LOOKBACK_MS:
                    continue
                ts, seconds, joules = row
                rows.append((host, ts, seconds, joules / seconds if seconds else 0.0))
            return pd.DataFrame(rows, columns=["host", "last_ms", "interval_s", "watts"])

        return finish("hosts", self._run("hosts", build))

    def apps(self, hosts: Hosts = None) -> pd.DataFrame:
        def build(db: sqlite3.Connection) -> pd.DataFrame:
            names = self._apps(db, self._hosts(db, hosts, "sci"), "sci")
            return pd.DataFrame({"app": names})

        return finish("apps", self._run("apps", build))

    def zones(self) -> pd.DataFrame:
        def build(db: sqlite3.Connection) -> pd.DataFrame:
            return pd.DataFrame({"zone": self._distinct(db, "grid_intensity", "zone", None)})

        return finish("zones", self._run("zones", build))

    def power_by_component(self, hosts: Hosts, rng: TimeRange) -> pd.DataFrame:
        def build(db: sqlite3.Connection) -> pd.DataFrame:
            keys = [
                (h, c)
                for h in self._hosts(db, hosts, "host_energy")
                for c in self._distinct(db, "host_energy", "component", ("host", h))
            ]
            rows = self._per_bucket("host_energy", ("host", "component"), keys, ["avg(watts)"], rng)
            return pd.DataFrame(rows, columns=["host", "component", "time", "n", "watts"])

        return finish("power_by_component", self._run("power_by_component", build))

    def _sci_rows(
        self,
        db: sqlite3.Connection,
        hosts: Hosts,
        apps: Sequence[str] | None,
        rng: TimeRange,
        bucketed: bool,
    ) -> pd.DataFrame:
        """Σ of the SCI terms per app (and bucket), over the chosen hosts."""
        wanted = None if apps is None else set(apps)
        keys = [
            (h, a)
            for h in self._hosts(db, hosts, "sci")
            for a in self._distinct(db, "sci", "app", ("host", h))
            if wanted is None or a in wanted
        ]
        sums = ["energy_kwh", "operational_g", "embodied_g", "units"]
        rows = self._per_bucket(
            "sci", ("host", "app"), keys, ["max(unit)", *(f"sum({c})" for c in sums)],
            rng, bucketed,
        )  # fmt: skip
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
        def build(db: sqlite3.Connection) -> pd.DataFrame:
            df = self._sci_rows(db, hosts, None, rng, bucketed=False)
            return df if df.empty else with_sci(df)

        return finish("app_totals", self._run("app_totals", build))

    def sci_over_time(
        self, hosts: Hosts, apps: Sequence[str] | None, rng: TimeRange
    ) -> pd.DataFrame:
        def build(db: sqlite3.Connection) -> pd.DataFrame:
            df = self._sci_rows(db, hosts, apps, rng, bucketed=True)
            return df if df.empty else with_rates(with_sci(df), rng)

        return finish("sci_over_time", self._run("sci_over_time", build))

    def energy_by_component(self, hosts: Hosts, app: str, rng: TimeRange) -> pd.DataFrame:
        def build(db: sqlite3.Connection) -> pd.DataFrame:
            keys = [(h, app) for h in self._hosts(db, hosts, "app_energy")]
            rows = self._per_bucket(
                "app_energy", ("host", "app"), keys,
                ["sum(cpu_j)", "sum(dram_j)", "sum(gpu_j)"], rng,
            )  # fmt: skip
            parts = pd.DataFrame(rows, columns=["host", "app", "time", "n", "cpu", "dram", "gpu"])
            if parts.empty:
                return empty("energy_by_component")
            wide = parts.groupby("time", as_index=False)[["cpu", "dram", "gpu"]].sum()
            return wide.melt("time", var_name="component", value_name="joules")

        return finish("energy_by_component", self._run("energy_by_component", build))

    def intensity_over_time(self, zones: Sequence[str] | None, rng: TimeRange) -> pd.DataFrame:
        def build(db: sqlite3.Connection) -> pd.DataFrame:
            where, args = ("", []) if zones is None else (f" AND zone IN ({_marks(zones)})", zones)
            if zones is not None and not zones:
                return empty("intensity_over_time")
            b = rng.bucket_ms
            rows = db.execute(
                "SELECT ((ts_ms - 1) / ?) * ? AS t, zone, provider,"
                " sum(gco2_per_kwh * interval_s) / sum(interval_s), avg(fallback), count(*)"
                f" FROM grid_intensity WHERE {_RANGE}{where}"
                " GROUP BY t, zone, provider ORDER BY t",
                (b, b, rng.start_ms, rng.end_ms, *args),
            ).fetchall()
            return pd.DataFrame(
                rows,
                columns=["time", "zone", "provider", "gco2_per_kwh", "fallback_share", "intervals"],
            )

        return finish("intensity_over_time", self._run("intensity_over_time", build))

    def top_processes(self, host: str, rng: TimeRange, n: int = 10) -> pd.DataFrame:
        """Σ per (app, process) over the host's ``(host, ts_ms)`` key range, cut into
        time slices aggregated in parallel, then ranked."""
        if not self.path.exists():
            return empty("top_processes")
        edges = [
            rng.start_ms + (rng.end_ms - rng.start_ms) * i // WORKERS for i in range(WORKERS + 1)
        ]

        def work(bounds: tuple[int, int]) -> list[tuple[object, ...]]:
            with self._db() as db:
                return db.execute(
                    "SELECT app, process, sum(joules), sum(cpu_s) FROM process_energy"
                    f" WHERE host = ? AND {_RANGE} GROUP BY app, process",
                    (host, *bounds),
                ).fetchall()

        try:
            with ThreadPoolExecutor(WORKERS, thread_name_prefix="dashboard-sqlite") as pool:
                rows = [r for part in pool.map(work, pairwise(edges)) for r in part]
        except sqlite3.Error as exc:
            if "no such table" in str(exc):
                return empty("top_processes")
            raise DataSourceError(f"cannot read the store {self.path}: {exc}") from None
        df = pd.DataFrame(rows, columns=["app", "process", "joules", "cpu_s"])
        if df.empty:
            return empty("top_processes")
        df = df.groupby(["app", "process"], as_index=False)[["joules", "cpu_s"]].sum()
        return finish("top_processes", df.sort_values("joules", ascending=False).head(n))

    def idle_vs_active(self, host: str, rng: TimeRange) -> pd.DataFrame:
        def build(db: sqlite3.Connection) -> pd.DataFrame:
            b = rng.bucket_ms
            rows = db.execute(
                "SELECT ((ts_ms - 1) / ?) * ? AS t, sum(total_j - idle_j - unattributed_j),"
                f" sum(idle_j), sum(unattributed_j) FROM intervals WHERE host = ? AND {_RANGE}"
                " GROUP BY t ORDER BY t",
                (b, b, host, rng.start_ms, rng.end_ms),
            ).fetchall()
            return pd.DataFrame(rows, columns=["time", "active_j", "idle_j", "unattributed_j"])

        return finish("idle_vs_active", self._run("idle_vs_active", build))

    def estimated_components(self, hosts: Hosts, rng: TimeRange) -> pd.DataFrame:
        """Sources of each component's first and last rows in the range (index lookups)."""

        def build(db: sqlite3.Connection) -> pd.DataFrame:
            found: set[tuple[str, str, str]] = set()
            for host in self._hosts(db, hosts, "host_energy"):
                for part in self._distinct(db, "host_energy", "component", ("host", host)):
                    for order in ("ASC", "DESC"):
                        row = db.execute(
                            "SELECT source FROM host_energy WHERE host = ? AND component = ?"
                            f" AND {_RANGE} ORDER BY ts_ms {order} LIMIT 1",
                            (host, part, rng.start_ms, rng.end_ms),
                        ).fetchone()
                        if row is not None:
                            found.add((host, part, row[0]))
            return pd.DataFrame(sorted(found), columns=["host", "component", "source"])

        return finish("estimated_components", self._run("estimated_components", build))

    def sci_report(self, config: Config, app: str, start_ms: int, end_ms: int) -> SciReport:
        start = datetime.fromtimestamp(start_ms / 1000, UTC)
        end = datetime.fromtimestamp(end_ms / 1000, UTC)
        return report.build(config, app, start, end, str(self.path))
