"""A whole cycle on fixture ``/proc`` and powercap trees with an injected clock, golden.

The sampler reads a fake ``/proc`` (two CPUs, four processes, a child that exits and is
reaped between the scans) and a fake RAPL tree (package-0 with DRAM, configured static
floors); the scorer shares static energy and embodied carbon by capacity. The whole
``once --json`` object must equal the checked-in golden
file; the key figures are also derived by hand below, so a golden file regenerated
with a wrong split would still fail. Regenerate with ``SCI_GOLDEN_UPDATE=1``.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.config import (
    AppRule,
    Config,
    HttpConfig,
    NvmlConfig,
    ProcfsConfig,
    RaplConfig,
    SensorsConfig,
    StoreConfig,
    validate,
)
from agent.procfs import PAGE_SIZE
from agent.records import IntensityValue
from agent.records_json import to_json
from agent.sampler import Sampler
from agent.scoring import Scorer
from tests.powercap_fixtures import one_socket
from tests.procfs_fixtures import FakeProc

GOLDEN = Path(__file__).parent / "fixtures" / "golden" / "cycle.json"
INTERVAL_S = 5.0


class Clock:
    """Monotonic and wall clocks that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return datetime(2026, 11, 30, 12, 0, tzinfo=UTC) + timedelta(seconds=self.now)


def _cycle(tmp_path: Path) -> dict[str, Any]:
    proc = FakeProc(tmp_path / "proc", cpus=2)
    rapl = one_socket(tmp_path / "powercap")
    proc.set_process(10, "gunicorn", 1000, rss_pages=1000, cmdline="gunicorn web:app")
    proc.set_process(11, "postgres", 500, rss_pages=3000, cmdline="postgres -D /db")
    proc.set_process(12, "make", 40, rss_pages=10, cmdline="make all")
    proc.set_process(13, "cc", 20, rss_pages=10, cmdline="cc x.c", ppid=12)
    cfg = validate(
        Config(
            host="golden",
            interval_s=INTERVAL_S,
            sensors=SensorsConfig(
                rapl=RaplConfig(root=str(rapl.root)),
                nvml=NvmlConfig(enabled=False),
                static_watts={"cpu0": 10.0, "dram0": 2.0},
                state_dir=str(tmp_path / "state"),
            ),
            procfs=ProcfsConfig(root=str(proc.root), sys_root=str(tmp_path / "sys")),
            store=StoreConfig(enabled=False),
            http=HttpConfig(enabled=False),
            apps=(
                AppRule("web", cmdline=r"^gunicorn\b", unit="request"),
                AppRule("db", exe="postgres"),
                AppRule("build", cmdline=r"^(make|cc)\b"),
            ),
        )
    )
    clock = Clock()
    sampler = Sampler(cfg, clock=clock, wall_clock=clock.wall)
    sampler.open()
    # Five seconds later: 100 J in the package (of which 50 J above the 10 W floor),
    # 20 J in DRAM (10 J above its 2 W floor); 400 of 1,000 CPU ticks busy.
    clock.now += INTERVAL_S
    rapl.advance("intel-rapl:0", 100_000_000)
    rapl.advance("intel-rapl:0:2", 20_000_000)
    proc.set_cpu(0, user=300, system=0, idle=200)
    proc.set_cpu(1, user=100, system=0, idle=400)
    proc.set_process(10, "gunicorn", 1250, rss_pages=1000, cmdline="gunicorn web:app")
    proc.set_process(11, "postgres", 600, rss_pages=3000, cmdline="postgres -D /db")
    proc.remove_process(13)  # cc ran 8 more ticks, exited, and make reaped it: cutime 28
    proc.set_process(12, "make", 42, rss_pages=10, cmdline="make all", cutime=28)
    result = sampler.sample()
    sampler.close()
    grid = IntensityValue("FR", 50.0, "static", "average", clock.wall())
    scored = Scorer({"web": "request"}, 1000.0, 4.0, "capacity", 1.0).score(
        result, grid, {"web": 40.0}
    )
    return to_json(scored)


def _rounded(value: Any) -> Any:
    """Floats to 12 significant digits, so the file is stable across platforms."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def test_whole_cycle_matches_the_golden_file(tmp_path: Path) -> None:
    got = _rounded(_cycle(tmp_path))
    if os.environ.get("SCI_GOLDEN_UPDATE"):
        GOLDEN.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        pytest.skip("golden file rewritten")
    expected = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert got == expected


def test_the_golden_cycle_figures_derived_by_hand(tmp_path: Path) -> None:
    out = _cycle(tmp_path)
    apps = {a["app"]: a for a in out["apps"]}
    rate = 50.0 / 400  # dynamic package joules per busy tick
    assert apps["web"]["cpu_joules"] == pytest.approx(250 * rate)
    assert apps["db"]["cpu_joules"] == pytest.approx(100 * rate)
    # make: 2 ticks of its own + 8 of the child no scan saw (28 reaped − 20 already charged)
    assert apps["build"]["cpu_joules"] == pytest.approx(10 * rate)
    assert out["unattributed_joules"] == pytest.approx(40 * rate)  # 400 − 360 busy ticks
    rss = {"web": 1000, "db": 3000, "build": 10}
    for app, pages in rss.items():
        assert apps[app]["dram_joules"] == pytest.approx(10.0 * pages / 4010)
    assert out["total_joules"] == pytest.approx(120.0)
    assert out["idle_joules"] == pytest.approx(60.0)  # the static floors, 5 s × 12 W
    sci = {s["app"]: s for s in out["sci"]}
    memory = 16384000 * 1024
    web_static = 50.0 * 250 / 1000 + 10.0 * 1000 * PAGE_SIZE / memory  # capacity shares
    web_kwh = (250 * rate + 10.0 * 1000 / 4010 + web_static) / 3.6e6
    assert sci["web"]["energy_kwh"] == pytest.approx(web_kwh)
    web_m = 1e6 * INTERVAL_S / (4 * 365.25 * 86400) * 250 / 1000
    assert sci["web"]["embodied_g"] == pytest.approx(web_m)
    assert sci["web"]["sci"] == pytest.approx((web_kwh * 50.0 + web_m) / 40)
    total_carbon = sum(s["operational_g"] + s["embodied_g"] for s in out["sci"])
    host = 120.0 / 3.6e6 * 50.0 + 1e6 * INTERVAL_S / (4 * 365.25 * 86400)
    assert total_carbon == pytest.approx(host)
