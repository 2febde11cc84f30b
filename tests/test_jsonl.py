"""The JSON-lines sink: one ``once --json`` object per line, survives log rotation."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.attribution import attribute
from agent.records import ComponentReading, CpuActivity, IntervalResult, ProcessActivity
from agent.records_json import to_json
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
