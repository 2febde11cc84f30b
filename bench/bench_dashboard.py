#!/usr/bin/env python3
"""Benchmark the dashboard: time to first render of each page, from the embedded store
and from InfluxDB, with 7 days of 5-second data for 10 hosts and 10 apps.

Generates the data once into ``var/bench-dashboard/`` (a SQLite store, and a real
influxd's data directory; both reused by later runs with the same sizes), then renders
each page with Streamlit's ``AppTest`` from cold caches, for the default range (last
hour) and the whole week. Prints a Markdown table; nothing is asserted.

Run: ``python bench/bench_dashboard.py [--days 7] [--interval 5] [--hosts 10]
[--apps 10] [--no-influx] [--repeat 3]``.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dashboard.sample_data import SampleSpec, fill_store, write_influx  # noqa: E402

PAGES = {
    "Fleet": None,
    "Host": "views/host.py",
    "Application": "views/application.py",
    "Grid": "views/grid.py",
    "Report": "views/report.py",
}
RANGES = ("Last hour", "Last 7 days")


def prepare(work: Path, spec: SampleSpec, influx: bool) -> tuple[Path, object | None, dict]:
    """The store and (optionally) a running influxd holding ``spec``'s data."""
    work.mkdir(parents=True, exist_ok=True)
    stamp = work / "spec.json"
    wanted = json.loads(json.dumps({k: v for k, v in spec.__dict__.items() if k != "end_ms"}))
    old = json.loads(stamp.read_text()) if stamp.exists() else {}
    fresh = old.get("spec") != wanted
    store = work / "store.db"
    timings: dict[str, float] = {}
    if fresh:
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


def start_influxd(folder: Path) -> object:
    from tests.servers import InfluxdServer

    class Reused(InfluxdServer):
        def after_first_start(self) -> None:
            if not (self.workdir / "ready").exists():
                super().after_first_start()
                (self.workdir / "ready").write_text("admin and database created\n")

    folder.mkdir(parents=True, exist_ok=True)
    port_file = folder / "port"
    port = int(port_file.read_text()) if port_file.exists() else None
    binary = shutil.which("influxd") or "/usr/bin/influxd"
    server = Reused(binary, folder, port)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=7)
    parser.add_argument("--interval", type=float, default=5)
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--apps", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-influx", action="store_true")
    parser.add_argument("--workdir", default=str(ROOT / "var" / "bench-dashboard"))
    args = parser.parse_args()
    spec = SampleSpec(
        hosts=args.hosts, apps=args.apps, days=args.days, interval_s=args.interval,
        stale_hosts=1, stale_s=3600,
    )  # fmt: skip
    work = Path(args.workdir)
    store, server, meta = prepare(work, spec, influx=not args.no_influx)
    configs = {"store": work / "store.toml"}
    configs["store"].write_text(f'[store]\npath = "{store}"\n')
    if server is not None:
        configs["influxdb"] = work / "influx.toml"
        configs["influxdb"].write_text(
            f'[store]\npath = "{store}"\n[dashboard]\nsource = "influxdb"\n'
            f'influx_url = "{server.url}"\ninflux_database = "sci"\n'  # type: ignore[attr-defined]
            f'influx_username = "{server.username}"\n'  # type: ignore[attr-defined]
            f'influx_password = "{server.password}"\n'  # type: ignore[attr-defined]
        )
    age_h = (time.time() * 1000 - meta["end_ms"]) / 3.6e6
    timings = meta["timings"]
    print(
        f"## Dashboard: time to first render ({args.hosts} hosts × {args.apps} apps × "
        f"{args.days:g} days at {args.interval:g} s)\n"
    )
    print(
        f"- store: {timings.get('rows', 0):,} rows, generated in {timings.get('store_s', 0):.0f} s,"
        " "
        f"{store.stat().st_size / 1e9:.2f} GB"
    )
    if "influx_s" in timings:
        print(
            f"- InfluxDB 1.6: {timings['points']:,} points, written in {timings['influx_s']:.0f} s"
        )
    if age_h > 1:
        print(f"- the data ends {age_h:.1f} h ago (a reused data set): 'Last hour' reads little")
    print(f"- cold caches, median of {args.repeat} AppTest runs, {os.cpu_count()} CPUs\n")
    header = "| page | " + " | ".join(f"{k}, {r.lower()}" for k in configs for r in RANGES) + " |"
    print(header)
    print("|" + " --- |" * (1 + len(configs) * len(RANGES)))
    try:
        for name, page in PAGES.items():
            cells = []
            for kind in configs:
                for preset in RANGES:
                    cells.append(f"{render(configs[kind], page, preset, args.repeat):.2f} s")
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    finally:
        if server is not None:
            server.stop()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
