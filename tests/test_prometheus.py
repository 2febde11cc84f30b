"""The /metrics exposition: scraped over HTTP from a real LocalApi, checked by promtool."""

from __future__ import annotations

import http.client
import math
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.attribution import attribute
from agent.config import HttpConfig
from agent.records import (
    ComponentReading,
    CpuActivity,
    GpuUsage,
    IntensityValue,
    IntervalResult,
    ProcessActivity,
    SensorHealth,
)
from agent.scoring import Scorer
from agent.units import LocalApi, UnitCounter
from exporters.prometheus import CONTENT_TYPE, OVERFLOW_APP, MetricsSink, metrics_route
from exporters.runner import RunnerStats

T0 = datetime(2026, 1, 1, tzinfo=UTC)
GRID = IntensityValue("FR", 50.0, "electricitymaps", "average", T0)
FALLBACK = IntensityValue("FR", 56.0, "builtin", "average", T0, fallback=True)
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def interval(
    k: int,
    ticks: dict[str, int],
    cpu_j: float,
    gpu_j: float,
    units: dict[str, float],
    grid: IntensityValue = GRID,
    seconds: float = 10.0,
) -> IntervalResult:
    """Interval ``k``: processes of ``ticks`` apps (pid 1 also runs on the GPU)."""
    procs = [
        ProcessActivity(i + 1, 1, app, app, t, 200_000_000)
        for i, (app, t) in enumerate(ticks.items())
    ]
    busy = sum(ticks.values()) + 5
    start = T0 + timedelta(seconds=k * seconds)
    readings = [
        ComponentReading("cpu0", "cpu", "rapl", cpu_j),
        ComponentReading("dram0", "dram", "rapl", cpu_j / 10),
        ComponentReading("psys", "psys", "rapl", 3.0),
        ComponentReading("gpu0", "gpu", "nvml", gpu_j, GpuUsage(20.0, {1: 50.0})),
    ]
    end = start + timedelta(seconds=seconds)
    cpu = CpuActivity(busy, busy * 2, 2)
    result = attribute("h1", start, end, readings, cpu, procs, 4_000_000_000)
    scorer = Scorer({"web": "request"}, 1000.0, 4.0, "separate", 1.0, cpu_count=2)
    return scorer.score(result, grid, units)


@pytest.fixture
def intervals() -> list[IntervalResult]:
    return [
        interval(0, {"web": 300, "db": 100, "ml": 50}, 400.0, 100.0, {"web": 40}),
        interval(1, {"web": 200, "db": 10, "ml": 80}, 300.0, 90.0, {"web": 10}),
        interval(2, {"web": 100, "ml": 30}, 250.0, 60.0, {"web": 25}, FALLBACK),  # db is gone
    ]


def health() -> dict[str, SensorHealth]:
    return {
        "rapl": SensorHealth("rapl", ok=True, last_duration_s=0.002, errors=1),
        "nvml": SensorHealth("nvml", ok=False, reason="no GPU", last_duration_s=0.25),
    }


def export_stats() -> list[RunnerStats]:
    return [RunnerStats("influxdb", 1200, 3, 40, 7)]


@pytest.fixture
def sink() -> MetricsSink:
    return MetricsSink(sensor_health=health, export_stats=export_stats)


@pytest.fixture
def api(sink: MetricsSink) -> Iterator[LocalApi]:
    server = LocalApi(HttpConfig(listen="127.0.0.1:0", token="s3cret"), UnitCounter({}))
    server.add_route("GET", "/metrics", metrics_route(sink), auth=False)
    server.start()
    yield server
    server.stop()


def scrape(api: LocalApi) -> tuple[str, str]:
    """GET /metrics without any token: the body text and its Content-Type."""
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        reply = conn.getresponse()
        body = reply.read().decode("utf-8")
        assert reply.status == 200, body
        return body, reply.getheader("Content-Type") or ""
    finally:
        conn.close()


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    """Samples by (name, labels), and each family's type."""
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def test_counters_sum_the_intervals_and_gauges_hold_the_last(
    sink: MetricsSink, api: LocalApi, intervals: list[IntervalResult]
) -> None:
    sink.open()
    sink.write(intervals[:2])
    sink.write(intervals[2:])
    text, ctype = scrape(api)
    assert ctype == CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
    s, types = parse(text)
    last = intervals[-1]

    for c in last.components:
        total = sum(x.joules for r in intervals for x in r.components if x.component == c.component)
        labels = {"host": "h1", "component": c.component, "source": c.source}
        assert close(value(s, "sci_agent_component_energy_joules_total", **labels), total)
        watts = value(s, "sci_agent_component_power_watts", **labels)
        assert close(watts, c.joules / last.interval_s)

    apps = {"web", "db", "ml", "_idle", "_unattributed"}
    for app in apps:
        rows = [a for r in intervals for a in (*r.apps, r.idle, r.unattributed) if a.app == app]
        for kind in ("cpu", "dram", "gpu"):
            total = sum(getattr(a, f"{kind}_joules") for a in rows)
            got = value(s, "sci_agent_app_energy_joules_total", host="h1", app=app, component=kind)
            assert close(got, total), (app, kind)
    energy = series(s, "sci_agent_app_energy_joules_total")
    assert close(sum(energy.values()), sum(r.total_joules for r in intervals))  # conserved
    for app in ("web", "db", "ml"):
        cpu_s = sum(a.cpu_s for r in intervals for a in r.apps if a.app == app)
        assert close(value(s, "sci_agent_app_cpu_seconds_total", host="h1", app=app), cpu_s)

    for kind in ("operational", "embodied"):
        for app in apps:
            total = sum(getattr(x, f"{kind}_g") for r in intervals for x in r.sci if x.app == app)
            got = value(s, "sci_agent_app_carbon_grams_total", host="h1", app=app, kind=kind)
            assert close(got, total)
    units = value(s, "sci_agent_app_functional_units_total", host="h1", app="web", unit="request")
    assert units == 75
    assert series(s, "sci_agent_app_functional_units_total").keys() == {
        frozenset({"host": "h1", "app": "web", "unit": "request"}.items())
    }

    web_sci = next(x.sci for x in last.sci if x.app == "web")
    assert web_sci is not None
    got = value(s, "sci_agent_app_sci_grams_per_unit", host="h1", app="web", unit="request")
    assert close(got, web_sci)
    assert len(series(s, "sci_agent_app_sci_grams_per_unit")) == 1  # no units: no SCI series

    assert series(s, "sci_agent_grid_intensity_gco2_per_kwh") == {
        frozenset({"zone": "FR", "provider": "builtin", "signal": "average"}.items()): 56.0
    }
    assert value(s, "sci_agent_grid_intensity_fallback", zone="FR") == 1.0
    assert value(s, "sci_agent_interval_seconds", host="h1") == 10.0
    assert value(s, "sci_agent_intervals_total", host="h1") == 3
    assert value(s, "sci_agent_last_interval_timestamp_seconds", host="h1") == last.end.timestamp()

    assert value(s, "sci_agent_sensor_up", sensor="rapl") == 1.0
    assert value(s, "sci_agent_sensor_up", sensor="nvml") == 0.0
    assert value(s, "sci_agent_sensor_read_duration_seconds", sensor="nvml") == 0.25
    assert value(s, "sci_agent_sensor_errors_total", sensor="rapl") == 1.0
    assert value(s, "sci_agent_export_sent_lines_total", sink="influxdb") == 1200
    assert value(s, "sci_agent_export_rejected_lines_total", sink="influxdb") == 3
    assert value(s, "sci_agent_export_backlog_lines", sink="influxdb") == 40
    assert value(s, "sci_agent_export_retries_total", sink="influxdb") == 7

    assert types["sci_agent_component_energy_joules"] == "counter"
    assert types["sci_agent_component_power_watts"] == "gauge"
    assert types["process_cpu_seconds"] == "counter"  # the agent's own footprint
    assert not any(name == "pid" for _, labels in s for name, _ in labels)


def test_counters_never_decrease_when_an_app_disappears(
    sink: MetricsSink, intervals: list[IntervalResult]
) -> None:
    before: Samples = {}
    for result in intervals:
        sink.write([result])
        after = parse(sink.exposition().decode())[0]
        for (name, labels), old in before.items():
            if name.startswith("sci_agent_") and name.endswith("_total"):
                assert after[(name, labels)] >= old, (name, dict(labels))
        before = after
    db_cpu = sum(a.cpu_joules for r in intervals[:2] for a in r.apps if a.app == "db")
    assert "db" not in {a.app for a in intervals[2].apps}
    got = value(before, "sci_agent_app_energy_joules_total", host="h1", app="db", component="cpu")
    assert close(got, db_cpu)  # kept at its last value


def test_negative_and_non_finite_amounts_never_move_a_counter_back(
    sink: MetricsSink, intervals: list[IntervalResult]
) -> None:
    sink.write(intervals[:1])
    first = parse(sink.exposition().decode())[0]
    broken = (
        ComponentReading("cpu0", "cpu", "rapl", -5.0),
        ComponentReading("dram0", "dram", "rapl", math.nan),
    )
    sink.write([replace(intervals[1], components=broken)])
    s = parse(sink.exposition().decode())[0]
    name = "sci_agent_component_energy_joules_total"
    cpu = {"host": "h1", "component": "cpu0", "source": "rapl"}
    dram = {"host": "h1", "component": "dram0", "source": "rapl"}
    assert value(s, name, **cpu) == value(first, name, **cpu)
    assert value(s, name, **dram) == value(first, name, **dram)
    assert value(s, "sci_agent_component_power_watts", **cpu) == 0.0
    assert ("sci_agent_component_power_watts", frozenset(dram.items())) not in s
    assert not series(s, "sci_agent_component_power_watts").keys() - {
        frozenset(cpu.items())
    }  # the last interval's components only


def test_the_output_passes_promtool(sink: MetricsSink, intervals: list[IntervalResult]) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool missing: apt-get install prometheus")
        pytest.skip("promtool missing: apt-get install prometheus")
    sink.write(intervals)
    done = subprocess.run(
        [promtool, "check", "metrics"],
        input=sink.exposition(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    report = (done.stdout + done.stderr).decode()
    assert done.returncode == 0, report
    assert report.strip() == "", report  # not even a lint warning


def test_a_failing_hook_leaves_its_metrics_out_not_the_scrape(
    intervals: list[IntervalResult], caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> dict[str, SensorHealth]:
        raise RuntimeError("sensor set is closed")

    sink = MetricsSink(sensor_health=broken, export_stats=lambda: [("influxdb", 1, 2)])  # type: ignore[list-item]
    sink.write(intervals)
    for _ in range(2):
        s = parse(sink.exposition().decode())[0]
        assert not series(s, "sci_agent_sensor_up")
        assert not series(s, "sci_agent_export_sent_lines_total")
        assert series(s, "sci_agent_component_energy_joules_total")
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 2  # once per hook, not once per scrape


def test_apps_beyond_the_cap_are_counted_as_overflow(intervals: list[IntervalResult]) -> None:
    sink = MetricsSink(max_apps=1, process_metrics=False)
    sink.write(intervals)
    s = parse(sink.exposition().decode())[0]
    apps = {dict(labels)["app"] for labels in series(s, "sci_agent_app_energy_joules_total")}
    assert apps == {"web", OVERFLOW_APP, "_idle", "_unattributed"}
    energy = series(s, "sci_agent_app_energy_joules_total")
    assert close(sum(energy.values()), sum(r.total_joules for r in intervals))
    assert not series(s, "process_cpu_seconds_total")


def test_head_answers_headers_and_post_is_not_allowed(sink: MetricsSink, api: LocalApi) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    try:
        conn.request("HEAD", "/metrics")
        reply = conn.getresponse()
        assert reply.status == 200 and reply.read() == b""
        conn.request("POST", "/metrics", body=b"{}", headers={"Content-Type": "application/json"})
        reply = conn.getresponse()
        reply.read()
        assert reply.status == 405 and reply.getheader("Allow") == "GET, HEAD"
    finally:
        conn.close()


def test_clamped_reaped_ticks_are_counted_per_host(
    sink: MetricsSink, api: LocalApi, intervals: list[IntervalResult]
) -> None:
    sink.write([replace(intervals[0], clamped_ticks=7), intervals[1]])
    sink.write([replace(intervals[2], clamped_ticks=5)])
    samples, types = parse(scrape(api)[0])
    assert types["sci_agent_clamped_cpu_ticks"] == "counter"
    assert value(samples, "sci_agent_clamped_cpu_ticks_total", host="h1") == 12


def test_sink_health_shows_a_failing_store_and_its_backlog(
    sink: MetricsSink, api: LocalApi
) -> None:
    rows = [("store", False, 3, 12, 2), ("influxdb", True, 0, 0, 0)]
    sink.sink_health = lambda: rows
    samples, _ = parse(scrape(api)[0])
    assert value(samples, "sci_agent_sink_up", sink="store") == 0
    assert value(samples, "sci_agent_sink_up", sink="influxdb") == 1
    assert value(samples, "sci_agent_sink_failed_writes_total", sink="store") == 3
    assert value(samples, "sci_agent_sink_backlog_intervals", sink="store") == 12
    assert value(samples, "sci_agent_sink_dropped_intervals_total", sink="store") == 2


def test_spool_drops_are_exported(sink: MetricsSink, api: LocalApi) -> None:
    sink.export_stats = lambda: [RunnerStats("influxdb", 100, 0, 7, 2, 150)]
    samples, _ = parse(scrape(api)[0])
    assert value(samples, "sci_agent_export_dropped_lines_total", sink="influxdb") == 150
    assert value(samples, "sci_agent_export_backlog_lines", sink="influxdb") == 7
