"""Shared data for the dashboard tests: a fleet and a set of hostile names, written to a
store and to a real influxd, and plain-SQL expectations to check the pages against."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from dashboard.sample_data import SampleInfo, SampleSpec, fill_store, write_influx
from dashboard.timerange import TimeRange
from devtools.servers import InfluxdServer

INTERVAL_S = 60.0
#: Names a query must never be confused by: quotes, backslashes, an injection attempt.
HOSTILE_HOST = 'o\'brien "db\\01"'
HOSTILE_APPS = ("a' OR app =~ /.*/ OR app = 'b", 'we"b\\x')
HOSTILE_ZONE = "Z'1\\x"
READER, READER_PASSWORD = "dash_reader", "r3ad-0nly-s3cret"


def end_ms() -> int:
    step = round(INTERVAL_S * 1000)
    return (int(time.time() * 1000) // step) * step


def specs(end: int) -> tuple[SampleSpec, SampleSpec]:
    """The fleet (3 hosts, one model-estimated, one stale; 5 apps, cron without a unit)
    and one hostile host."""
    fleet = SampleSpec(hosts=3, apps=5, days=1.0, interval_s=INTERVAL_S, end_ms=end)
    hostile = SampleSpec(
        hosts=1,
        apps=2,
        days=1.0,
        interval_s=INTERVAL_S,
        end_ms=end,
        model_hosts=0,
        stale_hosts=0,
        host_names=(HOSTILE_HOST,),
        app_names=HOSTILE_APPS,
        zone=HOSTILE_ZONE,
    )
    return fleet, hostile


def fill(path: Path, end: int) -> tuple[SampleInfo, SampleInfo]:
    fleet, hostile = specs(end)
    return fill_store(path, fleet), fill_store(path, hostile)


def fill_influx(server: InfluxdServer, end: int) -> None:
    """Both data sets into ``server.database``, and a read-only user for the dashboard."""
    for spec in specs(end):
        write_influx(
            server.url, server.database, spec, username=server.username, password=server.password
        )
    server.create_user(READER, READER_PASSWORD, "READ")


def config_toml(store: Path, *, influx: InfluxdServer | None = None, extra: str = "") -> str:
    """A config reading ``store`` (or ``influx`` with the read-only user)."""
    text = f'[store]\npath = "{store}"\n'
    if influx is not None:
        text += (
            "[dashboard]\n"
            'source = "influxdb"\n'
            f'influx_url = "{influx.url}"\n'
            f'influx_database = "{influx.database}"\n'
            f'influx_username = "{READER}"\n'
            f'influx_password = "{READER_PASSWORD}"\n'
        )
    return text + extra


def one(db: Path, sql: str, args: Sequence[object] = ()) -> float:
    """A single number from the store, by plain SQL."""
    con = sqlite3.connect(db)
    try:
        (value,) = con.execute(sql, tuple(args)).fetchone()
    finally:
        con.close()
    return float(value or 0.0)


def sci_sum(
    db: Path,
    column: str,
    rng: TimeRange,
    hosts: Sequence[str] | None = None,
    app: str | None = None,
) -> float:
    """Σ ``column`` of the sci table over the range (optionally for hosts / one app)."""
    sql = f"SELECT sum({column}) FROM sci WHERE ts_ms > ? AND ts_ms <= ?"
    args: list[object] = [rng.start_ms, rng.end_ms]
    if hosts is not None:
        sql += f" AND host IN ({','.join('?' * len(hosts))})"
        args += list(hosts)
    if app is not None:
        sql += " AND app = ?"
        args.append(app)
    return one(db, sql, args)
