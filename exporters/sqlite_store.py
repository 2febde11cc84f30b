"""The embedded store's writer: SQLite (standard library) in WAL mode, no server needed.

Each interval is written as the rows of ``exporters/points.py``'s ``flatten``, the same
rows InfluxDB gets (process rows included: the same top N + ``_other`` rule and key),
one table per measurement (``exporters/store_schema.py``); reads go through
``exporters/store_reader.py``. The ``method`` table holds the ``Method`` in force
(JSON, with each component's model and static floor) from the start of the first
interval it produced, one row per change.

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
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.method import method_to_json
from agent.records import IntervalResult
from exporters import points
from exporters.points import Point, flatten
from exporters.process_rows import DEFAULT_MAX_NAMES_PER_DAY, OTHER, ProcessRow, ProcessRows
from exporters.store_reader import StoreReader, read_runs
from exporters.store_schema import SCHEMA_VERSION, StoreError, create_or_upgrade

__all__ = ["OTHER_PROCESS", "SCHEMA_VERSION", "SqliteStore", "StoreError", "read_runs", "to_ms"]

log = logging.getLogger("sci_agent.store")

OTHER_PROCESS = OTHER


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


class _Corrupt(Exception):
    """The database file is damaged; the message is the reason."""


@dataclass(frozen=True, slots=True)
class _Accepted:
    """An interval as the backlog keeps it: without its processes, with its process rows."""

    result: IntervalResult
    processes: tuple[ProcessRow, ...]


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
        self._backlog: deque[_Accepted] = deque()
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
        self._backlog.extend(map(self._accept, batch))
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
            reader = StoreReader(self._require(), self.path, wrap_errors=False)
            return reader.last_interval_not_from_runs(host, since_ms)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(_describe(self.path, exc)) from None

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
            create_or_upgrade(db)
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

    def _accept(self, r: IntervalResult) -> _Accepted:
        """``r`` with its process rows as the store keeps them, decided once, on arrival.

        The rows (a stable top N per app, ``_other`` rows, the daily cap) depend on the
        intervals before, so they are computed when the interval is accepted: a retried
        or backlogged write stores exactly what a direct one would, and the backlog
        holds only those rows, not every process.
        """
        rows = tuple(self.process_rows.rows(r.host, r.end, r.processes))
        return _Accepted(replace(r, processes=()), rows)

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

    def _commit(self, db: sqlite3.Connection, batch: Sequence[_Accepted]) -> None:
        """Write ``batch`` in one transaction; the original error is what is raised."""
        db.execute("BEGIN")
        try:
            self._write_rows(db, batch)
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

    def _write_rows(self, db: sqlite3.Connection, batch: Sequence[_Accepted]) -> None:
        """The intervals' points, one row each in its measurement's table (one statement
        per table and set of columns), and their methods."""
        rows: dict[tuple[str, tuple[str, ...]], list[tuple[object, ...]]] = {}
        for accepted in batch:
            for shape, row in map(_row, flatten(accepted.result, accepted.processes)):
                rows.setdefault(shape, []).append(row)
        # a replayed interval's process rows replace the old ones whole (their names may differ)
        ends = [(a.result.host, to_ms(a.result)[1]) for a in batch]
        db.executemany("DELETE FROM process_energy WHERE host = ? AND ts_ms = ?", ends)
        for (table, names), table_rows in rows.items():
            sql = f"INSERT OR REPLACE INTO {table} ({', '.join(names)}) VALUES ({_marks(names)})"
            db.executemany(sql, table_rows)
        for accepted in batch:
            self._write_method(db, accepted.result, to_ms(accepted.result)[0])

    def _write_method(self, db: sqlite3.Connection, r: IntervalResult, start_ms: int) -> None:
        """Record ``r.method`` from ``start_ms`` on, only when it differs from the host's last
        (method rows are one per change: kept whatever the retention)."""
        if r.method is None:
            return
        text = json.dumps(method_to_json(r.method), sort_keys=True, separators=(",", ":"))
        last = StoreReader(db, self.path, wrap_errors=False).method_text_at(r.host, start_ms)
        if last != text:
            db.execute("INSERT OR REPLACE INTO method VALUES (?,?,?)", (r.host, start_ms, text))

    def prune(self) -> int:
        """Delete rows older than the retention; return how many went."""
        db = self._require()
        cutoff = round((time.time() - self.retention_days * 86400) * 1000)
        deleted = 0
        for table in (m.__name__ for m in points.MEASUREMENTS):  # a table per measurement
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


def _row(p: Point) -> tuple[tuple[str, tuple[str, ...]], tuple[object, ...]]:
    """A point's (table, columns) and values (a column the point lacks is NULL)."""
    pairs = p.tags + p.fields + p.local
    return (p.measurement, (*(k for k, _ in pairs), "ts_ms")), (*(v for _, v in pairs), p.time_ms)


def _marks(names: Sequence[str]) -> str:
    return ",".join("?" * len(names))


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
