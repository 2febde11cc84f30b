"""Static (zero-load) power learned from power vs utilisation, kept across restarts."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest

from agent.config import ConfigError, loads
from agent.records import CpuActivity
from agent.sensors import open_sensors
from agent.sensors.base import IntervalContext
from agent.sensors.rapl import RaplSensor
from agent.static_power import BINS, PER_BIN, StaticPowerLearner
from tests.powercap_fixtures import one_socket

STATIC_W, SLOPE_W = 40.0, 120.0


def busy_machine(learner: StaticPowerLearner, n: int = 2000, seed: int = 7) -> None:
    """A machine that is never idle: 30-90 % busy, noisy power, occasional spikes."""
    rng = random.Random(seed)
    for _ in range(n):
        u = rng.uniform(0.3, 0.9)
        watts = STATIC_W + SLOPE_W * u + rng.gauss(0, 3.0)
        if rng.random() < 0.02:
            watts += 150.0  # a turbo burst the interval happened to catch
        learner.observe("cpu0", u, watts)


def test_recovers_the_zero_load_intercept_with_no_idle_sample() -> None:
    learner = StaticPowerLearner("rapl")
    busy_machine(learner)
    floor = learner.floor("cpu0")
    assert floor.source == "learned"
    assert floor.watts == pytest.approx(STATIC_W, abs=3.0)


def test_falls_back_to_zero_watts_until_the_load_has_spread() -> None:
    learner = StaticPowerLearner("rapl")
    for i in range(100):
        learner.observe("cpu0", 0.50 + (i % 3) * 0.01, 100.0)  # one 5 % bin only
    assert (learner.floor("cpu0").watts, learner.floor("cpu0").source) == (0.0, "fallback")
    assert learner.static_joules("cpu0", 500.0, 5.0) == (0.0, "fallback")
    assert learner.floor("never-seen").source == "fallback"


def test_an_idle_interval_is_a_direct_observation() -> None:
    learner = StaticPowerLearner("nvml")
    for watts in (130.0, 81.0, 107.0):  # power tail after work stopped, then idle
        learner.observe("gpu0", 0.0, watts)
    assert learner.floor("gpu0").watts == 81.0
    assert learner.static_joules("gpu0", 100.0, 2.0) == (100.0, "learned")  # capped


def test_the_floor_never_exceeds_the_lowest_power_seen() -> None:
    learner = StaticPowerLearner("rapl")
    for _ in range(5):  # power falling with load (e.g. a fan curve): intercept above all
        learner.observe("psys", 0.2, 20.0)
        learner.observe("psys", 0.6, 10.0)
    assert learner.floor("psys").watts == 10.0


def test_memory_is_bounded() -> None:
    learner = StaticPowerLearner("rapl")
    busy_machine(learner, n=20_000)
    window = learner._windows["cpu0"]
    assert sum(len(b) for b in window.bins) <= BINS * PER_BIN


def test_persists_atomically_and_reloads(tmp_path: Path) -> None:
    first = StaticPowerLearner("rapl", tmp_path / "state")
    busy_machine(first)
    learned = first.floor("cpu0")
    first.save()
    path = tmp_path / "state" / "static-rapl.json"
    assert json.loads(path.read_text())["version"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["static-rapl.json"]  # no temp left

    again = StaticPowerLearner("rapl", tmp_path / "state")
    assert again.floor("cpu0") == learned


def test_a_bad_state_file_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "static-rapl.json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        learner = StaticPowerLearner("rapl", tmp_path)
    assert learner.floor("cpu0").source == "fallback"
    assert "static-power state" in caplog.text
    bad = {"version": 1, "components": {"cpu0": [[[0.5, -3.0]]] * BINS}}
    (tmp_path / "static-rapl.json").write_text(json.dumps(bad))
    assert StaticPowerLearner("rapl", tmp_path).floor("cpu0").source == "fallback"


def test_a_configured_floor_wins() -> None:
    learner = StaticPowerLearner("rapl", configured={"cpu0": 18.5})
    busy_machine(learner)
    assert learner.static_joules("cpu0", 500.0, 5.0) == (92.5, "configured")
    gpu = StaticPowerLearner("nvml", configured={"gpu1": 70.0})
    assert gpu.floor("gpu0", default_configured=60.0).watts == 60.0  # [sensors.nvml] idle_watts
    assert gpu.floor("gpu1", default_configured=60.0).watts == 70.0  # per GPU wins


def ctx(busy: int, total: int = 1000) -> IntervalContext:
    return IntervalContext(5.0, CpuActivity(busy, total, 2), 1 << 30)


def test_rapl_readings_carry_the_learned_floor_and_save_it_on_close(tmp_path: Path) -> None:
    tree = one_socket(tmp_path / "powercap")
    sensor = RaplSensor(tree.root, StaticPowerLearner("rapl", tmp_path / "state"))
    sensor.open()
    rng = random.Random(3)
    readings = []
    for _ in range(200):
        u = rng.uniform(0.3, 0.9)
        tree.advance("intel-rapl:0", round((STATIC_W + SLOPE_W * u) * 5.0 * 1e6))
        tree.advance("intel-rapl:0:2", round((3.0 + 2.0 * u) * 5.0 * 1e6))
        readings = sensor.read(ctx(round(u * 1000)))
    by = {r.component: r for r in readings}
    assert by["cpu0"].static_source == "learned"
    assert by["cpu0"].static_joules == pytest.approx(STATIC_W * 5.0, rel=0.03)
    assert by["dram0"].static_joules == pytest.approx(3.0 * 5.0, rel=0.03)
    sensor.close()
    reopened = RaplSensor(tree.root, StaticPowerLearner("rapl", tmp_path / "state"))
    assert reopened.static.floor("cpu0").watts == pytest.approx(STATIC_W, rel=0.03)


def test_config_static_watts_reach_the_rapl_readings(tmp_path: Path) -> None:
    tree = one_socket(tmp_path / "powercap")
    cfg = loads(
        f'[sensors]\nstate_dir = "{tmp_path}/state"\n'
        f'[sensors.static_watts]\ncpu0 = 18.5\n[sensors.rapl]\nroot = "{tree.root}"\n'
        "[sensors.nvml]\nenabled = false\n"
    )
    found = open_sensors(cfg)
    try:
        tree.advance("intel-rapl:0", 500_000_000)
        tree.advance("intel-rapl:0:2", 10_000_000)
        readings = {r.component: r for s in found.sensors for r in s.read(ctx(500))}
    finally:
        found.close()
    assert (readings["cpu0"].static_joules, readings["cpu0"].static_source) == (
        18.5 * 5.0,
        "configured",
    )
    assert readings["dram0"].static_source == "fallback"
    assert (tmp_path / "state" / "static-rapl.json").exists()


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("cpu0 = -1.0", "sensors.static_watts.cpu0"),
        ("gpu0 = nan", "sensors.static_watts.gpu0"),
        ("gpu0 = inf", "sensors.static_watts.gpu0"),
        ('cpu0 = "18"', "sensors.static_watts.cpu0"),
    ],
)
def test_bad_static_watts_are_refused_naming_the_key(toml: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        loads(f"[sensors.static_watts]\n{toml}\n")


def test_defaults() -> None:
    cfg = loads("")
    assert cfg.sensors.state_dir == "var/state"
    assert cfg.sensors.static_watts == {}
    assert cfg.sci.idle_policy == "capacity"
