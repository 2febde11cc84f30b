"""NVIDIA GPU energy and per-process GPU activity from NVML (the nvidia-ml-py ``pynvml``).

One component per GPU, ``gpu{i}`` (kind ``gpu``, ``source="nvml"``) by NVML index. Per
GPU and per read the sensor makes exactly three NVML calls (each costs 0.1-3.5 ms on an
H200):

1. **Energy.** ``nvmlDeviceGetTotalEnergyConsumption`` (cumulative mJ, Volta and newer)
   when ``open`` finds it supported; the interval's joules are the counter delta / 1000.
   The counter advances in steps (an H200 at a steady 692 W alternates ~333/~357 J per
   0.5 s), so power is only ever derived from deltas over whole intervals. Where the
   counter is not supported, ``nvmlDeviceGetPowerUsage`` (mW) is sampled once per read
   and integrated with the trapezoid rule over the elapsed clock time.
2. **Per-process SM activity.** ``nvmlDeviceGetProcessUtilization(handle, last_seen)``
   returns the driver's utilisation samples newer than ``last_seen`` (µs; the newest
   timestamp seen so far). When several processes share the GPU the samples are sparse
   and time-sliced: most calls return one process at ~99 %, some return two at 50/50
   or 66/33. ``GpuUsage.sm_weight[pid]`` is therefore the *sum* of the ``smUtil`` of
   every sample in the interval, never one sample. The call raises ``NotFound`` when no
   process ran since ``last_seen``: that means "no samples", not an error.
3. **Running processes.** ``nvmlDeviceGetComputeRunningProcesses`` gives each compute
   process's GPU memory (``GpuUsage.memory_bytes``, an unknown amount counted as 0): the
   fallback split when no SM sample arrived, and whether anything ran at all.

**Several GPUs are read in parallel**, one thread per GPU (NVML is thread-safe and its
calls release the GIL): the energy counter (3.5 ms) and utilisation (2.2 ms) calls
measured on an H200 make ~5.8 ms per GPU, so 8 GPUs read one after the other would take
~47 ms of every cycle and in parallel take about one GPU's time. One GPU is read inline.

**Static floor (idle baseline).** Configured per GPU (``[sensors] static_watts``, e.g.
``gpu0 = 70``) or for all GPUs (``[sensors.nvml] idle_watts``), else learned by an
``agent.static_power.StaticPowerLearner`` from the GPU's mean power (interval joules /
interval seconds) against its activity: 0 for an interval with no running process and
no SM sample (a direct observation of idle power: the floor is the lowest of those),
else Σ smUtil ÷ (100 × sample instants) of the interval, so that a GPU that never idles
learns its floor by regression; 0 W until learned (``static_source = "fallback"``,
logged once). ``static_joules = GpuUsage.idle_joules = min(joules, floor × elapsed)``,
with ``elapsed`` measured on the sensor's own clock between two reads of that GPU.

**Energy after the last process exits.** Power decays over ~2 s after the last process
exits (215 → 130 → 107 W on an H200) while no process runs any more. The sensor does not
decide who pays for that tail: it reports the energy with ``idle_joules`` at the idle
baseline, empty ``sm_weight`` and empty ``memory_bytes``, so attribution, which owns that
decision, counts the energy above idle as unattributed.

**Errors.** An ``NVMLError`` from one GPU during ``read`` (other than ``NotFound`` from
the utilisation call) drops that GPU's reading for the interval with one warning per GPU
and problem; the other GPUs are still read, and ``read`` never raises for it (all GPUs
failing gives ``[]``). As in the RAPL sensor, a gap is never lumped into one interval: a
failed energy read makes the next read of that GPU re-prime it (reporting nothing), and a
counter that goes backwards (driver reload, GPU reset) or implies more than
``MAX_PLAUSIBLE_WATTS`` drops the interval and becomes the new baseline. (Utilisation
samples a failed call could not fetch stay in the driver's buffer and are counted in the
next interval's weights; only weights, never joules, can span the gap.) A GPU whose
driver does not support per-process utilisation or the process list (e.g. MIG or vGPU)
keeps reporting energy without those weights, after one warning.
"""

from __future__ import annotations

import importlib
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.config_check import ConfigError
from agent.records import ComponentKind, ComponentReading, GpuUsage
from agent.sensors import learner
from agent.sensors.base import IntervalContext, SensorUnavailable
from agent.sensors.registry import SENSORS
from agent.static_power import StaticPowerLearner

if TYPE_CHECKING:
    from agent.config import Config, SensorsConfig
    from agent.sensors import SensorSet

log = logging.getLogger("sci_agent.sensors.nvml")

#: A counter delta implying more than this average power is a reset, not energy.
MAX_PLAUSIBLE_WATTS = 10_000.0

# NVML return codes (pynvml's ``NVML_ERROR_*``); read from the module when it has them.
_NVML_SUCCESS = 0
_ERROR_CODES: dict[str, int] = {
    "NVML_ERROR_NOT_SUPPORTED": 3,
    "NVML_ERROR_NO_PERMISSION": 4,
    "NVML_ERROR_NOT_FOUND": 6,
    "NVML_ERROR_DRIVER_NOT_LOADED": 9,
    "NVML_ERROR_LIBRARY_NOT_FOUND": 12,
    "NVML_ERROR_FUNCTION_NOT_FOUND": 13,
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH": 18,
}

_DISABLE_HINT = "or set [sensors.nvml] enabled = false on hosts without NVIDIA GPUs"
_DRIVER_FIX = (
    "install the NVIDIA driver so that nvidia-smi works; in a container, run it with the "
    "NVIDIA container toolkit (docker run --gpus all) so libnvidia-ml.so.1 is mounted; "
    + _DISABLE_HINT
)


@dataclass(frozen=True, slots=True)
class NvmlDevice:
    """A GPU the sensor measures, for ``doctor`` and the start-up log."""

    index: int
    component: str  # gpu{index}
    uuid: str
    name: str
    energy_counter: bool  # False: power samples are integrated instead


@dataclass(slots=True)
class _Gpu:
    """One GPU's handle and the state carried from one read to the next."""

    device: NvmlDevice
    handle: Any
    previous: int | None = None  # energy counter (mJ) or power sample (mW); None: re-prime
    previous_t: float | None = None  # sensor clock at ``previous``
    last_seen_us: int = 0  # newest utilisation sample timestamp seen
    utilization: bool = True  # nvmlDeviceGetProcessUtilization supported
    processes: bool = True  # nvmlDeviceGetComputeRunningProcesses supported
    sample_instants: int = 0  # distinct utilisation timestamps in the last interval
    idle_note_logged: bool = False
    warned: set[str] = field(default_factory=set)


class NvmlSensor:
    """Joules and per-process SM/memory weights per NVIDIA GPU (see the module docstring)."""

    name = "nvml"

    def __init__(
        self,
        idle_watts: float | None = None,
        nvml: Any | None = None,
        clock: Callable[[], float] = time.monotonic,
        static: StaticPowerLearner | None = None,
        parallel: bool = True,
    ) -> None:
        self._idle_watts = idle_watts
        self._parallel = parallel
        self._pool: ThreadPoolExecutor | None = None  # one thread per GPU, when several
        self._static_lock = threading.Lock()  # the learner (and its saving) is shared
        self.static = static or StaticPowerLearner("nvml")
        self._injected: Any | None = nvml
        self._nvml: Any | None = None  # the module in use while open
        self._clock = clock
        self._gpus: list[_Gpu] = []

    # -- Sensor protocol -------------------------------------------------------------------

    def open(self) -> None:
        """Initialise NVML, find the GPUs and prime their counters.

        Raises ``SensorUnavailable`` when nvidia-ml-py or the driver is missing, or no
        GPU can be read.
        """
        self.close()
        nvml = self._injected if self._injected is not None else _import_pynvml()
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            raise _init_unavailable(nvml, exc) from None
        try:
            self._gpus = self._open_gpus(nvml)
        except BaseException:
            _shutdown(nvml)
            raise
        self._nvml = nvml
        if self._parallel and len(self._gpus) > 1:
            self._pool = ThreadPoolExecutor(len(self._gpus), thread_name_prefix="nvml")

    def kinds(self) -> frozenset[ComponentKind]:
        """``{"gpu"}`` once ``open`` found a GPU, else empty."""
        return frozenset({"gpu"}) if self._gpus else frozenset()

    def read(self, ctx: IntervalContext) -> list[ComponentReading]:
        """Joules and activity per GPU since the previous read; failing GPUs are skipped.

        ``ctx`` is not needed: the elapsed time is measured on the sensor's own clock.
        """
        del ctx
        nvml = self._nvml
        if nvml is None:
            raise RuntimeError("NvmlSensor.read() called before a successful open()")
        pool = self._pool
        if pool is None:
            found = [self._read_gpu(nvml, gpu) for gpu in self._gpus]
        else:  # each GPU's state is touched by its own task only
            found = list(pool.map(lambda gpu: self._read_gpu(nvml, gpu), self._gpus))
        return [reading for reading in found if reading is not None]

    def close(self) -> None:
        """Shut NVML down (errors ignored); ``open`` may be called again."""
        nvml, self._nvml = self._nvml, None
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self._gpus = []
        self.static.save()
        if nvml is not None:
            _shutdown(nvml)

    # -- for doctor and tests --------------------------------------------------------------

    @property
    def devices(self) -> list[NvmlDevice]:
        """The GPUs measured (empty before ``open``)."""
        return [gpu.device for gpu in self._gpus]

    def idle_baseline_w(self, component: str) -> float | None:
        """The idle power used for ``component`` (configured or learned), None if unknown."""
        for gpu in self._gpus:
            if gpu.device.component == component:
                floor = self.static.floor(component, self._idle_watts)
                return None if floor.source == "fallback" else floor.watts
        raise KeyError(component)

    # -- opening ---------------------------------------------------------------------------

    def _open_gpus(self, nvml: Any) -> list[_Gpu]:
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except nvml.NVMLError as exc:
            raise SensorUnavailable(
                f"NVML cannot count the GPUs: {exc}", "check the driver with nvidia-smi"
            ) from None
        if count <= 0:
            raise SensorUnavailable(
                "no NVIDIA GPU found",
                "check that nvidia-smi lists a GPU (in a container: --gpus all); " + _DISABLE_HINT,
            )
        gpus: list[_Gpu] = []
        problems: list[str] = []
        for index in range(count):
            try:
                gpus.append(self._open_gpu(nvml, index))
            except nvml.NVMLError as exc:
                log.warning("gpu%d cannot be read through NVML (%s); not measuring it", index, exc)
                problems.append(f"gpu{index}: {exc}")
        if not gpus:
            raise SensorUnavailable(
                f"no NVIDIA GPU can be read ({'; '.join(problems)})",
                "check the GPUs with nvidia-smi -q",
            )
        return gpus

    def _open_gpu(self, nvml: Any, index: int) -> _Gpu:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        uuid = _text(nvml.nvmlDeviceGetUUID(handle))
        name = _text(nvml.nvmlDeviceGetName(handle))
        component = f"gpu{index}"
        counter = True
        try:
            previous = int(nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        except nvml.NVMLError as exc:
            if not _is(
                nvml,
                exc,
                "NVML_ERROR_NOT_SUPPORTED",
                "NVML_ERROR_FUNCTION_NOT_FOUND",
                "NVML_ERROR_NO_PERMISSION",
            ):
                raise
            counter = False
            previous = int(nvml.nvmlDeviceGetPowerUsage(handle))
            log.info(
                "%s (%s): no total-energy counter (%s); integrating power samples instead, "
                "less exact between reads",
                component,
                name,
                exc,
            )
        gpu = _Gpu(NvmlDevice(index, component, uuid, name, counter), handle)
        gpu.previous, gpu.previous_t = previous, self._clock()
        self._utilization(nvml, gpu)  # skip the samples recorded before open
        return gpu

    # -- reading ---------------------------------------------------------------------------

    def _read_gpu(self, nvml: Any, gpu: _Gpu) -> ComponentReading | None:
        handle = gpu.handle
        call = ""
        try:
            if gpu.device.energy_counter:
                call = "nvmlDeviceGetTotalEnergyConsumption"
                value = int(nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
            else:
                call = "nvmlDeviceGetPowerUsage"
                value = int(nvml.nvmlDeviceGetPowerUsage(handle))
        except nvml.NVMLError as exc:
            gpu.previous = gpu.previous_t = None  # re-prime on recovery, never lump the gap
            self._warn_once(gpu, f"{call}:{_code(exc)}", "%s failed (%s)", call, exc)
            return None
        now = self._clock()
        previous, previous_t = gpu.previous, gpu.previous_t
        gpu.previous, gpu.previous_t = value, now
        try:
            call = "nvmlDeviceGetProcessUtilization"
            sm_weight = self._utilization(nvml, gpu)  # consumed even if the interval drops
            if previous is None or previous_t is None:
                log.debug("%s re-primed after an NVML error", gpu.device.component)
                return None
            elapsed = now - previous_t
            joules = self._joules(gpu, previous, value, elapsed)
            if joules is None:
                return None
            call = "nvmlDeviceGetComputeRunningProcesses"
            memory = self._running(nvml, gpu)
        except nvml.NVMLError as exc:
            self._warn_once(gpu, f"{call}:{_code(exc)}", "%s failed (%s)", call, exc)
            return None
        with self._static_lock:
            static, source = self._static(gpu, joules, elapsed, sm_weight, memory)
        return ComponentReading(
            component=gpu.device.component,
            kind="gpu",
            source="nvml",
            joules=joules,
            gpu=GpuUsage(idle_joules=static, sm_weight=sm_weight, memory_bytes=memory),
            static_joules=static,
            static_source=source,
        )

    def _static(
        self,
        gpu: _Gpu,
        joules: float,
        elapsed: float,
        sm_weight: dict[int, float],
        memory: dict[int, int],
    ) -> tuple[float, str]:
        """Teach the learner this interval; the static joules and their source."""
        component = gpu.device.component
        activity = self._activity(gpu, sm_weight, memory)
        if activity is not None and elapsed > 0:
            self.static.observe(component, activity, joules / elapsed)
        static, source = self.static.static_joules(component, joules, elapsed, self._idle_watts)
        if source == "fallback" and not gpu.idle_note_logged:
            gpu.idle_note_logged = True
            log.info(
                "%s: GPU idle power not learned yet (no idle interval and too narrow a spread "
                "of load seen), counting 0 W as idle until then; [sensors.nvml] idle_watts or "
                "[sensors] static_watts sets it",
                component,
            )
        return static, source

    @staticmethod
    def _activity(gpu: _Gpu, sm_weight: dict[int, float], memory: dict[int, int]) -> float | None:
        """The GPU's busy share 0..1 this interval, or None when it cannot be told."""
        if not sm_weight and not memory and gpu.processes:
            return 0.0
        if sm_weight and gpu.sample_instants > 0:
            return min(1.0, sum(sm_weight.values()) / (100.0 * gpu.sample_instants))
        return None

    def _joules(self, gpu: _Gpu, previous: int, value: int, elapsed: float) -> float | None:
        """The interval's joules, or None (warned) when the counter cannot be trusted."""
        if not gpu.device.energy_counter:  # trapezoid over two power samples (mW)
            return max(0.0, (previous + value) / 2000.0 * elapsed)
        delta = value - previous
        if delta < 0:
            self._warn_once(
                gpu,
                "backwards",
                "energy counter went backwards (%s), driver reload or GPU reset? rebaselining",
                f"{previous} → {value} mJ",
            )
            return None
        if elapsed > 0 and delta / 1000.0 / elapsed > MAX_PLAUSIBLE_WATTS:
            self._warn_once(
                gpu,
                "implausible",
                "energy counter jumped (%s), counter reset? rebaselining",
                f"{previous} → {value} mJ in {elapsed:.3f} s",
            )
            return None
        return delta / 1000.0

    def _utilization(self, nvml: Any, gpu: _Gpu) -> dict[int, float]:
        """Σ smUtil per pid over the samples newer than ``last_seen``; advances it."""
        if not gpu.utilization:
            return {}
        try:
            samples = nvml.nvmlDeviceGetProcessUtilization(gpu.handle, gpu.last_seen_us)
        except nvml.NVMLError as exc:
            if _code(exc) in (_NVML_SUCCESS, _error(nvml, "NVML_ERROR_NOT_FOUND")):
                return {}  # no process ran since last_seen
            if _is(nvml, exc, "NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_FUNCTION_NOT_FOUND"):
                gpu.utilization = False
                log.warning(
                    "%s: per-process utilisation not supported (%s); splitting its energy by "
                    "GPU memory instead",
                    gpu.device.component,
                    exc,
                )
                return {}
            raise
        weights: dict[int, float] = {}
        newest = gpu.last_seen_us
        instants: set[int] = set()
        for sample in samples:
            stamp = int(sample.timeStamp)
            if stamp <= gpu.last_seen_us:
                continue  # already counted (defensive: NVML should not return it)
            newest = max(newest, stamp)
            instants.add(stamp)
            sm = float(sample.smUtil)
            if sm > 0:
                pid = int(sample.pid)
                weights[pid] = weights.get(pid, 0.0) + sm
        gpu.last_seen_us = newest
        gpu.sample_instants = len(instants)
        return weights

    def _running(self, nvml: Any, gpu: _Gpu) -> dict[int, int]:
        """GPU memory (bytes) per running compute process."""
        if not gpu.processes:
            return {}
        try:
            processes = nvml.nvmlDeviceGetComputeRunningProcesses(gpu.handle)
        except nvml.NVMLError as exc:
            if not _is(nvml, exc, "NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_FUNCTION_NOT_FOUND"):
                raise
            gpu.processes = False
            log.warning(
                "%s: the running-process list is not supported (%s); no memory split and no "
                "learned idle power for it",
                gpu.device.component,
                exc,
            )
            return {}
        memory: dict[int, int] = {}
        for process in processes:
            used = process.usedGpuMemory
            pid = int(process.pid)
            memory[pid] = memory.get(pid, 0) + (int(used) if used is not None else 0)
        return memory

    @staticmethod
    def _warn_once(gpu: _Gpu, problem: str, message: str, *args: object) -> None:
        device = gpu.device
        if problem in gpu.warned:
            log.debug("%s: " + message + "; dropping its reading", device.component, *args)
            return
        gpu.warned.add(problem)
        log.warning(
            "%s (%s): " + message + "; dropping its reading for the interval (warned once "
            "per GPU and problem)",
            device.component,
            device.name,
            *args,
        )


# -- helpers -------------------------------------------------------------------------------


def _import_pynvml() -> Any:
    try:
        return importlib.import_module("pynvml")
    except ImportError as exc:
        raise SensorUnavailable(
            f"nvidia-ml-py not installed (cannot import pynvml: {exc})",
            "pip install nvidia-ml-py (a dependency of sci-agent); " + _DISABLE_HINT,
        ) from None


def _init_unavailable(nvml: Any, exc: BaseException) -> SensorUnavailable:
    if _is(nvml, exc, "NVML_ERROR_LIBRARY_NOT_FOUND"):
        return SensorUnavailable("NVIDIA driver not found (libnvidia-ml.so)", _DRIVER_FIX)
    if _is(nvml, exc, "NVML_ERROR_DRIVER_NOT_LOADED"):
        return SensorUnavailable(
            "NVIDIA driver not loaded (NVML: Driver Not Loaded)",
            "load the kernel module (modprobe nvidia) or reinstall the driver, then check "
            "nvidia-smi; " + _DISABLE_HINT,
        )
    if _is(nvml, exc, "NVML_ERROR_LIB_RM_VERSION_MISMATCH"):
        return SensorUnavailable(
            "NVIDIA driver library and kernel module versions differ",
            "reboot (or reload the nvidia kernel modules) after a driver update",
        )
    if _is(nvml, exc, "NVML_ERROR_NO_PERMISSION"):
        return SensorUnavailable(
            "no permission to open the NVIDIA devices (/dev/nvidia*)",
            "run the agent as root or as a member of the group owning /dev/nvidia*",
        )
    return SensorUnavailable(f"NVML initialisation failed: {exc}", _DRIVER_FIX)


def _shutdown(nvml: Any) -> None:
    try:
        nvml.nvmlShutdown()
    except Exception as exc:  # shutting down must never fail a close
        log.debug("nvmlShutdown failed: %s", exc)


def _code(exc: BaseException) -> int | None:
    value = getattr(exc, "value", None)
    return value if isinstance(value, int) else None


def _error(nvml: Any, name: str) -> int:
    value = getattr(nvml, name, _ERROR_CODES[name])
    return value if isinstance(value, int) else _ERROR_CODES[name]


def _is(nvml: Any, exc: BaseException, *names: str) -> bool:
    code = _code(exc)
    return code is not None and any(code == _error(nvml, name) for name in names)


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


# -- registration: the [sensors.nvml] section, its check and the factory -----------------------


@dataclass(frozen=True)
class NvmlConfig:
    enabled: bool = True
    idle_watts: float | None = None  # learned from idle intervals when unset


def _validate_nvml(sensors: SensorsConfig) -> None:
    idle = sensors.nvml.idle_watts
    if idle is not None and not (math.isfinite(idle) and idle >= 0):
        raise ConfigError("sensors.nvml.idle_watts: must be a finite number, 0 or more")


def _open_nvml(found: SensorSet, config: Config) -> None:
    """Open NVML unless disabled (pynvml is imported only here); no GPU is logged at INFO."""
    cfg: NvmlConfig = config.sensors.nvml
    if not cfg.enabled:
        found.disabled("nvml")
        return
    nvml = NvmlSensor(idle_watts=cfg.idle_watts, static=learner(config, "nvml"))
    if found.try_open(nvml, quiet=True):
        found.details["nvml"] = ", ".join(f"gpu{d.index} {d.name} {d.uuid}" for d in nvml.devices)


SENSORS.register("nvml", _open_nvml, section=NvmlConfig, validate=_validate_nvml, order=20)
