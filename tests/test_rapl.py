"""RaplSensor against fake powercap trees built under tmp_path."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.records import ComponentReading, CpuActivity
from agent.sensors import rapl
from agent.sensors.base import IntervalContext, SensorUnavailable
from agent.sensors.rapl import RaplSensor
from tests.powercap_fixtures import (
    MAX_UJ,
    PowercapTree,
    ZoneSpec,
    amd_two_sockets,
    build_powercap,
    laptop_with_psys,
    mmio_only,
    one_socket,
    package,
    two_sockets,
    with_mmio_duplicate,
)

CTX = IntervalContext(
    interval_s=1.0,
    cpu=CpuActivity(busy_ticks=0, total_ticks=100, cpu_count=1),
    memory_total_bytes=1,
)
LOGGER = "sci_agent.sensors.rapl"


def by_component(readings: list[ComponentReading]) -> dict[str, ComponentReading]:
    return {r.component: r for r in readings}


def joules(readings: list[ComponentReading]) -> dict[str, float]:
    return {r.component: r.joules for r in readings}


@pytest.fixture
def opened() -> Iterator[list[RaplSensor]]:
    """Sensors a test opened, closed afterwards."""
    sensors: list[RaplSensor] = []
    yield sensors
    for s in sensors:
        s.close()


def open_sensor(tree: PowercapTree | Path, opened: list[RaplSensor]) -> RaplSensor:
    sensor = RaplSensor(tree.root if isinstance(tree, PowercapTree) else tree)
    sensor.open()
    opened.append(sensor)
    return sensor


def test_one_socket_reports_package_and_dram_not_core_or_uncore(
    tmp_path: Path, opened: list[RaplSensor]
) -> None:
    tree = one_socket(tmp_path)
    sensor = open_sensor(tree, opened)
    assert sensor.name == "rapl"
    assert sensor.kinds() == frozenset({"cpu", "dram"})

    tree.advance("intel-rapl:0", 12_500_000)
    tree.advance("intel-rapl:0:0", 9_000_000)  # core
    tree.advance("intel-rapl:0:1", 1_000_000)  # uncore
    tree.advance("intel-rapl:0:2", 3_250_000)
    readings = sensor.read(CTX)

    assert joules(readings) == pytest.approx({"cpu0": 12.5, "dram0": 3.25})
    found = by_component(readings)
    assert found["cpu0"].kind == "cpu" and found["dram0"].kind == "dram"
    assert all(r.source == "rapl" for r in readings)

    # the next interval reports only what accrued since this read
    tree.advance("intel-rapl:0", 2_000_000)
    assert joules(sensor.read(CTX)) == pytest.approx({"cpu0": 2.0, "dram0": 0.0})


def test_nested_subzones_are_found(tmp_path: Path, opened: list[RaplSensor]) -> None:
    tree = one_socket(tmp_path, nested=True)
    assert (tmp_path / "intel-rapl:0" / "intel-rapl:0:2").is_dir()
    sensor = open_sensor(tree, opened)
    tree.advance("intel-rapl:0:2", 4_000_000)
    assert joules(sensor.read(CTX)) == pytest.approx({"cpu0": 0.0, "dram0": 4.0})


def test_two_sockets_with_dram(tmp_path: Path, opened: list[RaplSensor]) -> None:
    tree = two_sockets(tmp_path)
    sensor = open_sensor(tree, opened)
    tree.advance("intel-rapl:0", 10_000_000)
    tree.advance("intel-rapl:1", 20_000_000)
    tree.advance("intel-rapl:0:2", 1_000_000)
    tree.advance("intel-rapl:1:2", 2_000_000)
    readings = sensor.read(CTX)
    assert [r.component for r in readings] == ["cpu0", "cpu1", "dram0", "dram1"]
    assert joules(readings) == pytest.approx(
        {"cpu0": 10.0, "cpu1": 20.0, "dram0": 1.0, "dram1": 2.0}
    )


def test_amd_packages_without_dram(tmp_path: Path, opened: list[RaplSensor]) -> None:
    tree = amd_two_sockets(tmp_path)
    sensor = open_sensor(tree, opened)
    assert sensor.kinds() == frozenset({"cpu"})
    tree.advance("intel-rapl:1", 7_000_000)
    assert joules(sensor.read(CTX)) == pytest.approx({"cpu0": 0.0, "cpu1": 7.0})


def test_package_number_comes_from_the_name_else_the_zone_index(
    tmp_path: Path, opened: list[RaplSensor]
) -> None:
    tree = build_powercap(
        tmp_path,
        [
            ZoneSpec("intel-rapl:0", "package-1"),
            ZoneSpec("intel-rapl:0:0", "dram"),
            ZoneSpec("intel-rapl:3", "package"),
        ],
    )
    sensor = open_sensor(tree, opened)
    readings = sensor.read(CTX)
    assert sorted(joules(readings)) == ["cpu1", "cpu3", "dram1"]
    # the reading carries its package: nobody parses it back out of the name
    assert {r.component: r.package for r in readings} == {"cpu1": 1, "cpu3": 3, "dram1": 1}


def test_psys_reports_only_the_remainder(tmp_path: Path, opened: list[RaplSensor]) -> None:
    tree = laptop_with_psys(tmp_path)
    sensor = open_sensor(tree, opened)
    assert sensor.kinds() == frozenset({"cpu", "dram", "psys"})

    tree.advance("intel-rapl:0", 6_000_000)
    tree.advance("intel-rapl:0:0", 5_000_000)  # core: part of the package, not subtracted
    tree.advance("intel-rapl:0:2", 1_500_000)
    tree.advance("intel-rapl:1", 10_000_000)  # psys: the whole platform
    readings = sensor.read(CTX)

    assert joules(readings) == pytest.approx({"cpu0": 6.0, "dram0": 1.5, "psys": 2.5})
    assert by_component(readings)["psys"].kind == "psys"
    assert by_component(readings)["psys"].package is None  # the whole platform
    assert sum(r.joules for r in readings) == pytest.approx(10.0)


def test_psys_remainder_is_clamped_at_zero(tmp_path: Path, opened: list[RaplSensor]) -> None:
    tree = laptop_with_psys(tmp_path)
    sensor = open_sensor(tree, opened)
    tree.advance("intel-rapl:0", 6_000_000)
    tree.advance("intel-rapl:1", 5_900_000)  # read skew: psys slightly behind the package
    assert joules(sensor.read(CTX))["psys"] == 0.0


def test_mmio_duplicate_is_counted_once(tmp_path: Path, opened: list[RaplSensor]) -> None:
    tree = with_mmio_duplicate(tmp_path)
    sensor = open_sensor(tree, opened)
    tree.advance("intel-rapl:0", 8_000_000)
    tree.advance("intel-rapl-mmio:0", 7_900_000)
    readings = sensor.read(CTX)
    assert joules(readings) == pytest.approx({"cpu0": 8.0, "dram0": 0.0})  # the MSR zone


def test_mmio_only_zone_is_used(tmp_path: Path, opened: list[RaplSensor]) -> None:
    tree = mmio_only(tmp_path)
    sensor = open_sensor(tree, opened)
    assert sensor.kinds() == frozenset({"cpu"})
    tree.advance("intel-rapl-mmio:0", 3_000_000)
    assert joules(sensor.read(CTX)) == pytest.approx({"cpu0": 3.0})


def test_wraparound_gives_the_positive_delta(tmp_path: Path, opened: list[RaplSensor]) -> None:
    tree = build_powercap(tmp_path, [package(0, energy_uj=MAX_UJ - 2_000_000)])
    sensor = open_sensor(tree, opened)
    tree.set("intel-rapl:0", 3_000_000)  # 2 J up to the wrap, then 3 J more
    assert joules(sensor.read(CTX)) == pytest.approx({"cpu0": 5.0})
    tree.advance("intel-rapl:0", 1_000_000)
    assert joules(sensor.read(CTX)) == pytest.approx({"cpu0": 1.0})


def test_counter_reset_is_dropped_not_reported_as_a_huge_wrap(
    tmp_path: Path, opened: list[RaplSensor], caplog: pytest.LogCaptureFixture
) -> None:
    tree = build_powercap(tmp_path, [package(0, energy_uj=100_000_000)])
    sensor = open_sensor(tree, opened)
    tree.set("intel-rapl:0", 1_000_000)  # as a wrap: ~262 kJ in one second
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert sensor.read(CTX) == []
    assert len(caplog.records) == 1
    tree.advance("intel-rapl:0", 2_000_000)  # the new value is the baseline
    assert joules(sensor.read(CTX)) == pytest.approx({"cpu0": 2.0})


def test_backwards_without_wrap_range_is_dropped_and_warned_once(
    tmp_path: Path, opened: list[RaplSensor], caplog: pytest.LogCaptureFixture
) -> None:
    tree = build_powercap(
        tmp_path,
        [package(0, energy_uj=50_000_000, max_uj=None), ZoneSpec("intel-rapl:1", "package-1")],
    )
    sensor = open_sensor(tree, opened)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(2):
            tree.advance("intel-rapl:0", -10_000_000)
            tree.advance("intel-rapl:1", 1_000_000)
            readings = sensor.read(CTX)
            assert joules(readings) == pytest.approx({"cpu1": 1.0})  # cpu0 dropped, no negative
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "intel-rapl:0" in warnings[0].getMessage()

    tree.advance("intel-rapl:0", 4_000_000)  # baseline moved to the last value
    assert joules(sensor.read(CTX))["cpu0"] == pytest.approx(4.0)


def test_counter_unreadable_mid_run_is_dropped_and_warned_once(
    tmp_path: Path,
    opened: list[RaplSensor],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tree = laptop_with_psys(tmp_path)
    sensor = open_sensor(tree, opened)
    bad_fd = sensor._zones[1].fd  # dram0 (zones are ordered cpu, dram, psys)
    assert sensor._zones[1].component == "dram0"
    real_read = rapl._read_counter

    def failing(fd: int) -> int:
        if fd == bad_fd:
            raise OSError(19, "No such device")
        return real_read(fd)

    monkeypatch.setattr(rapl, "_read_counter", failing)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(2):
            tree.advance("intel-rapl:0", 1_000_000)
            tree.advance("intel-rapl:1", 3_000_000)
            # dram0 is missing, so psys's remainder cannot be formed either
            assert joules(sensor.read(CTX)) == pytest.approx({"cpu0": 1.0})
    assert len(caplog.records) == 1

    monkeypatch.setattr(rapl, "_read_counter", real_read)
    tree.advance("intel-rapl:0:2", 5_000_000)
    assert "dram0" not in joules(sensor.read(CTX))  # recovery re-primes: no lumped gap
    tree.advance("intel-rapl:0:2", 1_000_000)
    tree.advance("intel-rapl:1", 2_000_000)
    assert joules(sensor.read(CTX)) == pytest.approx({"cpu0": 0.0, "dram0": 1.0, "psys": 1.0})


def test_permission_denied_explains_the_fixes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = one_socket(tmp_path)

    def denied(path: Path) -> int:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(rapl, "_open_counter", denied)
    with pytest.raises(SensorUnavailable) as err:
        RaplSensor(tree.root).open()
    assert "permission denied" in err.value.reason
    assert "intel-rapl:0/energy_uj" in err.value.reason
    assert "CVE-2020-8694" in err.value.reason
    assert "CAP_DAC_READ_SEARCH" in err.value.fix
    assert "root" in err.value.fix and "systemd-tmpfiles" in err.value.fix


def test_chmod_000_counter_is_a_permission_error(tmp_path: Path) -> None:
    tree = one_socket(tmp_path)
    counter = tree.counter("intel-rapl:0")
    counter.chmod(0)
    try:
        counter.read_text()
    except PermissionError:
        pass
    else:
        pytest.skip("running with CAP_DAC_OVERRIDE (root): a mode-000 file is still readable")
    with pytest.raises(SensorUnavailable) as err:
        RaplSensor(tree.root).open()
    assert "permission denied" in err.value.reason
    assert "CAP_DAC_READ_SEARCH" in err.value.fix


def test_unreadable_counter_at_open_is_unavailable_not_zero(tmp_path: Path) -> None:
    tree = one_socket(tmp_path)
    counter = tree.counter("intel-rapl:0:2")
    counter.unlink()
    counter.mkdir()  # reading it raises IsADirectoryError, even as root
    with pytest.raises(SensorUnavailable) as err:
        RaplSensor(tree.root).open()
    assert "intel-rapl:0:2/energy_uj" in err.value.reason
    assert "permission" not in err.value.reason


def test_missing_root_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(SensorUnavailable) as err:
        RaplSensor(tmp_path / "nope").open()
    assert "no RAPL zones" in err.value.reason
    assert err.value.fix


def test_empty_root_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(SensorUnavailable, match="no RAPL zones"):
        RaplSensor(tmp_path).open()


def test_control_type_and_core_only_is_unavailable(tmp_path: Path) -> None:
    build_powercap(tmp_path, [ZoneSpec("intel-rapl:0:0", "core")])
    with pytest.raises(SensorUnavailable, match="no RAPL zones"):
        RaplSensor(tmp_path).open()


def test_close_and_reopen(tmp_path: Path, opened: list[RaplSensor]) -> None:
    tree = one_socket(tmp_path)
    sensor = open_sensor(tree, opened)
    sensor.close()
    assert sensor.kinds() == frozenset()
    with pytest.raises(RuntimeError):
        sensor.read(CTX)
    sensor.open()
    tree.advance("intel-rapl:0", 1_000_000)
    assert joules(sensor.read(CTX))["cpu0"] == pytest.approx(1.0)
