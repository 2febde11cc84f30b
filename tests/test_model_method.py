"""The model named, embodied carbon on VMs, and the method recorded with the data.

The power model picks CCF's row from /proc/cpuinfo and names it on every reading;
a VM is charged its share of a host's embodied carbon; each interval's Method is
stored when it changes, and a report discloses every method in force over its period.
"""

from __future__ import annotations

import json
import math
import re
import signal
import sqlite3
import subprocess
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent import report
from agent.config import Config, ConfigError, EmbodiedConfig, ModelConfig, ProcfsConfig, loads
from agent.doctor import embodied_lines
from agent.embodied import host_embodied
from agent.method import build_method, method_from_json, method_to_json
from agent.records import (
    AppEnergy,
    ComponentReading,
    CpuActivity,
    IntensityValue,
    IntervalResult,
    SciRecord,
)
from agent.records_json import to_json
from agent.sensors.base import IntervalContext
from agent.sensors.model import CpuInfo, ModelSensor
from exporters.sqlite_store import SqliteStore
from sci.embodied import DEFAULT_SERVER_EMBODIED_KGCO2E, REFERENCE_SERVER_THREADS, EmbodiedFigure
from tests.test_agent_run import AGENT, write_config

GB = 1_000_000_000


def cpuinfo(model_name: str, vendor: str, family: int, model: int, vm: bool = True) -> str:
    """Two logical CPUs of one socket, as /proc/cpuinfo lists them."""
    flags = "fpu vme sse2 ht" + (" hypervisor" if vm else "")
    block = (
        "processor\t: {n}\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: {model}\n"
        "model name\t: {name}\nstepping\t: 7\nphysical id\t: 0\nflags\t\t: {flags}\n\n"
    )
    return "".join(
        block.format(n=n, vendor=vendor, family=family, model=model, name=model_name, flags=flags)
        for n in range(2)
    )


EPYC_7R32 = cpuinfo("AMD EPYC 7R32", "AuthenticAMD", 23, 49)
CASCADE_LAKE = cpuinfo("Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz", "GenuineIntel", 6, 85)
GENERIC_EPYC_MILAN = cpuinfo("AMD EPYC", "AuthenticAMD", 25, 1)
UNKNOWN = cpuinfo("Frobnicator 9000", "SomeVendor", 1, 1)
BARE_METAL_GOLD = cpuinfo(
    "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz", "GenuineIntel", 6, 85, vm=False
)


def model_readings(text: str, config: ModelConfig | None = None) -> list[ComponentReading]:
    """One 10 s interval at 50 % busy on 2 vCPUs with 16.4 GB, from cpuinfo ``text``."""
    sensor = ModelSensor(config or ModelConfig(), cpuinfo=CpuInfo.parse(text))
    sensor.open()
    ctx = IntervalContext(10.0, CpuActivity(50, 100, 2), int(16.4 * GB))
    return sensor.read(ctx)


@pytest.mark.parametrize(
    ("text", "row", "lo", "hi"),
    [
        (EPYC_7R32, "AMD EPYC 2nd Gen", 0.47, 1.69),
        (CASCADE_LAKE, "Cascade Lake", 0.64, 3.97),
        (GENERIC_EPYC_MILAN, "AMD EPYC 3rd Gen", 0.45, 2.02),
        (UNKNOWN, "average", 0.74, 3.5),
    ],
)
def test_ccf_row_comes_from_cpuinfo_and_is_named(text: str, row: str, lo: float, hi: float) -> None:
    cpu, dram = model_readings(text)
    assert cpu.joules == pytest.approx(2 * (lo + 0.5 * (hi - lo)) * 10.0)
    assert cpu.static_joules == pytest.approx(2 * lo * 10.0)
    assert cpu.static_source == "model"
    assert cpu.model is not None
    assert cpu.model.startswith(f"CCF per-vCPU, {row}: {lo:g}–{hi:g} W × 2 vCPUs (")
    source = "AWS average" if row == "average" else "Cloud Carbon Footprint coefficients"
    assert source in cpu.model
    assert dram.model == "CCF memory 0.392 W/GB × 16.4 GB"
    assert dram.static_joules == dram.joules == pytest.approx(0.392 * 16.4 * 10.0)


def test_configured_coefficients_win_over_the_table() -> None:
    cpu, _ = model_readings(EPYC_7R32, ModelConfig(min_w_per_vcpu=1.0, max_w_per_vcpu=2.0))
    assert cpu.joules == pytest.approx(2 * 1.5 * 10.0)
    assert cpu.model is not None and cpu.model.startswith("CCF per-vCPU, configured: 1–2 W")
    assert "[sensors.model] min_w_per_vcpu" in cpu.model


def test_teads_curve_names_the_tdp_row_and_its_floor_is_12_percent() -> None:
    cpu, _ = model_readings(BARE_METAL_GOLD)
    assert (
        cpu.model == "Teads curve, TDP 150 W × 1 socket(s) (cpu-tdp.csv row 'Intel Xeon Gold 6248')"
    )
    assert cpu.static_joules == pytest.approx(0.12 * 150 * 10.0)


def test_coefficients_are_a_pair_in_the_config() -> None:
    with pytest.raises(
        ConfigError, match=re.escape("sensors.model.max_w_per_vcpu: set min_w_per_vcpu")
    ):
        loads("[sensors.model]\nmin_w_per_vcpu = 0.5\n")
    assert loads("").sensors.model.min_w_per_vcpu is None


# -- embodied carbon on VMs -------------------------------------------------------------


def proc_root(tmp_path: Path, text: str) -> Path:
    root = tmp_path / "proc"
    root.mkdir(exist_ok=True)
    (root / "cpuinfo").write_text(text)
    return root


def cfg(tmp_path: Path, text: str, **embodied: object) -> Config:
    procfs = ProcfsConfig(root=str(proc_root(tmp_path, text)), sys_root=str(tmp_path / "sys"))
    return Config(procfs=procfs, embodied=EmbodiedConfig(**embodied))  # type: ignore[arg-type]


def test_a_vm_is_charged_its_vcpus_share_of_the_reference_server(tmp_path: Path) -> None:
    figure = host_embodied(cfg(tmp_path, EPYC_7R32), vcpus=2)
    assert figure.kgco2e == pytest.approx(DEFAULT_SERVER_EMBODIED_KGCO2E * 2 / 80)
    assert REFERENCE_SERVER_THREADS == 80
    assert figure.is_default and figure.basis.startswith("virtual machine:")
    assert "2/80 threads" in figure.basis
    threads = host_embodied(cfg(tmp_path, EPYC_7R32, host_threads=64), vcpus=2)
    assert threads.kgco2e == pytest.approx(DEFAULT_SERVER_EMBODIED_KGCO2E * 2 / 64)


def test_bare_metal_keeps_the_whole_server(tmp_path: Path) -> None:
    figure = host_embodied(cfg(tmp_path, BARE_METAL_GOLD), vcpus=80)
    assert figure.kgco2e == DEFAULT_SERVER_EMBODIED_KGCO2E == 1356.48
    assert figure.basis.startswith("bare metal")


def test_an_explicit_total_wins(tmp_path: Path) -> None:
    figure = host_embodied(
        cfg(tmp_path, EPYC_7R32, total_kgco2e=500.0, instance_type="m5.large"), vcpus=2
    )
    assert (figure.kgco2e, figure.is_default) == (500.0, False)


def test_a_known_instance_type_uses_its_family_host(tmp_path: Path) -> None:
    figure = host_embodied(cfg(tmp_path, CASCADE_LAKE, instance_type="m5.large"), vcpus=2)
    assert figure.kgco2e == pytest.approx(1610.79 * 2 / 96)
    assert "m5.large" in figure.basis and "Cloud Carbon Footprint" in figure.basis
    with pytest.raises(
        ConfigError, match=re.escape("embodied.instance_type: no embodied data for 'x9.large'")
    ):
        host_embodied(cfg(tmp_path, CASCADE_LAKE, instance_type="x9.large"), vcpus=2)


def test_the_instance_type_is_detected_from_dmi(tmp_path: Path) -> None:
    dmi = tmp_path / "sys" / "class" / "dmi" / "id"
    dmi.mkdir(parents=True)
    (dmi / "sys_vendor").write_text("Amazon EC2\n")
    (dmi / "product_name").write_text("c5a.xlarge\n")
    figure = host_embodied(cfg(tmp_path, EPYC_7R32), vcpus=4)
    assert figure.kgco2e == pytest.approx(1244.29 * 4 / 96)


def test_doctor_names_the_embodied_default_and_how_to_set_it(tmp_path: Path) -> None:
    text = "\n".join(embodied_lines(cfg(tmp_path, EPYC_7R32), vcpus=2))
    assert "default in use: virtual machine: 1356.48 kgCO2e reference server × 2/80" in text
    assert "set [embodied] total_kgco2e" in text
    configured = "\n".join(embodied_lines(cfg(tmp_path, EPYC_7R32, total_kgco2e=40.0), vcpus=2))
    assert "configured: 40 kgCO2e" in configured and "default" not in configured


# -- the method recorded ----------------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)
IDLE = AppEnergy("_idle", 0.0, 0.0, 0.0)


def scored(end: datetime, figure: EmbodiedFigure, model: str = "CCF per-vCPU, x") -> IntervalResult:
    """A 5 s interval of app ``web`` with one unit, carrying its Method."""
    start = end - timedelta(seconds=5)
    components = (
        ComponentReading("cpu", "cpu", "model", 10.0, None, 2.0, "model", model),
        ComponentReading("dram", "dram", "model", 5.0, None, 5.0, "model", "CCF memory"),
    )
    intensity = IntensityValue("FR", 50.0, "static", "average", end)
    row = SciRecord("web", "request", 1.0, 1e-6, 50.0, 5e-5, 1e-3, 1.05e-3)
    r = IntervalResult(
        "h1",
        start,
        end,
        components,
        (),
        (AppEnergy("web", 10.0, 5.0, 0.0),),
        IDLE,
        IDLE,
        intensity,
        (row,),
    )
    method = build_method(
        r,
        embodied=figure,
        lifespan_years=4.0,
        share_policy="proportional",
        pue=1.0,
        zone="FR",
        providers=("static",),
    )
    return replace(r, method=method)


VM = EmbodiedFigure(33.912, "virtual machine: reference × 2/80", is_default=True)
REAL = EmbodiedFigure(40.0, "configured: 40 kgCO2e", is_default=False)


def test_method_json_round_trips_and_gives_the_interval_embodied_g() -> None:
    r = scored(T0, VM)
    assert r.method is not None and method_from_json(method_to_json(r.method)) == r.method
    assert r.method.static_watts == (("cpu", 0.4, "model"), ("dram", 1.0, "model"))
    d = to_json(r)
    assert d["embodied_g"] == pytest.approx(33.912e3 * 5 / (4 * 365.25 * 86400))
    assert d["method"]["embodied_basis"] == VM.basis
    assert [c["model"] for c in d["components"]] == ["CCF per-vCPU, x", "CCF memory"]
    assert [c["static_joules"] for c in d["components"]] == [2.0, 5.0]


def method_rows(path: Path) -> list[tuple[int, str]]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT ts_ms, method FROM method ORDER BY ts_ms").fetchall()
    finally:
        db.close()


def test_the_store_keeps_a_method_only_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(path)
    store.open()
    store.write([scored(T0 + timedelta(seconds=5 * i), VM) for i in range(1, 4)])
    store.close()
    store = SqliteStore(path)  # a restart with the same method adds nothing
    store.open()
    store.write([scored(T0 + timedelta(seconds=20), VM)])
    store.write([scored(T0 + timedelta(seconds=25), REAL)])
    store.close()
    rows = method_rows(path)
    assert [ts for ts, _ in rows] == [
        round(T0.timestamp() * 1000),
        round((T0 + timedelta(seconds=20)).timestamp() * 1000),
    ]
    assert [json.loads(m)["embodied_kgco2e"] for _, m in rows] == [33.912, 40.0]


def test_a_report_lists_every_method_in_force_from_the_store(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(path)
    store.open()
    store.write([scored(T0 + timedelta(seconds=5 * i), VM) for i in range(1, 7)])
    store.write(
        [scored(T0 + timedelta(seconds=5 * i), REAL, "CCF per-vCPU, y") for i in range(7, 13)]
    )
    store.close()
    today = Config(embodied=EmbodiedConfig(total_kgco2e=999.0))  # not what was in force
    built = report.build(
        today, "web", T0 + timedelta(seconds=12), T0 + timedelta(minutes=5), str(path)
    )
    assert [m["method"]["embodied_kgco2e"] for m in built.methods] == [33.912, 40.0]
    assert [m["since"] for m in built.methods] == ["2026-01-01T00:00:00Z", "2026-01-01T00:00:30Z"]
    text = built.to_markdown()
    assert "2 method record(s), 1 change(s) in the period" in text
    assert "### h1 from 2026-01-01T00:00:30Z" in text
    assert "33.912 kgCO2e: virtual machine: reference × 2/80" in text
    assert "40 kgCO2e: configured: 40 kgCO2e" in text
    assert "cpu (model): CCF per-vCPU, y" in text
    assert "999" not in text  # today's config is not the method of these data
    assert "Embodied TE is a default estimate" in text
    assert json.loads(built.to_json())["methods"][1]["method"]["zone"] == "FR"
    later = report.build(
        today, "web", T0 + timedelta(seconds=40), T0 + timedelta(minutes=5), str(path)
    )
    assert [m["method"]["embodied_kgco2e"] for m in later.methods] == [40.0]


# -- end to end: once --json, JSON lines and the store -----------------------------------


def test_once_json_names_every_model_and_the_embodied_figure(tmp_path: Path) -> None:
    out = subprocess.run(
        [*AGENT, "--config", str(write_config(tmp_path)), "once", "--interval", "0.5", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    d = json.loads(out.stdout)
    for c in d["components"]:
        assert c["source"] == "model" and c["model"] and c["static_source"] == "model"
        assert 0 < c["static_joules"] <= c["joules"]
    m = d["method"]
    assert [c["model"] for c in m["components"]] == [c["model"] for c in d["components"]]
    seconds = d["interval_s"]
    expected_g = m["embodied_kgco2e"] * 1000 * seconds / (m["lifespan_years"] * 365.25 * 86400)
    assert math.isclose(d["embodied_g"], expected_g, rel_tol=1e-9)
    info = CpuInfo.read()
    if info.virtualised:  # this machine is a VM: TE is its share, not the whole server
        assert m["embodied_kgco2e"] < DEFAULT_SERVER_EMBODIED_KGCO2E
        assert m["embodied_basis"].startswith("virtual machine")


def test_json_lines_and_the_store_carry_the_model(tmp_path: Path) -> None:
    lines = tmp_path / "out.jsonl"
    cfg_path = write_config(tmp_path, f'[jsonl]\npath = "{lines}"\n[http]\nenabled = false\n')
    agent = subprocess.Popen([*AGENT, "--config", str(cfg_path), "run"], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if lines.exists() and len(lines.read_text().splitlines()) >= 2:
            break
        time.sleep(0.2)
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=30) == 0
    rows = [json.loads(line) for line in lines.read_text().splitlines()]
    assert len(rows) >= 2
    for row in rows:
        assert all(c["model"] for c in row["components"])
        assert row["method"] is not None and row["embodied_g"] > 0
    stored = method_rows(tmp_path / "store.db")
    assert len(stored) == 1  # the same method for every interval: one row
    models = {c["component"]: c["model"] for c in json.loads(stored[0][1])["components"]}
    assert models == {c["component"]: c["model"] for c in rows[0]["components"]}
