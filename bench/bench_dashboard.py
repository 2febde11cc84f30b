#!/usr/bin/env python3
"""Benchmark the dashboard: time to first render of each page, from the embedded store
and from InfluxDB, with 7 days of 5-second data for 10 hosts and 10 apps.

Generates the data once into ``var/bench-dashboard/`` (a SQLite store, and a real
influxd's data directory; both reused by later runs with the same sizes), then renders
each page with Streamlit's ``AppTest`` from cold caches, for the default range (last
hour) and the whole week. Writes ``bench/results/bench_dashboard.json`` and prints it
as Markdown; nothing is asserted.

Run: ``python bench/bench_dashboard.py [--days 7] [--interval 5] [--hosts 10]
[--apps 10] [--no-influx] [--repeat 3] [--results DIR] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchutil import ROOT, add_output_args, bullets, emit, log, section

from dashboard.sample_data import SampleSpec, fill_store, write_influx
from devtools.servers import InfluxdServer, find_binary

TITLE = "Dashboard time to first render"
ABOUT = (
    "Each page with 7 days of 5 s data for 10 hosts and 10 apps, from the "
    "embedded store and from InfluxDB."
)

PAGES = {
    "Fleet": None,
    "Host": "views/host.py",
    "Application": "views/application.py",
    "Grid": "views/grid.py",
    "Report": "views/report.py",
}
RANGES = ("Last hour", "Last 7 days")


class ReusedInfluxd(InfluxdServer):
    """An influxd whose data directory outlives the run: set up once, reused after."""

    def after_first_start(self) -> None:
        if not (self.workdir / "ready").exists():
            super().after_first_start()
            (self.workdir / "ready").write_text("admin and database created\n")


def prepare(
    work: Path, spec: SampleSpec, influx: bool
) -> tuple[Path, InfluxdServer | None, dict[str, Any]]:
    """The store and (optionally) a running influxd holding ``spec``'s data."""
    work.mkdir(parents=True, exist_ok=True)
    stamp = work / "spec.json"
    wanted = json.loads(json.dumps({k: v for k, v in spec.__dict__.items() if k != "end_ms"}))
    old: dict[str, Any] = json.loads(stamp.read_text()) if stamp.exists() else {}
    fresh = old.get("spec") != wanted
    store = work / "store.db"
    timings: dict[str, float] = {}
    if fresh:
        log("generating the data set (minutes)")
        shutil.rmtree(work / "influxd", ignore_errors=True)
        store.unlink(missing_ok=True)
        end = int(time.time() * 1000) // 5000 * 5000
        spec = SampleSpec(**{**spec.__dict__, "end_ms": end})
        t = time.perf_counter()
        info = fill_store(store, spec)
        timings["store_s"] = time.perf_counter() - t
        timings["rows"] = info.rows
        old = {"spec": wanted, "end_ms": end, "timings": timings}
        stamp.write_text(json.dumps(old))
    server = None
    if influx:
        server = start_influxd(work / "influxd")
        if "influx_s" not in old.get("timings", {}):
            spec = SampleSpec(**{**spec.__dict__, "end_ms": old["end_ms"]})
            t = time.perf_counter()
            info = write_influx(
                server.url, "sci", spec, username=server.username, password=server.password
            )
            old["timings"]["influx_s"] = time.perf_counter() - t
            old["timings"]["points"] = info.rows
            stamp.write_text(json.dumps(old))
    return store, server, old


def start_influxd(folder: Path) -> InfluxdServer:
    folder.mkdir(parents=True, exist_ok=True)
    port_file = folder / "port"
    port = int(port_file.read_text()) if port_file.exists() else None
    binary = find_binary("influxd") or "/usr/bin/influxd"
    server = ReusedInfluxd(binary, folder, port)
    port_file.write_text(str(server.port))
    server.start(timeout_s=120)
    return server


def render(config: Path, page: str | None, preset: str, repeat: int) -> float:
    """Median seconds of a cold render of ``page`` (caches cleared) at ``preset``."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    os.environ["SCI_AGENT_CONFIG"] = str(config)
    times = []
    for _ in range(repeat):
        at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=600).run()
        if preset != "Last hour":
            at.selectbox(key="range_preset").set_value(preset)
        if page is not None:
            at.switch_page(page)
        st.cache_data.clear()
        t = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - t)
        if at.exception:
            raise RuntimeError(f"{page or 'Fleet'}: {at.exception[0].message}")
    return statistics.median(times)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--days", type=float, default=7)
    parser.add_argument("--interval", type=float, default=5)
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--apps", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-influx", action="store_true")
    parser.add_argument("--workdir", default=str(ROOT / "var" / "bench-dashboard"))
    add_output_args(parser)
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Prepare the data, then time every page at both ranges from each source."""
    spec = SampleSpec(
        hosts=args.hosts,
        apps=args.apps,
        days=args.days,
        interval_s=args.interval,
        stale_hosts=1,
        stale_s=3600,
    )
    work = Path(args.workdir)
    store, server, meta = prepare(work, spec, influx=not args.no_influx)
    configs = {"store": work / "store.toml"}
    configs["store"].write_text(f'[store]\npath = "{store}"\n')
    if server is not None:
        configs["influxdb"] = work / "influx.toml"
        configs["influxdb"].write_text(
            f'[store]\npath = "{store}"\n[dashboard]\nsource = "influxdb"\n'
            f'influx_url = "{server.url}"\ninflux_database = "sci"\n'
            f'influx_username = "{server.username}"\ninflux_password = "{server.password}"\n'
        )
    pages: dict[str, dict[str, float]] = {}
    try:
        for name, page in PAGES.items():
            log(f"rendering {name}")
            pages[name] = {
                f"{kind}, {preset.lower()}": render(configs[kind], page, preset, args.repeat)
                for kind in configs
                for preset in RANGES
            }
    finally:
        if server is not None:
            server.stop()
    return {
        "spec": {
            "hosts": args.hosts,
            "apps": args.apps,
            "days": args.days,
            "interval_s": args.interval,
            "repeat": args.repeat,
        },
        "timings": meta["timings"],
        "store_bytes": store.stat().st_size,
        "data_age_h": (time.time() * 1000 - meta["end_ms"]) / 3.6e6,
        "cpus": os.cpu_count(),
        "pages_s": pages,
    }


def sections(f: dict[str, Any]) -> list[dict[str, Any]]:
    """What it measures, then one table: each page's render time per source and range."""
    sp, timings = f["spec"], f["timings"]
    notes = [
        f"store: {timings.get('rows', 0):,} rows, generated in {timings.get('store_s', 0):.0f} s, "
        f"{f['store_bytes'] / 1e9:.2f} GB"
    ]
    if "influx_s" in timings:
        notes.append(
            f"InfluxDB 1.6: {timings['points']:,} points, written in {timings['influx_s']:.0f} s"
        )
    if f["data_age_h"] > 1:
        notes.append(
            f"the data ends {f['data_age_h']:.1f} h ago (a reused data set): 'Last hour' reads "
            "little"
        )
    notes.append(f"cold caches, median of {sp['repeat']} AppTest runs, {f['cpus']} CPUs")
    columns = next(iter(f["pages_s"].values())).keys()
    rows = [[name, *(f"{t[c]:.2f} s" for c in columns)] for name, t in f["pages_s"].items()]
    return [
        section("", ABOUT),
        section(
            f"Dashboard: time to first render ({sp['hosts']} hosts × {sp['apps']} apps × "
            f"{sp['days']:g} days at {sp['interval_s']:g} s)",
            bullets(notes),
            ["page", *columns],
            rows,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    figures = measure(args)
    emit(args, figures, "bench_dashboard", TITLE, sections(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
