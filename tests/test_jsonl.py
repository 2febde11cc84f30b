"""The JSON-lines sink: one ``once --json`` object per line, survives log rotation."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.attribution import attribute
from agent.records import (
    ComponentReading,
    CpuActivity,
    IntensityValue,
    IntervalResult,
    ProcessActivity,
    RemoteInference,
)
from agent.records_json import to_json
from agent.scoring import Scorer
from exporters.jsonl import JsonlSink

NOW = datetime.now(UTC).replace(microsecond=0)


def interval(i: int) -> IntervalResult:
    end = NOW + timedelta(seconds=5 * i)
    procs = [ProcessActivity(p, p, f"p{p}", f"app{p % 2}", p, p << 20) for p in range(1, 5)]
    readings = [ComponentReading("cpu0", "cpu", "rapl", 40.0 + i)]
    return attribute(
        "h1", end - timedelta(seconds=5), end, readings, CpuActivity(50, 100, 2), procs, 1 << 34
    )


def read(path: Path) -> list[object]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_writes_one_to_json_object_per_interval(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "sci.jsonl"
    sink = JsonlSink(path)
    sink.open()
    sink.write([interval(0), interval(1)])
    sink.write([interval(2)])
    assert read(path) == [to_json(interval(i)) for i in range(3)]  # visible before close
    sink.close()
    again = JsonlSink(path)
    again.open()
    again.write([interval(3)])  # appends
    again.close()
    assert read(path) == [to_json(interval(i)) for i in range(4)]


def test_reopens_a_rotated_or_deleted_file(tmp_path: Path) -> None:
    path = tmp_path / "sci.jsonl"
    sink = JsonlSink(path)
    sink.open()
    sink.write([interval(0)])
    path.rename(tmp_path / "sci.jsonl.1")  # logrotate's default (no copytruncate)
    sink.write([interval(1)])
    path.unlink()
    sink.write([interval(2)])
    sink.close()
    assert read(tmp_path / "sci.jsonl.1") == [to_json(interval(0))]
    assert read(path) == [to_json(interval(2))]


def test_dash_writes_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    sink = JsonlSink("-")
    sink.open()
    sink.write([interval(0)])
    sink.close()
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == [
        to_json(interval(0))
    ]
    assert sink.name == "jsonl"


def test_each_app_shows_its_remote_calls_carbon_when_it_made_calls(tmp_path: Path) -> None:
    """An app's ``remote_g`` and ``remote_energy_kwh`` (its AI calls, already in ``sci``)
    are in its SCI entry when it made calls (0 when they were all cache hits), null
    when it made none."""
    grid = IntensityValue("FR", 50.0, "static", "average", NOW)
    calls = [
        RemoteInference("app0", "openai", "gpt-4o-mini", 10, 4, 400, 1200, 0, 1e-3, 9e-4,
                        1.1e-3, 0.4, 0.1, "USA", 384.4, "EcoLogits 0.11.3 llm_impacts"),
        RemoteInference("app1", "openai", "gpt-4o-mini", 3, 3, 0, 0, 0, 0.0, 0.0, 0.0, 0.0,
                        0.0, "USA", 384.4, "EcoLogits 0.11.3 llm_impacts"),
    ]  # fmt: skip
    scorer = Scorer({"app0": "request", "app1": "request"}, 1000.0, 4.0, "capacity", 1.0)
    path = tmp_path / "sci.jsonl"
    sink = JsonlSink(path)
    sink.open()
    sink.write([scorer.score(interval(0), grid, {"app0": 20.0, "app1": 5.0}, calls)])
    sink.write([scorer.score(interval(1), grid, {"app0": 20.0})])
    sink.close()
    with_calls, without = read(path)
    assert isinstance(with_calls, dict) and isinstance(without, dict)
    rows = {s["app"]: s for s in with_calls["sci"]}
    assert rows["app0"]["remote_g"] == pytest.approx(0.5)
    assert rows["app0"]["remote_energy_kwh"] == pytest.approx(1e-3)
    local = rows["app0"]["operational_g"] + rows["app0"]["embodied_g"]
    assert rows["app0"]["sci"] == pytest.approx((local + 0.5) / 20.0)
    assert rows["app1"]["remote_g"] == 0.0  # all cache hits: calls, no remote carbon
    assert all(s["remote_g"] is None for s in with_calls["sci"] if s["app"].startswith("_"))
    assert all(s["remote_g"] is None and s["remote_energy_kwh"] is None for s in without["sci"])
