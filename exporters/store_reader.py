"""Every read of the embedded store: the report, doctor, alerts, jobs and the dashboard.

``StoreReader`` runs named queries over one connection (a read-only one from ``open``,
or the writer's own) and returns plain rows; callers never write SQL. A table a store
does not have yet (written by an older version) reads as no rows, and version 1's
process rows (``exporters/store_schema.py``) read like version 2's. Any other failure
is a ``StoreReadError`` naming the store and the cause.

Time windows are ``(lo, hi]`` in ms (interval ends). Series are bucketed as
``((ts_ms - 1) / bucket) * bucket``: bucket ``t`` holds the ends in ``(t, t + bucket]``.
Queries name the hosts, apps and components they read (found by skip-scans over the
primary keys), so SQLite walks the ``(host, …, ts_ms)`` keys as contiguous ranges
instead of the ``ts_ms`` index.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any, Protocol, TypeVar

from exporters.store_schema import StoreError, connect_readonly

#: The fields of ``remote_inference`` that add up (an app's AI calls over a window),
#: summed alike by the report and both dashboard sources.
REMOTE_SUMS = (
    "calls",
    "cached_calls",
    "unestimated_calls",
    "input_tokens",
    "output_tokens",
    "energy_kwh",
    "energy_kwh_min",
    "energy_kwh_max",
    "usage_g",
    "embodied_g",
)

#: Connections a query spreads its keys over (each SQLite call runs without the GIL).
WORKERS = min(4, os.cpu_count() or 1)
_RANGE = "ts_ms > ? AND ts_ms <= ?"
_CORRUPT_CODES = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
Row = tuple[Any, ...]
T = TypeVar("T")


class Window(Protocol):
    """Interval ends in ``(start_ms, end_ms]``, bucketed by ``bucket_ms`` (a TimeRange)."""

    @property
    def start_ms(self) -> int: ...
    @property
    def end_ms(self) -> int: ...
    @property
    def bucket_ms(self) -> int: ...


class StoreReadError(StoreError):
    """A read failed; ``cause`` is SQLite's message, ``corrupt`` whether the file is damaged."""

    def __init__(self, path: Path, exc: sqlite3.Error) -> None:
        super().__init__(f"cannot read the store {path}: {exc}")
        self.cause = str(exc)
        code = getattr(exc, "sqlite_errorcode", 0) or 0
        self.corrupt = code & 0xFF in _CORRUPT_CODES


@contextmanager
def open_reader(path: str | Path, timeout_s: float = 5.0) -> Iterator[StoreReader]:
    """A reader on a read-only connection to ``path``; raises ``StoreReadError``."""
    path = Path(path)
    try:
        db = connect_readonly(path, timeout_s)
    except sqlite3.Error as exc:
        raise StoreReadError(path, exc) from None
    try:
        yield StoreReader(db, path)
    finally:
        db.close()


def read_runs(path: str | Path, run_id_prefix: str) -> list[dict[str, Any]]:
    """The runs whose id starts with ``run_id_prefix`` (read-only; [] with no store)."""
    path = Path(path)
    if not path.exists():
        return []
    with open_reader(path) as reader:
        return reader.runs(run_id_prefix)


class StoreReader:
    """Named queries over ``db``, the store at ``path``. On the writer's own connection
    (``wrap_errors=False``) SQLite's errors pass through, for its fault handling."""

    def __init__(self, db: sqlite3.Connection, path: Path, *, wrap_errors: bool = True) -> None:
        self.db = db
        self.path = path
        self.wrap_errors = wrap_errors

    def _all(self, sql: str, args: Sequence[object] = ()) -> list[Row]:
        """Every row; [] when the table does not exist yet."""
        try:
            return self.db.execute(sql, tuple(args)).fetchall()
        except sqlite3.Error as exc:
            if isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc):
                return []
            if not self.wrap_errors:
                raise
            raise StoreReadError(self.path, exc) from None

    def _columns(self, table: str) -> list[str]:
        """The columns ``table`` has in this store ([] when it has no such table)."""
        return [str(row[1]) for row in self._all(f"PRAGMA table_info({table})")]

    def _one(self, sql: str, args: Sequence[object] = ()) -> Row | None:
        rows = self._all(sql, args)
        return rows[0] if rows else None

    # -- report, doctor, alerts, jobs ----------------------------------------------------

    def interval_count(self) -> int:
        """How many intervals the store holds (all hosts)."""
        row = self._one("SELECT count(*) FROM intervals")
        return int(row[0]) if row else 0

    def sci_totals(self, app: str, lo: int, hi: int) -> Row:
        """``app``'s (count, Σ energy_kwh, Σ operational_g, Σ embodied_g, Σ units,
        Σ intensity × interval_s, Σ interval_s, unit, first start ms, last end ms)."""
        row = self._one(
            "SELECT count(*), sum(energy_kwh), sum(operational_g), sum(embodied_g), sum(units),"
            " sum(intensity * interval_s), sum(interval_s), max(unit),"
            f" min(ts_ms - interval_s * 1000), max(ts_ms) FROM sci WHERE app = ? AND {_RANGE}",
            (app, lo, hi),
        )
        return row if row is not None else (0, *([None] * 9))

    def remote_totals(self, app: str, lo: int, hi: int, columns: Sequence[str]) -> Row | None:
        """``app``'s remote AI calls in the window: (rows, Σ each of ``columns``); None
        without any (or in a store from before them)."""
        sums = ", ".join(f"sum({c})" for c in columns if c.isidentifier())
        row = self._one(
            f"SELECT count(*), {sums} FROM remote_inference WHERE app = ? AND {_RANGE}",
            (app, lo, hi),
        )
        return row if row is not None and row[0] else None

    def remote_models(self, app: str, lo: int, hi: int) -> list[Row]:
        """Per (provider, model) of ``app``'s calls: provider, model, method, mix zone,
        mix g/kWh, Σ calls, Σ unestimated calls, an error."""
        return self._all(
            "SELECT provider, model, max(method), max(mix_zone), max(mix_gco2_per_kwh),"
            " sum(calls), sum(unestimated_calls), max(error) FROM remote_inference"
            f" WHERE app = ? AND {_RANGE} GROUP BY provider, model",
            (app, lo, hi),
        )

    def remote_buckets(
        self, hosts: Sequence[str] | None, app: str, w: Window, columns: Sequence[str]
    ) -> list[Row]:
        """``app``'s remote calls per bucket of ``w`` on ``hosts`` (None: every host):
        (bucket ms, Σ each of ``columns``)."""
        if hosts is not None and not hosts:
            return []
        where, args = ("", []) if hosts is None else (f" AND host IN ({_marks(hosts)})", hosts)
        step = max(1, int(w.bucket_ms))
        sums = ", ".join(f"sum({c})" for c in columns if c.isidentifier())
        return self._all(
            f"SELECT ((ts_ms - 1) / {step}) * {step} AS t, {sums} FROM remote_inference"
            f" WHERE app = ? AND {_RANGE}{where} GROUP BY t ORDER BY t",
            (app, w.start_ms, w.end_ms, *args),
        )

    def sci_apps(self) -> list[str]:
        """Every app with SCI rows, sorted."""
        return [a for (a,) in self._all("SELECT DISTINCT app FROM sci ORDER BY app")]

    def sci_hosts(self, app: str, lo: int, hi: int) -> list[str]:
        """The hosts with SCI rows of ``app`` in the window."""
        sql = f"SELECT DISTINCT host FROM sci WHERE app = ? AND {_RANGE}"
        return [h for (h,) in self._all(sql, (app, lo, hi))]

    def components(self, lo: int, hi: int) -> list[tuple[str, str]]:
        """The (component, source) pairs measured in the window, any host."""
        sql = f"SELECT DISTINCT component, source FROM host_energy WHERE {_RANGE}"
        return [(c, s) for c, s in self._all(sql, (lo, hi))]

    def intensity_sources(self, lo: int, hi: int) -> list[dict[str, Any]]:
        """Per (zone, provider, signal): intervals, and how many were fallback values."""
        sql = (
            "SELECT zone, provider, signal, count(*), sum(fallback) FROM grid_intensity"
            f" WHERE {_RANGE} GROUP BY zone, provider, signal"
        )
        return [
            {"zone": z, "provider": p, "signal": s, "intervals": n, "fallback_intervals": f}
            for z, p, s, n, f in self._all(sql, (lo, hi))
        ]

    def methods(self, host: str, hi: int) -> list[tuple[int, Any]]:
        """``host``'s recorded methods (start ms, the JSON object) up to ``hi``, oldest first."""
        sql = "SELECT ts_ms, method FROM method WHERE host = ? AND ts_ms <= ? ORDER BY ts_ms"
        return [(ts, json.loads(text)) for ts, text in self._all(sql, (host, hi))]

    def method_text_at(self, host: str, ms: int) -> str | None:
        """The JSON text of ``host``'s method in force at ``ms``, or None."""
        row = self._one(
            "SELECT method FROM method WHERE host = ? AND ts_ms <= ? ORDER BY ts_ms DESC LIMIT 1",
            (host, ms),
        )
        return None if row is None else str(row[0])

    def sci_by_app(self, host: str, lo: int, hi: int) -> list[tuple[str, float, float]]:
        """Per app of ``host``: (app, Σ carbon g, Σ units) over the window."""
        sql = (
            "SELECT app, sum(operational_g + embodied_g), sum(units) FROM sci"
            f" WHERE host = ? AND {_RANGE} GROUP BY app"
        )
        return [(a, c, u) for a, c, u in self._all(sql, (host, lo, hi))]

    def runs(self, run_id_prefix: str) -> list[dict[str, Any]]:
        """The measured runs whose id starts with ``run_id_prefix``, oldest first."""
        sql = "SELECT json FROM runs WHERE substr(run_id, 1, ?) = ? ORDER BY start_ms"
        return [json.loads(t) for (t,) in self._all(sql, (len(run_id_prefix), run_id_prefix))]

    def last_interval_not_from_runs(self, host: str, since_ms: int) -> tuple[int, float] | None:
        """The end and length of ``host``'s newest interval after ``since_ms`` that no
        measured run wrote (another writer, a running agent, did), or None."""
        row = self._one(
            "SELECT ts_ms, interval_s FROM intervals i WHERE host = ? AND ts_ms > ? "
            "AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.host = i.host "
            "AND r.stored_intervals AND i.ts_ms BETWEEN r.start_ms AND r.end_ms + 1) "
            "ORDER BY ts_ms DESC LIMIT 1",
            (host, since_ms),
        )
        return None if row is None else (int(row[0]), float(row[1]))

    # -- the dashboard -------------------------------------------------------------------

    def distinct(self, table: str, column: str, prefix: tuple[str, str] | None = None) -> list[str]:
        """Distinct values of a key column (optionally under a key prefix), index-only."""
        where, args = ("", ()) if prefix is None else (f" AND {prefix[0]} = ?", (prefix[1],))
        out: list[str] = []
        row = self._one(f"SELECT min({column}) FROM {table} WHERE 1{where}", args)
        while row is not None and row[0] is not None:
            out.append(row[0])
            sql = f"SELECT min({column}) FROM {table} WHERE {column} > ?{where}"
            row = self._one(sql, (row[0], *args))
        return out

    def hosts_of(self, table: str, hosts: Iterable[str] | None) -> list[str]:
        """The hosts with rows in ``table`` (those of ``hosts`` only, when given)."""
        known = self.distinct(table, "host")
        return known if hosts is None else [h for h in known if h in set(hosts)]

    def latest_interval(self, host: str) -> Row | None:
        """``host``'s newest interval: (ts_ms, interval_s, total_j)."""
        return self._one(
            "SELECT ts_ms, interval_s, total_j FROM intervals WHERE host = ?"
            " ORDER BY ts_ms DESC LIMIT 1",
            (host,),
        )

    def intensity_buckets(self, zones: Sequence[str] | None, w: Window) -> list[Row]:
        """Per bucket, zone and provider: time-weighted gCO2e/kWh, fallback share, count."""
        where, args = ("", []) if zones is None else (f" AND zone IN ({_marks(zones)})", zones)
        b = w.bucket_ms
        return self._all(
            "SELECT ((ts_ms - 1) / ?) * ? AS t, zone, provider,"
            " sum(gco2_per_kwh * interval_s) / sum(interval_s), avg(fallback), count(*)"
            f" FROM grid_intensity WHERE {_RANGE}{where} GROUP BY t, zone, provider ORDER BY t",
            (b, b, w.start_ms, w.end_ms, *args),
        )

    def idle_vs_active(self, host: str, w: Window) -> list[Row]:
        """Per bucket: (t, active J, idle J, unattributed J) of ``host``."""
        b = w.bucket_ms
        return self._all(
            "SELECT ((ts_ms - 1) / ?) * ? AS t, sum(total_j - idle_j - unattributed_j),"
            f" sum(idle_j), sum(unattributed_j) FROM intervals WHERE host = ? AND {_RANGE}"
            " GROUP BY t ORDER BY t",
            (b, b, host, w.start_ms, w.end_ms),
        )

    def component_source(self, host: str, component: str, w: Window, last: bool) -> str | None:
        """The source of the component's first (or ``last``) row in the window."""
        row = self._one(
            "SELECT source FROM host_energy WHERE host = ? AND component = ?"
            f" AND {_RANGE} ORDER BY ts_ms {'DESC' if last else 'ASC'} LIMIT 1",
            (host, component, w.start_ms, w.end_ms),
        )
        return None if row is None else str(row[0])

    def process_totals(self, host: str, w: Window) -> list[Row]:
        """(app, process, Σ joules, Σ cpu_s) of ``host`` over the window, unranked (the
        window cut into slices summed in parallel over the ``(host, ts_ms)`` key)."""
        edges = [w.start_ms + (w.end_ms - w.start_ms) * i // WORKERS for i in range(WORKERS + 1)]

        def work(reader: StoreReader, bounds: tuple[int, int]) -> list[Row]:
            return reader._all(
                "SELECT app, process, sum(joules), sum(cpu_s) FROM process_energy"
                f" WHERE host = ? AND {_RANGE} GROUP BY app, process",
                (host, *bounds),
            )

        return self._parallel(work, list(pairwise(edges)))

    def power_buckets(self, keys: Sequence[tuple[str, str]], w: Window) -> list[Row]:
        """(host, component, t, rows, mean watts) per (host, component) key and bucket."""
        return self._per_bucket("host_energy", ("host", "component"), keys, ["avg(watts)"], w)

    def sci_buckets(self, keys: Sequence[tuple[str, str]], w: Window, bucketed: bool) -> list[Row]:
        """(host, app, t, rows, unit, Σ energy_kwh, Σ operational_g, Σ embodied_g, Σ units,
        Σ remote_g) per (host, app) key and bucket (one bucket, the window, unless
        ``bucketed``). ``remote_g`` (the app's AI calls) sums NULL as 0, and reads as 0 in
        a store from before it."""
        sums = ["max(unit)", "sum(energy_kwh)", "sum(operational_g)", "sum(embodied_g)"]
        sums.append("sum(units)")
        sums.append("total(remote_g)" if "remote_g" in self._columns("sci") else "0.0")
        return self._per_bucket("sci", ("host", "app"), keys, sums, w, bucketed)

    def app_energy_buckets(self, keys: Sequence[tuple[str, str]], w: Window) -> list[Row]:
        """(host, app, t, rows, Σ cpu_j, Σ dram_j, Σ gpu_j) per (host, app) key and bucket."""
        sums = ["sum(cpu_j)", "sum(dram_j)", "sum(gpu_j)"]
        return self._per_bucket("app_energy", ("host", "app"), keys, sums, w)

    def _per_bucket(
        self,
        table: str,
        key_columns: Sequence[str],
        keys: Sequence[Sequence[str]],
        aggregates: Sequence[str],
        w: Window,
        bucketed: bool = True,
    ) -> list[Row]:
        """``(*key, t, rows, *aggregates)`` for each key and bucket holding rows.

        One statement per key walks the buckets (a recursive CTE) and aggregates each by
        a range scan of the ``(*key, ts_ms)`` primary key: no sorter, where a plain
        ``GROUP BY (ts_ms - 1) / bucket`` sorts every row first (3-4× slower on a week).
        Keys are spread over a few connections in threads (SQLite runs without the GIL).
        """
        match = " AND ".join(f"{c} = ?" for c in key_columns)
        packed = f"json_array(count(*), {', '.join(aggregates)})"
        step = w.bucket_ms
        if bucketed:
            sql = (
                "WITH RECURSIVE b(t) AS (SELECT ? UNION ALL SELECT t + ? FROM b WHERE t + ? < ?)"
                f" SELECT t, (SELECT {packed} FROM {table} WHERE {match}"
                " AND ts_ms > max(t, ?) AND ts_ms <= min(t + ?, ?)) FROM b"
            )
            first = (w.start_ms // step) * step

            def args(key: Sequence[str]) -> tuple[object, ...]:
                return (first, step, step, w.end_ms, *key, w.start_ms, step, w.end_ms)
        else:
            sql = f"SELECT ?, {packed} FROM {table} WHERE {match} AND {_RANGE}"

            def args(key: Sequence[str]) -> tuple[object, ...]:
                return (w.start_ms, *key, w.start_ms, w.end_ms)

        def work(reader: StoreReader, chunk: Sequence[Sequence[str]]) -> list[Row]:
            out: list[Row] = []
            for key in chunk:
                for t, values in reader._all(sql, args(key)):
                    count, *sums = json.loads(values)
                    if count:
                        out.append((*key, t, count, *sums))
            return out

        workers = max(1, min(WORKERS, len(keys)))
        if workers == 1:
            return work(self, keys)
        return self._parallel(work, [keys[i::workers] for i in range(workers)])

    def _parallel(self, work: Callable[[StoreReader, T], list[Row]], parts: list[T]) -> list[Row]:
        """``work`` on each part, each on its own read-only connection, in threads."""

        def one(part: T) -> list[Row]:
            with open_reader(self.path) as reader:
                return work(reader, part)

        with ThreadPoolExecutor(len(parts), thread_name_prefix="store-reader") as pool:
            return [row for rows in pool.map(one, parts) for row in rows]


def _marks(values: Sequence[object]) -> str:
    return ",".join("?" * len(values))
