"""The embedded store: SQLite (standard library) in WAL mode, no server needed.

Tables follow the design brief's data model, keyed by ``(host, …, ts_ms)`` so a
write replayed for the same interval overwrites itself. ``ts_ms`` is the end of
the interval in milliseconds since the Unix epoch (UTC). Per-process rows are
the same as InfluxDB's (``exporters/process_rows.py``): one per (app, process name)
for a stable top N per app, one ``_other`` row per app with the rest, at most
``max_process_names_per_day`` names per host per day; they still sum to the
processes' energy. Each row's pid is its biggest process's, so the key stays unique.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from agent.records import IntervalResult
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
CREATE INDEX IF NOT EXISTS sci_ts ON sci (ts_ms);
CREATE INDEX IF NOT EXISTS sci_app_ts ON sci (app, ts_ms);  -- reports select one app
CREATE INDEX IF NOT EXISTS grid_intensity_ts ON grid_intensity (ts_ms);
CREATE INDEX IF NOT EXISTS intervals_ts ON intervals (ts_ms);
CREATE INDEX IF NOT EXISTS host_energy_ts ON host_energy (ts_ms);
CREATE INDEX IF NOT EXISTS app_energy_ts ON app_energy (ts_ms);
CREATE INDEX IF NOT EXISTS process_energy_ts ON process_energy (ts_ms);
"""

_TABLES = ("intervals", "host_energy", "app_energy", "process_energy", "sci", "grid_intensity")
_PRUNE_EVERY_S = 3600.0


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
        max_process_names_per_day: int = DEFAULT_MAX_NAMES_PER_DAY,
    ) -> None:
        self.path = Path(path)
        self.retention_days = retention_days
        self.top_n = top_n
        self.process_rows = ProcessRows(top_n, max_process_names_per_day)
        self._db: sqlite3.Connection | None = None
        self._last_prune = 0.0

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("PRAGMA cache_size=-512")  # 512 KiB: small batches need no big cache
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._db = db
        self.prune()
        self.analyze()

    def write(self, batch: Sequence[IntervalResult]) -> None:
        db = self._require()
        db.execute("BEGIN")
        try:
            for result in batch:
                self._write_one(db, result)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if time.monotonic() - self._last_prune > _PRUNE_EVERY_S:
            self.prune()
            self.analyze()

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
            [
                (host, a.app, ts, a.cpu_joules, a.dram_joules, a.gpu_joules, 0.0, a.joules, a.cpu_s)
                for a in (*r.apps, r.idle, r.unattributed)
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
        # a replayed interval's rows replace the old ones whole (their pids may differ)
        db.execute("DELETE FROM process_energy WHERE host = ? AND ts_ms = ?", (host, ts))
        db.executemany(
            "INSERT OR REPLACE INTO process_energy VALUES (?,?,?,?,?,?,?)",
            [
                (host, p.app, p.process, p.pid, ts, p.joules, p.cpu_s)
                for p in self.process_rows.rows(host, r.end, r.processes)
            ],
        )

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
        if self._db is not None:
            self._db.close()
            self._db = None

    def _require(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db
