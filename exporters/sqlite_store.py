"""The embedded store: SQLite (standard library) in WAL mode, no server needed.

Tables follow the design brief's data model, keyed by ``(host, …, ts_ms)`` so a
write replayed for the same interval overwrites itself. ``ts_ms`` is the end of
the interval in milliseconds since the Unix epoch (UTC). Per-process rows are
kept for the top N consumers of each interval plus one ``_other`` row, so the
process rows still sum to the attributed energy. The ``method`` table holds the
``Method`` in force (JSON, with each component's model and static floor) from the
start of the first interval it produced, one row per change.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from agent.method import method_to_json
from agent.records import IntervalResult, ProcessEnergy

log = logging.getLogger("sci_agent.store")

OTHER_PROCESS = "_other"
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


def top_processes(
    processes: Sequence[ProcessEnergy], n: int
) -> tuple[list[ProcessEnergy], ProcessEnergy | None]:
    """The ``n`` biggest consumers, and one row summing the rest (None if no rest)."""
    ranked = sorted(processes, key=lambda p: p.joules, reverse=True)
    head, rest = ranked[:n], ranked[n:]
    if not rest:
        return head, None
    other = ProcessEnergy(
        pid=0,
        name=OTHER_PROCESS,
        app=OTHER_PROCESS,
        cpu_s=sum(p.cpu_s for p in rest),
        cpu_joules=sum(p.cpu_joules for p in rest),
        dram_joules=sum(p.dram_joules for p in rest),
        gpu_joules=sum(p.gpu_joules for p in rest),
    )
    return head, other


class SqliteStore:
    """Writes each cycle's intervals in one transaction; prunes past the retention."""

    name = "store"

    def __init__(self, path: str | Path, retention_days: float = 30, top_n: int = 20) -> None:
        self.path = Path(path)
        self.retention_days = retention_days
        self.top_n = top_n
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
        self._write_method(db, r, start_ms)
        head, other = top_processes(r.processes, self.top_n)
        rows = [*head, other] if other is not None else head
        db.executemany(
            "INSERT OR REPLACE INTO process_energy VALUES (?,?,?,?,?,?,?)",
            [(host, p.app, p.name, p.pid, ts, p.joules, p.cpu_s) for p in rows],
        )

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
        if self._db is not None:
            self._db.close()
            self._db = None

    def _require(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db
