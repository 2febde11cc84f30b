"""The embedded store's schema: its tables, their upgrades, and read-only connections.

Each measurement of ``exporters/points.py`` is a table of the same name whose columns
are the points' tags, fields and ``local`` fields plus ``ts_ms`` (the interval's end in
ms since the epoch, UTC); an absent tag is NULL. Keys are ``(tags…, ts_ms)`` as
InfluxDB's series and time, so a write replayed for the same interval overwrites
itself. ``method`` (one row per change) and ``runs`` (one per ``sci-agent measure``)
are the store's own. Adding a measurement: its ``CREATE TABLE`` and ``ts_ms`` index
below, nothing else (the writer inserts points by column name and prunes every
measurement's table).

Versions (``PRAGMA user_version``): 1, ``process_energy`` keyed by ``(host, ts_ms,
pid)`` without ``count``; 2, keyed by ``(host, ts_ms, app, process)`` as InfluxDB's
series, with ``count``; 3, ``sci`` gains ``remote_g`` and ``remote_energy_kwh`` (NULL: no
AI calls) and ``remote_inference`` appears. ``create_or_upgrade`` adds the missing
columns (NULL in the rows written before) and keeps version 1's key: rebuilding a month
of process rows would hold the agent's start for minutes (~20 s per million rows on a
small VM), and the writer's rows are unique by either key (one row per (app, process)
an interval, each with its own biggest process's pid). Readers read either shape.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

SCHEMA_VERSION = 3

SCHEMA = """
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
    ts_ms INTEGER NOT NULL, joules REAL NOT NULL, cpu_s REAL NOT NULL, count INTEGER,
    PRIMARY KEY (host, ts_ms, app, process)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sci (
    host TEXT NOT NULL, app TEXT NOT NULL, unit TEXT, ts_ms INTEGER NOT NULL,
    interval_s REAL NOT NULL, energy_kwh REAL NOT NULL, intensity REAL NOT NULL,
    operational_g REAL NOT NULL, embodied_g REAL NOT NULL, units REAL NOT NULL, sci REAL,
    remote_g REAL, remote_energy_kwh REAL,  -- the app's AI calls (NULL: none); sci has them
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
    source TEXT NOT NULL, ts_ms INTEGER NOT NULL, interval_s REAL NOT NULL,
    calls REAL NOT NULL, cached_calls REAL NOT NULL, unestimated_calls REAL NOT NULL,
    input_tokens REAL NOT NULL, output_tokens REAL NOT NULL, energy_kwh REAL NOT NULL,
    energy_kwh_min REAL NOT NULL, energy_kwh_max REAL NOT NULL, usage_g REAL NOT NULL,
    embodied_g REAL NOT NULL, mix_gco2_per_kwh REAL NOT NULL, mix_zone TEXT NOT NULL,
    method TEXT NOT NULL, error TEXT NOT NULL,
    PRIMARY KEY (host, app, provider, model, source, ts_ms)) WITHOUT ROWID;
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

class StoreError(Exception):
    """The store cannot be opened, written or read now; the message names the path and cause."""


def create_or_upgrade(db: sqlite3.Connection) -> None:
    """Make the missing tables and bring older ones to ``SCHEMA_VERSION``."""
    db.executescript(SCHEMA)
    if "count" not in columns(db, "process_energy"):  # version 1: instant, no rebuild
        db.execute("ALTER TABLE process_energy ADD COLUMN count INTEGER")
    for column in ("remote_g", "remote_energy_kwh"):  # version 2: the app's AI calls
        if column not in columns(db, "sci"):
            db.execute(f"ALTER TABLE sci ADD COLUMN {column} REAL")
    if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


def columns(db: sqlite3.Connection, table: str) -> list[str]:
    """The column names of ``table`` ([] when it does not exist)."""
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def connect_readonly(path: Path, timeout_s: float = 5.0) -> sqlite3.Connection:
    """A read-only connection to the store at ``path`` (no file is created)."""
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    db = sqlite3.connect(uri, uri=True, timeout=timeout_s, check_same_thread=False)
    db.execute("PRAGMA query_only=1")
    return db
