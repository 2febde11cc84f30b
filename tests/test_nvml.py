"""NvmlSensor against the recorded answers of a real H200 (devtools/fake_pynvml.py)."""

from __future__ import annotations

import logging
import statistics
import sys
import time
from collections import Counter
from typing import Any

import pytest

from agent.records import ComponentReading, CpuActivity
from agent.sensors.base import IntervalContext, SensorUnavailable
from agent.sensors.nvml import NvmlSensor
from devtools import fake_pynvml
from devtools.fake_pynvml import RecordedNvml

CTX = IntervalContext(
    interval_s=0.5,
    cpu=CpuActivity(busy_ticks=0, total_ticks=100, cpu_count=1),
    memory_total_bytes=1,
)
LOGGER = "sci_agent.sensors.nvml"


def opened(fake: RecordedNvml, idle_watts: float | None = None) -> NvmlSensor:
    sensor = NvmlSensor(idle_watts=idle_watts, nvml=fake, clock=fake.clock)
    sensor.open()
    return sensor


def replay(sensor: NvmlSensor, fake: RecordedNvml) -> list[tuple[int, list[ComponentReading]]]:
    """Read once per recorded moment after the first; (moment, readings) per read."""
    out = []
    while fake.advance():
        out.append((fake.cursor, sensor.read(CTX)))
    return out


def gpu0(readings: list[ComponentReading]) -> ComponentReading | None:
    found = [r for r in readings if r.component == "gpu0"]
    return found[0] if found else None


def recorded_joules(fake: RecordedNvml, first: int = 0, last: int = -1) -> float:
    return float(fake.samples[last]["energy_mj"] - fake.samples[first]["energy_mj"]) / 1000


def running(fake: RecordedNvml, moment: int) -> set[int]:
    return {pid for pid, _ in fake.samples[moment]["running"]}


@pytest.fixture
def fake() -> RecordedNvml:
    return RecordedNvml()


def test_open_describes_the_gpu(fake: RecordedNvml) -> None:
    sensor = opened(fake)
    assert sensor.name == "nvml"
    assert sensor.kinds() == frozenset({"gpu"})
    [device] = sensor.devices
    assert (device.index, device.component) == (0, "gpu0")
    assert device.name == "NVIDIA H200"
    assert device.uuid == "GPU-7222db8e-b8c4-dc9d-0116-cbacd0827a56"
    assert device.energy_counter
    sensor.close()
    assert fake.shutdowns == 1 and not fake.initialized
    assert sensor.kinds() == frozenset()


def test_whole_trace_energy_equals_counter_delta(fake: RecordedNvml) -> None:
    sensor = opened(fake)
    reads = replay(sensor, fake)
    assert len(reads) == len(fake) - 1
    readings = [gpu0(r) for _, r in reads]
    assert all(r is not None for r in readings)
    total = sum(r.joules for r in readings if r is not None)
    assert total == pytest.approx(recorded_joules(fake), abs=1e-6)
    for r in readings:
        assert r is not None
        assert (r.kind, r.source) == ("gpu", "nvml")
        assert r.gpu is not None
        assert 0 <= r.gpu.idle_joules <= r.joules


def test_idle_baseline_is_learned_from_the_idle_prefix(
    fake: RecordedNvml, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    sensor = opened(fake)
    assert sensor.idle_baseline_w("gpu0") is None
    reads = replay(sensor, fake)
    learned = sensor.idle_baseline_w("gpu0")
    assert learned is not None and 80.0 < learned < 82.0
    # the idle prefix is almost all idle
    idle_prefix = [gpu0(r) for moment, r in reads if moment <= 16]
    idle = sum(r.gpu.idle_joules for r in idle_prefix if r is not None and r.gpu is not None)
    assert idle == pytest.approx(recorded_joules(fake, 0, 16), rel=0.01)
    # under load, idle is the baseline × interval, the rest goes to the processes
    moment, busy = reads[25]
    reading = gpu0(busy)
    assert reading is not None and reading.gpu is not None
    interval = fake.samples[moment]["t"] - fake.samples[moment - 1]["t"]
    assert reading.gpu.idle_joules == pytest.approx(learned * interval)
    assert reading.joules > 5 * reading.gpu.idle_joules
    # the power tail after the last exit: no process, no weights, above idle
    moment, tail = reads[-3]
    reading = gpu0(tail)
    assert reading is not None and reading.gpu is not None
    assert not running(fake, moment)
    assert not reading.gpu.sm_weight and not reading.gpu.memory_bytes
    assert reading.joules > reading.gpu.idle_joules * 1.3
    assert sum("idle power not learned yet" in m for m in caplog.messages) == 0


def test_idle_not_learned_logs_once_and_counts_zero(
    fake: RecordedNvml, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    fake.cursor = 17  # A is already running: nothing idle seen yet
    sensor = opened(fake)
    for _ in range(5):
        fake.advance()
        reading = gpu0(sensor.read(CTX))
        assert reading is not None and reading.gpu is not None
        assert reading.gpu.idle_joules == 0.0
    notes = [m for m in caplog.messages if "idle power not learned yet" in m]
    assert len(notes) == 1
    assert "[sensors.nvml] idle_watts" in notes[0]


def test_configured_idle_watts_wins(fake: RecordedNvml) -> None:
    sensor = opened(fake, idle_watts=50.0)
    reads = replay(sensor, fake)
    assert sensor.idle_baseline_w("gpu0") == 50.0
    moment, readings = reads[3]
    reading = gpu0(readings)
    assert reading is not None and reading.gpu is not None
    interval = fake.samples[moment]["t"] - fake.samples[moment - 1]["t"]
    assert reading.gpu.idle_joules == pytest.approx(50.0 * interval)


def test_weights_follow_the_processes(fake: RecordedNvml) -> None:
    a, b = fake.pids["A"], fake.pids["B"]
    sensor = opened(fake)
    reads = replay(sensor, fake)
    only_a = both = 0
    total: Counter[int] = Counter()
    for moment, readings in reads:
        reading = gpu0(readings)
        assert reading is not None and reading.gpu is not None
        usage = reading.gpu
        total.update(usage.sm_weight)
        pids = running(fake, moment)
        assert set(usage.memory_bytes) == pids
        if pids == {a}:
            only_a += 1
            assert set(usage.sm_weight) == {a}
            assert usage.memory_bytes[a] == 1050673152
        elif pids == {a, b} and set(usage.sm_weight) == {a, b}:
            both += 1
            assert usage.sm_weight[a] > 0 and usage.sm_weight[b] > 0
        if not pids and isinstance(fake.samples[moment]["proc_util"], str):
            assert usage.sm_weight == {}  # NotFound: no samples, not an error
    assert only_a >= 10 and both >= 5
    # integrated over the shared period, A (always busy) outweighs B (~50 % duty)
    assert total[a] > total[b] > 0


def test_shared_period_integrates_every_sample(fake: RecordedNvml) -> None:
    a, b = fake.pids["A"], fake.pids["B"]
    sensor = opened(fake)
    shared_a = shared_b = 0.0
    for moment, readings in replay(sensor, fake):
        reading = gpu0(readings)
        assert reading is not None and reading.gpu is not None
        if running(fake, moment) == {a, b}:
            shared_a += reading.gpu.sm_weight.get(a, 0.0)
            shared_b += reading.gpu.sm_weight.get(b, 0.0)
    expected: Counter[int] = Counter()
    for moment in range(1, len(fake)):
        util = fake.samples[moment]["proc_util"]
        if running(fake, moment) == {a, b} and not isinstance(util, str):
            for pid, sm, _, _ in util:
                expected[pid] += sm
    assert (shared_a, shared_b) == (expected[a], expected[b])
    assert shared_a > shared_b


def test_not_found_is_no_samples(fake: RecordedNvml, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    sensor = opened(fake)
    fake.advance()
    assert isinstance(fake.sample["proc_util"], str)
    reading = gpu0(sensor.read(CTX))
    assert reading is not None and reading.gpu is not None
    assert reading.gpu.sm_weight == {}
    assert reading.gpu.memory_bytes == {}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_power_integration_fallback(fake: RecordedNvml, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    fake.energy_supported = False
    sensor = opened(fake)
    assert not sensor.devices[0].energy_counter
    assert any("integrating power" in m for m in caplog.messages)
    total = sum(r.joules for _, readings in replay(sensor, fake) for r in readings)
    assert total == pytest.approx(recorded_joules(fake), rel=0.02)
    assert 80.0 < (sensor.idle_baseline_w("gpu0") or 0) < 82.0


def test_nvml_error_drops_the_reading_and_warns_once(
    fake: RecordedNvml, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    for at in (20, 21, 30):
        fake.fail(device=0, at=at, value=fake_pynvml.NVML_ERROR_UNKNOWN)
    sensor = opened(fake)
    reads = dict(replay(sensor, fake))
    assert reads[20] == [] and reads[21] == [] and reads[30] == []
    # the gap is never lumped: the first read after a failed counter read re-primes
    assert reads[22] == [] and reads[31] == []
    reading = gpu0(reads[23])
    assert reading is not None
    assert reading.joules == pytest.approx(recorded_joules(fake, 22, 23))
    assert gpu0(reads[32]) is not None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "gpu0" in warnings[0].getMessage() and "Unknown Error" in warnings[0].getMessage()


def test_utilization_error_drops_only_that_interval(
    fake: RecordedNvml, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    fake.fail(
        device=0,
        at=25,
        function="nvmlDeviceGetProcessUtilization",
        value=fake_pynvml.NVML_ERROR_GPU_IS_LOST,
    )
    sensor = opened(fake)
    reads = dict(replay(sensor, fake))
    assert reads[25] == []
    reading = gpu0(reads[26])  # the very next read is fine
    assert reading is not None and reading.gpu is not None
    assert reading.joules == pytest.approx(recorded_joules(fake, 25, 26))
    # the samples the failed call could not fetch are still in the driver's buffer and
    # come with the next call; only the weights see them, the joules are this interval's
    assert reading.gpu.sm_weight == {fake.pids["A"]: 99.0 + 98.0}
    assert len(caplog.records) == 1 and "GPU is lost" in caplog.records[0].getMessage()


def test_one_failing_gpu_does_not_stop_the_others(fake: RecordedNvml) -> None:
    fake.device_count = 2
    sensor = opened(fake)
    assert [d.component for d in sensor.devices] == ["gpu0", "gpu1"]
    assert sensor.devices[0].uuid != sensor.devices[1].uuid
    for at in range(10, 20):
        fake.fail(device=1, at=at, value=fake_pynvml.NVML_ERROR_GPU_IS_LOST)
    reads = dict(replay(sensor, fake))
    assert [r.component for r in reads[15]] == ["gpu0"]
    assert [r.component for r in reads[25]] == ["gpu0", "gpu1"]
    for at in range(10, 20):
        fake.fail(device=0, at=at, value=fake_pynvml.NVML_ERROR_GPU_IS_LOST)
    fake.cursor = 10
    assert sensor.read(CTX) == []  # all failing: no readings, no exception


def test_counter_reset_drops_the_interval_and_rebaselines(
    fake: RecordedNvml, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    fake.reset_counter(at=20, to_mj=1_000)
    sensor = opened(fake)
    reads = dict(replay(sensor, fake))
    assert reads[20] == []
    reading = gpu0(reads[21])
    assert reading is not None
    assert reading.joules == pytest.approx(recorded_joules(fake, 20, 21))
    assert len(caplog.records) == 1 and "backwards" in caplog.records[0].getMessage()
    total = sum(r.joules for readings in reads.values() for r in readings)
    assert total == pytest.approx(recorded_joules(fake) - recorded_joules(fake, 19, 20))


def test_at_most_three_nvml_calls_per_gpu_per_read(fake: RecordedNvml) -> None:
    fake.device_count = 2
    sensor = opened(fake)
    while fake.advance():
        fake.calls.clear()
        sensor.read(CTX)
        per_gpu = Counter(device for _, device in fake.calls)
        assert set(per_gpu) == {0, 1}
        assert max(per_gpu.values()) <= 3


def test_unsupported_process_utilization_keeps_energy(
    fake: RecordedNvml, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    for at in range(len(fake)):
        fake.fail(
            at=at,
            function="nvmlDeviceGetProcessUtilization",
            value=fake_pynvml.NVML_ERROR_NOT_SUPPORTED,
        )
    sensor = opened(fake)
    reads = replay(sensor, fake)
    assert all(len(readings) == 1 for _, readings in reads)
    total = sum(r.joules for _, readings in reads for r in readings)
    assert total == pytest.approx(recorded_joules(fake))
    _, readings = reads[25]
    assert readings[0].gpu is not None and readings[0].gpu.sm_weight == {}
    assert readings[0].gpu.memory_bytes == {fake.pids["A"]: 1050673152}
    assert len(caplog.records) == 1 and "memory" in caplog.records[0].getMessage()


def test_nvml_error_subclasses_mirror_pynvml() -> None:
    err: Any = fake_pynvml.NVMLError(fake_pynvml.NVML_ERROR_NOT_FOUND)
    assert type(err).__name__ == "NVMLError_NotFound" and err.value == 6
    assert str(err) == "Not Found"
    lib: Any = fake_pynvml.NVMLError_LibraryNotFound()  # type: ignore[attr-defined]
    assert isinstance(lib, fake_pynvml.NVMLError) and lib.value == 12
    assert fake_pynvml.NVMLError(12345).value == 12345
    pynvml = pytest.importorskip("pynvml")
    for name in (
        "NOT_FOUND",
        "NOT_SUPPORTED",
        "LIBRARY_NOT_FOUND",
        "DRIVER_NOT_LOADED",
        "UNKNOWN",
        "GPU_IS_LOST",
        "NO_PERMISSION",
        "FUNCTION_NOT_FOUND",
    ):
        code = getattr(pynvml, f"NVML_ERROR_{name}")
        assert getattr(fake_pynvml, f"NVML_ERROR_{name}") == code
        assert type(fake_pynvml.NVMLError(code)).__name__ == type(pynvml.NVMLError(code)).__name__


# -- unavailable ---------------------------------------------------------------------------


def test_driver_missing_is_unavailable() -> None:
    fake = RecordedNvml(init_error=fake_pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    sensor = NvmlSensor(nvml=fake, clock=fake.clock)
    with pytest.raises(SensorUnavailable) as info:
        sensor.open()
    assert "driver" in info.value.reason and "libnvidia-ml.so" in info.value.reason
    assert info.value.fix
    assert sensor.kinds() == frozenset()


def test_driver_not_loaded_is_unavailable() -> None:
    fake = RecordedNvml(init_error=fake_pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    with pytest.raises(SensorUnavailable, match="driver not loaded"):
        NvmlSensor(nvml=fake).open()


def test_no_gpu_is_unavailable() -> None:
    fake = RecordedNvml(device_count=0)
    with pytest.raises(SensorUnavailable, match="no NVIDIA GPU found"):
        NvmlSensor(nvml=fake, clock=fake.clock).open()
    assert not fake.initialized and fake.shutdowns == 1


def test_missing_pynvml_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    with pytest.raises(SensorUnavailable, match="nvidia-ml-py not installed") as info:
        NvmlSensor().open()
    assert "pip install nvidia-ml-py" in info.value.fix


def test_real_pynvml_on_this_host() -> None:
    """Without a driver the real module says so; with a GPU the sensor reads it."""
    pytest.importorskip("pynvml")
    sensor = NvmlSensor()
    try:
        sensor.open()
    except SensorUnavailable as exc:
        assert "driver" in exc.reason.lower() or "gpu" in exc.reason.lower()
        return
    try:
        assert sensor.kinds() == frozenset({"gpu"})
        sensor.read(CTX)
        readings = sensor.read(CTX)
        assert {r.component for r in readings} <= {d.component for d in sensor.devices}
        assert all(r.joules >= 0 for r in readings)
    finally:
        sensor.close()


def test_read_before_open_is_a_bug() -> None:
    with pytest.raises(RuntimeError):
        NvmlSensor(nvml=RecordedNvml()).read(CTX)


def test_eight_gpus_are_read_in_parallel_with_the_readings_of_a_serial_read() -> None:
    """With each call as slow as recorded on an H200 (energy 3.5 ms, utilisation 2.2 ms)."""
    fakes = [RecordedNvml(device_count=8, latency=True) for _ in range(2)]
    sensors = [
        NvmlSensor(nvml=f, clock=f.clock, parallel=parallel)
        for f, parallel in zip(fakes, (True, False), strict=True)
    ]
    walls: list[list[float]] = [[], []]
    readings: list[list[list[ComponentReading]]] = [[], []]
    try:
        for sensor in sensors:
            sensor.open()
        for _ in range(8):
            for i, (f, sensor) in enumerate(zip(fakes, sensors, strict=True)):
                f.advance()
                t = time.perf_counter()
                readings[i].append(sensor.read(CTX))
                walls[i].append(time.perf_counter() - t)
    finally:
        for sensor in sensors:
            sensor.close()
    assert readings[0] == readings[1]
    assert [len(r) for r in readings[0]] == [8] * 8
    serial, parallel = statistics.median(walls[1]), statistics.median(walls[0])
    assert serial > 8 * 0.0055  # the recorded latencies, one GPU after the other
    assert parallel < serial / 2
