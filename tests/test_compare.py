"""``sci-agent compare``: two measured runs, from the store by id or from JSON files."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.jobs.compare import compare_json, notes
from tests.test_agent_run import AGENT, write_config
from tests.test_measure import BUSY


def measured(config: Path, out: Path, busy_s: float, *extra: str) -> dict[str, Any]:
    """Measure a busy loop of ``busy_s`` CPU-s; the run as ``measure -o`` wrote it."""
    subprocess.run(
        [*AGENT, "--config", str(config), "measure", "--json", "-o", str(out), *extra,
         "--", sys.executable, "-c", BUSY.format(s=busy_s)],
        check=True, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    run: dict[str, Any] = json.loads(out.read_text())
    return run


def compare(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AGENT, "--config", str(config), "compare", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A lighter run A and a heavier run B in one store: (config, A's file, B's file)."""
    tmp = tmp_path_factory.mktemp("compare")
    config = write_config(tmp)
    a, b = tmp / "a.json", tmp / "b.json"
    measured(config, a, 0.1, "--app", "light", "--units", "10", "--unit", "answer")
    measured(config, b, 1.0, "--app", "heavy", "--units", "10", "--unit", "answer")
    return config, a, b


def figures(d: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in d["figures"]}


def test_compare_by_id_prefix(two_runs: tuple[Path, Path, Path]) -> None:
    config, a_file, b_file = two_runs
    a, b = json.loads(a_file.read_text()), json.loads(b_file.read_text())
    done = compare(config, a["run_id"][:8], b["run_id"][:8], "--json")
    assert done.returncode == 0, done.stderr
    d = json.loads(done.stdout)
    assert d["a"]["run_id"] == a["run_id"] and d["b"]["run_id"] == b["run_id"]
    f = figures(d)
    for name in ("energy", "carbon", "CPU time", "SCI"):
        assert f[name]["ratio"] > 1.5, (name, f[name])  # ~1.2 CPU-s against ~0.3
        assert f[name]["ratio"] == pytest.approx(f[name]["b"] / f[name]["a"])
    assert f["energy"]["a"] == a["energy_joules"] and f["energy"]["b"] == b["energy_joules"]
    assert f["SCI"]["a"] == pytest.approx(a["carbon_g"]["total"] / 10)
    assert f["duration"]["ratio"] > 1
    assert d["notes"] == []  # same host, models, zone and unit


def test_compare_json_files_as_a_table(two_runs: tuple[Path, Path, Path]) -> None:
    config, a_file, b_file = two_runs
    done = compare(config, str(a_file), str(b_file))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "B/A" in lines[3]
    energy = next(line for line in lines if line.startswith("energy "))
    ratio = float(energy.split()[-1].rstrip("×"))
    assert "e-0" not in done.stdout  # values with SI prefixes, never scientific notation
    assert ratio > 1.5
    assert not any(line.startswith("note:") for line in lines)


def test_compare_notes_other_host_and_zone(
    two_runs: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    config, a_file, _ = two_runs
    other = write_config(tmp_path, '[grid]\nzone = "FR"\n').read_text()
    other_config = tmp_path / "other.toml"
    other_config.write_text(other.replace('host = "test-host"', 'host = "other-host"'))
    c = measured(other_config, tmp_path / "c.json", 0.1)
    assert c["host"] == "other-host" and c["intensity"]["zone"] == "FR"
    done = compare(config, str(a_file), str(tmp_path / "c.json"))
    assert done.returncode == 0, done.stderr
    assert "note: different hosts: test-host and other-host" in done.stdout
    assert "note: different grid zones: WORLD and FR" in done.stdout
    assert "note: different units: answer and none" in done.stdout
    # by id in its own store too
    done = compare(other_config, c["run_id"], str(a_file), "--json")
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["notes"]) == 3


def test_compare_errors_name_the_run(two_runs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    config, a_file, _ = two_runs
    done = compare(config, "ffffffffff", str(a_file))
    assert done.returncode == 1 and "ffffffffff: no such file, and no run" in done.stderr
    done = compare(config, "", str(a_file))
    assert done.returncode == 1 and "matches 2 runs" in done.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"run_id": "x"}')
    done = compare(config, str(bad), str(a_file))
    assert done.returncode == 1 and "not a measure --json file (no host" in done.stderr


def test_notes_for_power_models_and_units(two_runs: tuple[Path, Path, Path]) -> None:
    a = json.loads(two_runs[1].read_text())
    b = copy.deepcopy(a)
    b["components"][0]["source"] = "rapl"
    b["components"][0]["model"] = None
    b["sci"]["unit"] = "request"
    found = notes(a, b)
    assert len(found) == 2
    assert found[0].startswith("different power models:") and "cpu (rapl)" in found[0]
    assert found[1] == "different units: answer and request"
    b["sci"] = {"units": None, "unit": None, "g_per_unit": None}
    assert figures(compare_json(a, b))["SCI"]["ratio"] is None
