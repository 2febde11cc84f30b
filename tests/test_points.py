"""Data-model points and line protocol: escaping, types, grouping that keeps the sum."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from agent.attribution import attribute
from agent.records import ComponentReading, CpuActivity, ProcessActivity
from exporters.points import Point, interval_points

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_line_protocol_escapes_and_types() -> None:
    p = Point(
        "host energy",
        (("host", "web 1,a=b"), ("path", "C:\\x\\"), ("empty", "")),
        (("j", 1.5), ("n", 3), ("ok", True), ("s", 'say "hi"\\'), ("bad", math.nan)),
        1767225600000,
    )
    assert p.to_line() == (
        'host\\ energy,host=web\\ 1\\,a\\=b,path=C:\\x/ j=1.5,n=3i,ok=true,s="say \\"hi\\"\\\\"'
        " 1767225600000"
    )


def test_points_have_the_interval_end_as_timestamp_and_keep_the_sum() -> None:
    procs = [ProcessActivity(i, 1, "worker", "web", 10, 0) for i in range(1, 5)]
    procs += [ProcessActivity(10 + i, 1, f"job{i}", "batch", i, 0) for i in range(30)]
    end = T0 + timedelta(seconds=5)
    r = attribute("h", T0, end, [ComponentReading("cpu0", "cpu", "rapl", 100.0)],
                  CpuActivity(500, 1000, 2), procs, 1)
    points = interval_points(r, top_n=5)
    assert {p.time_ms for p in points} == {round(end.timestamp() * 1000)}
    rows = [p for p in points if p.measurement == "process_energy"]
    assert len(rows) == 7  # web's worker, batch's top 5 (app, process) groups, batch's _other
    assert [dict(p.tags)["app"] for p in rows if ("process", "_other") in p.tags] == ["batch"]
    workers = next(dict(p.fields) for p in rows if ("process", "worker") in p.tags)
    assert workers["count"] == 4  # four workers share one series instead of overwriting
    total = sum(dict(p.fields)["joules"] for p in rows)
    assert math.isclose(total, sum(p.joules for p in r.processes))
    assert all(k != "pid" for p in points for k, _ in p.tags)


def test_no_processes_no_process_rows() -> None:
    readings = [ComponentReading("cpu0", "cpu", "rapl", 1.0)]
    r = attribute("h", T0, T0 + timedelta(seconds=5), readings, CpuActivity(0, 10, 2), [], 1)
    assert [p for p in interval_points(r) if p.measurement == "process_energy"] == []
