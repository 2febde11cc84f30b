"""The embedded store: SQLite (standard library) in WAL mode, no server needed.

Tables follow the design brief's data model, keyed by ``(host, …, ts_ms)`` so a
write replayed for the same interval overwrites itself. ``ts_ms`` is the end of
the interval in milliseconds since the Unix epoch (UTC). Per-process rows are
the same as InfluxDB's (``exporters/process_rows.py``): one per (app, process name)
for a stable top N per app, one ``_other`` row per app with the rest, at most
``max_process_names_per_day`` names per host per day; they still sum to the
processes' energy. Each row's pid is its biggest process's, so the key stays unique.
The ``method`` table holds the
``Method`` in force (JSON, with each component's model and static floor) from the
start of the first interval it produced, one row per change.

Faults never stop measuring (``open`` and ``write`` raise only ``StoreError``):

- a corrupt database (not a database, a bad page, a truncated file) is moved aside
  with its ``-wal``/``-shm`` as ``<name>.corrupt-<UTC time>``, the move is logged with
  the reason, and a fresh store is made; a ``-wal`` with no valid header (which SQLite
  would silently discard) is moved aside alone, keeping the database;
- any other failure (permissions, a read-only or full file system) is reported with
  the path and the cause (``SQLITE_FULL``, ``ENOSPC``…); the intervals not written are
  kept in a bounded in-memory backlog (the oldest beyond ``backlog_intervals`` are
  dropped, counted in ``dropped_intervals`` and logged) and written, oldest first, at
  the next ``write`` that succeeds; a store that could not be opened is retried then.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shlex
import sqlite3
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.method import method_to_json
from agent.records import IntervalResult, ProcessEnergy
from exporters.process_rows import DEFAULT_MAX_NAMES_PER_DAY, OTHER, ProcessRows

log = logging.getLogger("sci_agent.store")

OTHER_PROCESS = OTHER
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS intervals (
    host TEXT NOT NULL, ts_ms INTEGER NOT NULL, start_ms INTEGER NOT NULL,
    interval_s REAL NOT NULL, total_j REAL NOT NULL, idle_j REAL NOT NULL,
    unattributed_j REAL NOT NULL,
    PRIMARY KEY (host, ts_ms)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS host_energy (
    host TEXT NOT NULL, component TEXT NOT NULL, source TEXT NOT NULL,
    ts_ms INTEGER NOT NULL, joules REAL NOT NULL, watts REAL NOT NULL,
    PRIMARY KEY (host, component, ts_ms)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS app_energy (
    host TEXT NOT NULL, app TEXT NOT NULL, ts_ms INTEGER NOT NULL,
    cpu_j REAL NOT NULL, dram_j REAL NOT NULL, gpu_j REAL NOT NULL,
    idle_j REAL NOT NULL, total_j REAL NOT NULL, cpu_s REAL NOT NULL,
    PRIMARY KEY (host, app, ts_ms)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS process_energy (
    host TEXT NOT NULL, app TEXT NOT NULL, process TEXT NOT NULL, pid INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL, joules REAL NOT NULL, cpu_s REAL NOT NULL,
    PRIMARY KEY (host, ts_ms, pid)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sci (
    host TEXT NOT NULL, app TEXT NOT NULL, unit TEXT, ts_ms INTEGER NOT NULL,
    interval_s REAL NOT NULL, energy_kwh REAL NOT NULL, intensity REAL NOT NULL,
    operational_g REAL NOT NULL, embodied_g REAL NOT NULL, units REAL NOT NULL, sci REAL,
    PRIMARY KEY (host, app, ts_ms)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS grid_intensity (
    zone TEXT NOT NULL, provider TEXT NOT NULL, ts_ms INTEGER NOT NULL,
    gco2_per_kwh REAL NOT NULL, signal TEXT NOT NULL, fallback INTEGER NOT NULL,
    interval_s REAL NOT NULL,
    PRIMARY KEY (zone, ts_ms)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS method (
    host TEXT NOT NULL, ts_ms INTEGER NOT NULL, method TEXT NOT NULL,
    PRIMARY KEY (host, ts_ms)) WITHOUT ROWID;  -- ts_ms: start of its first interval
CREATE TABLE IF NOT EXISTS runs (  -- one per `sci-agent measure`: never pruned
    run_id TEXT NOT NULL PRIMARY KEY, host TEXT NOT NULL, app TEXT NOT NULL,
    command TEXT NOT NULL, start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL,
    exit_code INTEGER NOT NULL, cpu_s REAL NOT NULL, energy_j REAL NOT NULL,
    energy_kwh REAL NOT NULL, carbon_g REAL NOT NULL, units REAL, unit TEXT, sci REAL,
    stored_intervals INTEGER NOT NULL, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS remote_inference (  -- an app's AI calls, estimated (not host energy)
    host TEXT NOT NULL, app TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,
    ts_ms INTEGER NOT NULL, interval_s REAL NOT NULL, calls REAL NOT NULL,
    cached_calls REAL NOT NULL, unestimated_calls REAL NOT NULL, input_tokens REAL NOT NULL,
    output_tokens REAL NOT NULL, energy_kwh REAL NOT NULL, energy_kwh_min REAL NOT NULL,
    energy_kwh_max REAL NOT NULL, usage_g REAL NOT NULL, embodied_g REAL NOT NULL,
    mix_zone TEXT NOT NULL, mix_gco2_per_kwh REAL NOT NULL, method TEXT NOT NULL,
    error TEXT NOT NULL,
    PRIMARY KEY (host, app, provider, model, ts_ms)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS remote_inference_ts ON remote_inference (ts_ms);
CREATE INDEX IF NOT EXISTS runs_start ON runs (start_ms);
CREATE INDEX IF NOT EXISTS sci_ts ON sci (ts_ms);
CREATE INDEX IF NOT EXISTS sci_app_ts ON sci (app, ts_ms);  -- reports select one app
CREATE INDEX IF NOT EXISTS grid_intensity_ts ON grid_intensity (ts_ms);
CREATE INDEX IF NOT EXISTS intervals_ts ON intervals (ts_ms);
CREATE INDEX IF NOT EXISTS host_energy_ts ON host_energy (ts_ms);
CREATE INDEX IF NOT EXISTS app_energy_ts ON app_energy (ts_ms);
CREATE INDEX IF NOT EXISTS process_energy_ts ON process_energy (ts_ms);
"""

_TABLES = (
    "intervals",
    "host_energy",
    "app_energy",
    "process_energy",
    "sci",
    "grid_intensity",
    "remote_inference",
)
_PRUNE_EVERY_S = 3600.0
#: Intervals kept in memory while the store cannot be written (an hour at 5 s).
DEFAULT_BACKLOG_INTERVALS = 720
_COMMIT_CHUNK = 60  # intervals per transaction when writing a backlog
_CORRUPT_CODES = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
#: What an interval's own data causes; retrying it can never succeed.
_DATA_ERRORS = (
    sqlite3.IntegrityError,
    sqlite3.InterfaceError,
    sqlite3.DataError,
    OverflowError,
    TypeError,
    ValueError,
)
_WAL_MAGIC = (b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83")
_WAL_HEADER_BYTES = 32
_FULL_BELOW_BYTES = 64 << 10  # an I/O error with less free than this is a full disk


class StoreError(Exception):
    """The store cannot be opened or written now; the message names the path and cause."""


class _Corrupt(Exception):
    """The database file is damaged; the message is the reason."""


def to_ms(result: IntervalResult) -> tuple[int, int]:
    """The interval's (start, end) in integer milliseconds since the epoch."""
    return round(result.start.timestamp() * 1000), round(result.end.timestamp() * 1000)


class SqliteStore:
    """Writes each cycle's intervals in one transaction; prunes past the retention."""

    name = "store"

    def __init__(
        self,
        path: str | Path,
        retention_days: float = 30,
        top_n: int = 20,
        backlog_intervals: int = DEFAULT_BACKLOG_INTERVALS,
        max_process_names_per_day: int = DEFAULT_MAX_NAMES_PER_DAY,
    ) -> None:
        self.path = Path(path)
        self.retention_days = retention_days
        self.top_n = top_n
        self.backlog_intervals = max(1, backlog_intervals)
        self.dropped_intervals = 0  # kept in memory, then dropped for the bound
        self.rejected_intervals = 0  # refused for their own data (a NULL, a bad type)
        self.moved_aside: list[Path] = []  # corrupt files moved aside by this store
        self.process_rows = ProcessRows(top_n, max_process_names_per_day)
        self._db: sqlite3.Connection | None = None
        self._last_prune = 0.0
        self._backlog: deque[IntervalResult] = deque()
        self._failing: str | None = None  # why writes fail, while they do
        self._outage_dropped = 0

    @property
    def backlog(self) -> int:
        """Intervals accepted and not yet written (kept in memory)."""
        return len(self._backlog)

    @property
    def error(self) -> str | None:
        """Why the store cannot be written now, or None when it can."""
        return self._failing

    def open(self) -> None:
        """Open (or make) the store; on failure log it and retry at the next ``write``."""
        try:
            self._open_db()
        except StoreError as exc:
            self._failing = str(exc)
            log.error(
                "%s; measuring goes on, keeping up to %d interval(s) in memory and "
                "retrying at each cycle",
                exc,
                self.backlog_intervals,
            )

    def write(self, batch: Sequence[IntervalResult]) -> None:
        """Write ``batch`` after any backlog; on failure keep it in memory, raise StoreError."""
        kept = len(self._backlog)  # accepted while the store could not be written
        self._backlog.extend(map(self._reduce, batch))
        try:
            if self._db is None:
                self._open_db()
            rejected = self._write_backlog()
        except StoreError as exc:
            self._failing = str(exc)
            self._trim_backlog()
            raise StoreError(
                f"{exc}; keeping up to {self.backlog_intervals} interval(s) in memory "
                "and retrying at each cycle"
            ) from None
        self._recovered(kept)
        if time.monotonic() - self._last_prune > _PRUNE_EVERY_S:
            self._maintain()
        if rejected:
            raise StoreError(
                f"store {self.path}: dropped {len(rejected)} interval(s) whose data it "
                f"refuses ({rejected[0]}); the others are written"
            )

    def write_run(self, run: Mapping[str, Any]) -> None:
        """Keep one measured run (the ``measure --json`` object) in ``runs``; the same
        ``run_id`` again replaces it. Raises ``StoreError``."""
        carbon, sci = run["carbon_g"], run["sci"]
        row = (
            run["run_id"],
            run["host"],
            run["app"],
            shlex.join(run["command"]),
            _iso_ms(run["start"]),
            _iso_ms(run["end"]),
            run["exit_code"],
            run["cpu_s"],
            run["energy_joules"],
            run["energy_kwh"],
            carbon["total"],
            sci["units"],
            sci["unit"],
            sci["g_per_unit"],
            int(bool(run.get("stored_intervals"))),
            json.dumps(run, separators=(",", ":")),
        )
        try:
            if self._db is None:
                self._open_db()
            self._require().execute(
                "INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", row
            )
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(_describe(self.path, exc)) from None

    def others_last_interval(self, host: str, since_ms: int) -> tuple[int, float] | None:
        """The end (ms) and length of ``host``'s newest interval ending after ``since_ms``
        that no measured run wrote (so another writer, a running agent, did), or None."""
        try:
            if self._db is None:
                self._open_db()
            row = self._require().execute(
                "SELECT ts_ms, interval_s FROM intervals i WHERE host = ? AND ts_ms > ? "
                "AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.host = i.host "
                "AND r.stored_intervals AND i.ts_ms BETWEEN r.start_ms AND r.end_ms + 1) "
                "ORDER BY ts_ms DESC LIMIT 1",
                (host, since_ms),
            ).fetchone()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(_describe(self.path, exc)) from None
        return None if row is None else (int(row[0]), float(row[1]))

    # -- opening, and what to do with a damaged file ------------------------------------

    def _open_db(self) -> None:
        """Connect, moving a corrupt database aside first; raise StoreError otherwise."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._set_aside_bad_wal()
            try:
                db = self._connect()
            except _Corrupt as exc:
                try:
                    self._move_aside(str(exc))
                except OSError as move:
                    raise StoreError(
                        f"store {self.path} is corrupt ({exc}) and cannot be moved aside "
                        f"({move.strerror}: {move.filename})"
                    ) from None
                db = self._connect()
        except (_Corrupt, sqlite3.Error, OSError) as exc:
            raise StoreError(_describe(self.path, exc)) from None
        self._db = db
        self._maintain()

    def _connect(self) -> sqlite3.Connection:
        """A configured connection to a database that passed ``quick_check``."""
        self._check_integrity()
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            db.execute("PRAGMA cache_size=-512")  # 512 KiB: small batches need no big cache
            db.executescript(_SCHEMA)
            if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            db.close()
            if _is_corrupt(exc):
                raise _Corrupt(_sqlite_cause(exc)) from None
            raise
        except BaseException:
            db.close()
            raise
        return db

    def _check_integrity(self) -> None:
        """Raise _Corrupt if ``quick_check`` fails: on a read-only connection, so the
        damaged file and its -wal are left exactly as found (no checkpoint on close)."""
        if not self.path.exists():
            return
        try:
            db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error:
            return  # the writable connection says why
        try:
            rows = db.execute("PRAGMA quick_check(3)").fetchall()
        except sqlite3.DatabaseError as exc:
            if _is_corrupt(exc):
                raise _Corrupt(_sqlite_cause(exc)) from None
            return
        finally:
            db.close()
        problems = [" ".join(str(row[0]).split()) for row in rows]
        if problems != ["ok"]:
            text = "; ".join(problems).replace("*** in database main *** ", "")
            raise _Corrupt(f"quick_check: {text}")

    def _move_aside(self, reason: str) -> None:
        """Rename the database and its -wal/-shm to ``<name>.corrupt-<time>``; log it."""
        self._close_db()
        aside = _free_name(self.path.with_name(f"{self.path.name}.corrupt-{_stamp()}"))
        for suffix in ("", "-wal", "-shm"):
            source = self.path.with_name(self.path.name + suffix)
            with contextlib.suppress(FileNotFoundError):
                source.rename(aside.with_name(aside.name + suffix))
        self.moved_aside.append(aside)
        log.error(
            "store %s is corrupt (%s): moved it aside to %s and started a fresh store; "
            "the old file is kept for inspection",
            self.path,
            reason,
            aside,
        )

    def _set_aside_bad_wal(self) -> None:
        """Move aside a -wal with no valid header, which SQLite would silently discard."""
        wal = self.path.with_name(self.path.name + "-wal")
        try:
            with wal.open("rb") as f:
                header = f.read(_WAL_HEADER_BYTES)
        except FileNotFoundError:
            return
        if not header or (header[:4] in _WAL_MAGIC and len(header) == _WAL_HEADER_BYTES):
            return
        aside = _free_name(wal.with_name(f"{wal.name}.corrupt-{_stamp()}"))
        wal.rename(aside)
        with contextlib.suppress(FileNotFoundError):
            self.path.with_name(self.path.name + "-shm").unlink()  # rebuilt from the WAL
        self.moved_aside.append(aside)
        log.error(
            "store %s: its write-ahead log %s is corrupt (no valid header): moved it aside "
            "to %s; the store goes on with the database as of its last checkpoint",
            self.path,
            wal.name,
            aside,
        )

    # -- writing ----------------------------------------------------------------------

    def _reduce(self, r: IntervalResult) -> IntervalResult:
        """``r`` with its process rows as the store keeps them, decided once, on arrival.

        The rows (a stable top N per app, ``_other`` rows, the daily cap) depend on the
        intervals before, so they are computed when the interval is accepted: a retried
        or backlogged write stores exactly what a direct one would, and the backlog
        holds only those rows (each row's energy is kept as its ``cpu_joules``).
        """
        rows = self.process_rows.rows(r.host, r.end, r.processes)
        return replace(
            r,
            processes=tuple(
                ProcessEnergy(p.pid, p.process, p.app, p.cpu_s, p.joules, 0.0, 0.0) for p in rows
            ),
        )

    def _trim_backlog(self) -> None:
        """Drop the oldest intervals kept beyond ``backlog_intervals``; count and log it."""
        over = len(self._backlog) - self.backlog_intervals
        if over <= 0:
            return
        for _ in range(over):
            self._backlog.popleft()
        if self._outage_dropped == 0:
            log.warning(
                "store %s: %d interval(s) wait in memory, the most kept; dropping the "
                "oldest until the store can be written (counted in dropped_intervals)",
                self.path,
                self.backlog_intervals,
            )
        self._outage_dropped += over
        self.dropped_intervals += over

    def _write_backlog(self) -> list[str]:
        """Commit the backlog oldest first, in chunks; what is committed leaves memory.

        A database found corrupt while writing is moved aside once per call and the
        backlog goes to the fresh store. An interval whose own data the database
        refuses (a NULL where a number must be…) is dropped, so it cannot hold up the
        rest; the reasons are returned.
        """
        moved = one_by_one = False
        rejected: list[str] = []
        while self._backlog:
            size = 1 if one_by_one else min(_COMMIT_CHUNK, len(self._backlog))
            chunk = [self._backlog[i] for i in range(size)]
            try:
                self._commit(self._require(), chunk)
            except _DATA_ERRORS as exc:
                if size > 1:
                    one_by_one = True  # find the interval at fault
                    continue
                self._backlog.popleft()
                self.rejected_intervals += 1
                rejected.append(f"{type(exc).__name__}: {exc}")
                continue
            except sqlite3.DatabaseError as exc:
                if moved or not _is_corrupt(exc):
                    raise StoreError(_describe(self.path, exc)) from None
                self._move_aside(_sqlite_cause(exc))
                moved = True
                self._open_db()
                continue
            except (sqlite3.Error, OSError) as exc:
                raise StoreError(_describe(self.path, exc)) from None
            for _ in chunk:
                self._backlog.popleft()
        return rejected

    def _commit(self, db: sqlite3.Connection, batch: Sequence[IntervalResult]) -> None:
        """Write ``batch`` in one transaction; the original error is what is raised."""
        db.execute("BEGIN")
        try:
            for result in batch:
                self._write_one(db, result)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite may have rolled back already (disk full)
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise

    def _recovered(self, written: int) -> None:
        """Say once that writing works again, with what the outage kept and dropped."""
        if self._failing is None:
            return
        log.warning(
            "store %s: written again after %s; wrote the %d interval(s) kept in memory, dropped %d",
            self.path,
            self._failing.removeprefix(f"store {self.path}: "),
            written,
            self._outage_dropped,
        )
        self._failing = None
        self._outage_dropped = 0

    def _maintain(self) -> None:
        """Prune and analyze; a failure here is logged, never fatal (tried again hourly)."""
        try:
            self.prune()
            self.analyze()
        except sqlite3.Error as exc:
            self._last_prune = time.monotonic()
            log.warning("store: pruning skipped: %s", _describe(self.path, exc))

    def _write_one(self, db: sqlite3.Connection, r: IntervalResult) -> None:
        start_ms, ts = to_ms(r)
        host, seconds = r.host, r.interval_s
        db.execute(
            "INSERT OR REPLACE INTO intervals VALUES (?,?,?,?,?,?,?)",
            (host, ts, start_ms, seconds, r.total_joules, r.idle_joules, r.unattributed_joules),
        )
        db.executemany(
            "INSERT OR REPLACE INTO host_energy VALUES (?,?,?,?,?,?)",
            [
                (host, c.component, c.source, ts, c.joules, c.joules / seconds if seconds else 0.0)
                for c in r.components
            ],
        )
        db.executemany(
            "INSERT OR REPLACE INTO app_energy VALUES (?,?,?,?,?,?,?,?,?)",
            [  # idle_j: the static share the policy gave the app; rows sum to the host
                (
                    host,
                    a.app,
                    ts,
                    a.cpu_joules,
                    a.dram_joules,
                    a.gpu_joules,
                    a.static_joules,
                    a.total_joules,
                    a.cpu_s,
                )
                for a in r.energy_rows()
            ],
        )
        if r.intensity is not None:
            i = r.intensity
            db.execute(
                "INSERT OR REPLACE INTO grid_intensity VALUES (?,?,?,?,?,?,?)",
                (i.zone, i.provider, ts, i.gco2_per_kwh, i.signal, int(i.fallback), seconds),
            )
        db.executemany(
            "INSERT OR REPLACE INTO sci VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    host,
                    s.app,
                    s.unit,
                    ts,
                    seconds,
                    s.energy_kwh,
                    s.intensity_gco2_per_kwh,
                    s.operational_g,
                    s.embodied_g,
                    s.units,
                    s.sci,
                )
                for s in r.sci
            ],
        )
        self._write_remote(db, r, ts)
        self._write_method(db, r, start_ms)
        # a replayed interval's rows replace the old ones whole (their pids may differ)
        db.execute("DELETE FROM process_energy WHERE host = ? AND ts_ms = ?", (host, ts))
        db.executemany(
            "INSERT OR REPLACE INTO process_energy VALUES (?,?,?,?,?,?,?)",
            [(host, p.app, p.name, p.pid, ts, p.joules, p.cpu_s) for p in r.processes],
        )

    def _write_remote(self, db: sqlite3.Connection, r: IntervalResult, ts: int) -> None:
        """The interval's ``remote_inference`` rows (an app's AI calls, estimated)."""
        db.executemany(
            "INSERT OR REPLACE INTO remote_inference VALUES"
            " (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (r.host, x.app, x.provider, x.model, ts, r.interval_s, x.calls, x.cached_calls,
                 x.unestimated_calls, x.input_tokens, x.output_tokens, x.energy_kwh,
                 x.energy_kwh_min, x.energy_kwh_max, x.usage_g, x.embodied_g, x.mix_zone,
                 x.mix_gco2_per_kwh, x.method, x.error)
                for x in r.remote
            ],
        )  # fmt: skip

    def _write_method(self, db: sqlite3.Connection, r: IntervalResult, start_ms: int) -> None:
        """Record ``r.method`` from ``start_ms`` on, only when it differs from the host's last
        (method rows are one per change: kept whatever the retention)."""
        if r.method is None:
            return
        text = json.dumps(method_to_json(r.method), sort_keys=True, separators=(",", ":"))
        last = db.execute(
            "SELECT method FROM method WHERE host = ? AND ts_ms <= ? ORDER BY ts_ms DESC LIMIT 1",
            (r.host, start_ms),
        ).fetchone()
        if last is None or last[0] != text:
            db.execute("INSERT OR REPLACE INTO method VALUES (?,?,?)", (r.host, start_ms, text))

    def prune(self) -> int:
        """Delete rows older than the retention; return how many went."""
        db = self._require()
        cutoff = round((time.time() - self.retention_days * 86400) * 1000)
        deleted = 0
        for table in _TABLES:
            deleted += db.execute(f"DELETE FROM {table} WHERE ts_ms < ?", (cutoff,)).rowcount
        self._last_prune = time.monotonic()
        if deleted:
            log.info("store: pruned %d rows older than %g days", deleted, self.retention_days)
        return deleted

    def analyze(self) -> None:
        """Refresh the query planner's statistics (bounded work), so reports by app
        skip-scan the primary key instead of walking the time index."""
        db = self._require()
        db.execute("PRAGMA analysis_limit=1000")
        db.execute("ANALYZE")

    def close(self) -> None:
        if self._backlog:
            log.error(
                "store %s: closing with %d interval(s) never written (%s)",
                self.path,
                len(self._backlog),
                self._failing or "not written yet",
            )
        self._close_db()

    def _close_db(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    def _require(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db


def read_runs(path: str | Path, run_id_prefix: str) -> list[dict[str, Any]]:
    """The runs whose id starts with ``run_id_prefix`` (read-only; [] with no store)."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT json FROM runs WHERE substr(run_id, 1, ?) = ? ORDER BY start_ms",
                (len(run_id_prefix), run_id_prefix),
            ).fetchall()
        finally:
            db.close()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []  # a store written before runs existed
        raise StoreError(_describe(path, exc)) from None
    except sqlite3.Error as exc:
        raise StoreError(_describe(path, exc)) from None
    return [json.loads(r[0]) for r in rows]


def _iso_ms(text: str) -> int:
    """Milliseconds since the epoch of an ISO 8601 UTC time (``…Z``)."""
    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def _is_corrupt(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _CORRUPT_CODES


def _sqlite_cause(exc: sqlite3.Error) -> str:
    name = getattr(exc, "sqlite_errorname", None)
    return f"{name}: {exc}" if name else str(exc)


def _describe(path: Path, exc: BaseException) -> str:
    """One line naming the store, the cause, and disk full as disk full."""
    if isinstance(exc, _Corrupt):
        return f"store {path} is corrupt ({exc})"
    if isinstance(exc, OSError):
        name = errno.errorcode.get(exc.errno or 0, "")
        what = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "cannot use it"
        where = exc.filename or path
        return f"store {path}: {what} ({name}: {exc.strerror} at {where})"
    assert isinstance(exc, sqlite3.Error)
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code == sqlite3.SQLITE_FULL:
        return f"store {path}: disk full ({_sqlite_cause(exc)})"
    free = _free_bytes(path)
    if code in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN) and free < _FULL_BELOW_BYTES:
        # SQLite reports a full disk met outside the database file (its -shm) as I/O
        return f"store {path}: disk full ({_sqlite_cause(exc)}; {free} bytes free)"
    if code in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_READONLY):
        return f"store {path}: cannot open it for writing ({_sqlite_cause(exc)}): {_hint(path)}"
    return f"store {path}: {_sqlite_cause(exc)}"


def _free_bytes(path: Path) -> int:
    """Bytes free to this user on the file system holding ``path`` (large if unknown)."""
    probe = next((p for p in (path, *path.parents) if p.exists()), path)
    try:
        st = os.statvfs(probe)
    except OSError:
        return 1 << 62
    return st.f_bavail * st.f_frsize


def _hint(path: Path) -> str:
    """Where to look when the store cannot be written: the nearest existing path."""
    probe = next((p for p in (path, *path.parents) if p.exists()), path)
    with contextlib.suppress(OSError):
        if os.statvfs(probe).f_flag & os.ST_RDONLY:
            return f"{probe} is on a read-only file system"
    if not os.access(probe, os.W_OK):
        return f"{probe} is not writable by uid {os.getuid()}"
    return f"check the permissions and the mount of {probe}"


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _free_name(path: Path) -> Path:
    """``path``, or ``path-1``, ``path-2``… whichever names no file yet."""
    candidate, n = path, 0
    while any(candidate.with_name(candidate.name + s).exists() for s in ("", "-wal", "-shm")):
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate
