"""A recorded-answers fake of the parts of ``pynvml`` (nvidia-ml-py) the NVML sensor uses.

``RecordedNvml(path)`` replays ``tests/fixtures/nvml/nvml-two-process-trace.json``, a
recording of a real H200 sampled every 0.5 s. A cursor points at one recorded moment; the
device functions answer what NVML answered then, and ``advance()`` steps to the next one.
``clock()`` returns the moment's ``t`` (seconds), to inject as the sensor's clock.

Recorded per moment: ``energy_mj`` (total-energy counter), ``power_mw``, ``running``
(``[[pid, used_bytes], ...]``) and ``proc_util`` (``[[pid, sm, mem, timestamp_us], ...]``,
the samples since the recorder's previous call, or the string ``"ERR ..."`` for NotFound).
``nvmlDeviceGetProcessUtilization(handle, ts)`` answers like the driver's sample buffer:
every recorded sample up to the cursor newer than ``ts``, or ``NVMLError_NotFound``.

Errors mirror pynvml exactly: ``NVMLError(value)`` returns an instance of the subclass
for that value (``NVMLError_NotFound`` for 6, ...), each subclass can be raised with no
argument, and every instance has ``.value``.

Simulations: ``energy_supported=False`` (the counter raises NotSupported, so the sensor
integrates power), ``device_count`` (each device replays the same trace; 0: no GPU),
``init_error`` (``nvmlInit`` raises that code), ``fail(...)`` (an NVMLError on a device at
a moment) and ``reset_counter(...)`` (the energy counter restarts, as after a driver
reload). ``calls`` logs every device-level call as ``(function, device index)``.
"""

from __future__ import annotations

import json
import string
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

# The recording's ``call_ms`` keys, by the function they timed.
_CALL_KEYS = {
    "nvmlDeviceGetTotalEnergyConsumption": "energy",
    "nvmlDeviceGetPowerUsage": "power",
    "nvmlDeviceGetProcessUtilization": "proc_util",
    "nvmlDeviceGetComputeRunningProcesses": "running",
}
TRACE = Path(__file__).resolve().parent.parent / "tests/fixtures/nvml/nvml-two-process-trace.json"

# Return codes, named and numbered as in pynvml (nvidia-ml-py 13.x).
NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_ALREADY_INITIALIZED = 5
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_INSUFFICIENT_POWER = 8
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_IRQ_ISSUE = 11
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_CORRUPTED_INFOROM = 14
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_OPERATING_SYSTEM = 17
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_IN_USE = 19
NVML_ERROR_MEMORY = 20
NVML_ERROR_NO_DATA = 21
NVML_ERROR_UNKNOWN = 999


class NVMLError(Exception):
    """pynvml's error: ``NVMLError(value)`` is an instance of that value's subclass."""

    _valClassMapping: ClassVar[dict[int, type[NVMLError]]] = {}
    _errcode_to_string: ClassVar[dict[int, str]] = {
        NVML_ERROR_UNINITIALIZED: "Uninitialized",
        NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
        NVML_ERROR_NOT_SUPPORTED: "Not Supported",
        NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
        NVML_ERROR_ALREADY_INITIALIZED: "Already Initialized",
        NVML_ERROR_NOT_FOUND: "Not Found",
        NVML_ERROR_INSUFFICIENT_SIZE: "Insufficient Size",
        NVML_ERROR_INSUFFICIENT_POWER: "Insufficient External Power",
        NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
        NVML_ERROR_TIMEOUT: "Timeout",
        NVML_ERROR_IRQ_ISSUE: "Interrupt Request Issue",
        NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
        NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
        NVML_ERROR_CORRUPTED_INFOROM: "Corrupted infoROM",
        NVML_ERROR_GPU_IS_LOST: "GPU is lost",
        NVML_ERROR_RESET_REQUIRED: "GPU requires restart",
        NVML_ERROR_OPERATING_SYSTEM: "The operating system has blocked the request.",
        NVML_ERROR_LIB_RM_VERSION_MISMATCH: "RM has detected an NVML/RM version mismatch.",
        NVML_ERROR_MEMORY: "Insufficient Memory",
        NVML_ERROR_UNKNOWN: "Unknown Error",
    }
    value: int

    def __new__(cls, value: int) -> NVMLError:
        if cls is NVMLError:
            cls = NVMLError._valClassMapping.get(value, cls)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __str__(self) -> str:
        return self._errcode_to_string.get(self.value, f"NVML Error with code {self.value}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NVMLError) and self.value == other.value

    __hash__ = Exception.__hash__


def _extract_errors_as_classes() -> None:
    """Make ``NVMLError_NotFound`` etc. like pynvml's ``_extractNVMLErrorsAsClasses``."""
    module = sys.modules[__name__]
    for err_name in [x for x in dir(module) if x.startswith("NVML_ERROR_")]:
        class_name = "NVMLError_" + string.capwords(
            err_name.replace("NVML_ERROR_", ""), "_"
        ).replace("_", "")
        err_val = getattr(module, err_name)

        def gen_new(val: int) -> Any:
            def new(typ: type[NVMLError], *args: object) -> NVMLError:
                return NVMLError.__new__(typ, val)

            return new

        cls = type(class_name, (NVMLError,), {"__new__": gen_new(err_val)})
        cls.__module__ = __name__
        setattr(module, class_name, cls)
        NVMLError._valClassMapping[err_val] = cls


_extract_errors_as_classes()


@dataclass(frozen=True)
class RecordedHandle:
    """Stands in for pynvml's ``c_nvmlDevice_t``."""

    index: int


@dataclass(frozen=True)
class ProcessUtilizationSample:
    """Like ``c_nvmlProcessUtilizationSample_t``."""

    pid: int
    timeStamp: int  # pynvml's field names
    smUtil: int
    memUtil: int
    encUtil: int = 0
    decUtil: int = 0


@dataclass
class ProcessInfo:
    """Like the friendly object ``nvmlDeviceGetComputeRunningProcesses`` returns."""

    pid: int
    usedGpuMemory: int | None
    gpuInstanceId: int = 0xFFFFFFFF
    computeInstanceId: int = 0xFFFFFFFF


class RecordedNvml:
    """A module-like object answering pynvml calls from a recorded trace (see above)."""

    def __init__(
        self,
        path: str | Path = TRACE,
        *,
        device_count: int = 1,
        energy_supported: bool = True,
        init_error: int | None = None,
        latency: bool = False,
    ) -> None:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        # latency: each device call sleeps as long as the recorder measured it taking
        self.call_s = {k: v / 1000 for k, v in data["call_ms"].items()} if latency else {}
        self.info: dict[str, Any] = data["info"]
        self.pids: dict[str, int] = data["pids"]
        self.samples: list[dict[str, Any]] = data["samples"]
        self.cursor = 0
        self.device_count = device_count
        self.energy_supported = energy_supported
        self.init_error = init_error
        self.initialized = False
        self.shutdowns = 0
        self.calls: list[tuple[str, int]] = []
        self._failures: dict[tuple[int, int], tuple[str | None, int]] = {}
        self._resets: dict[int, list[tuple[int, int]]] = {}  # device → [(at, to_mj)]
        # the module's names, so ``nvml.NVMLError`` / ``nvml.NVML_ERROR_NOT_FOUND`` work
        module = sys.modules[__name__]
        for name in dir(module):
            if name.startswith(("NVMLError", "NVML_ERROR_", "NVML_SUCCESS")):
                setattr(self, name, getattr(module, name))

    # -- replay control --------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def sample(self) -> dict[str, Any]:
        return self.samples[self.cursor]

    def advance(self) -> bool:
        """Step to the next recorded moment; False (and no move) at the end."""
        if self.cursor + 1 >= len(self.samples):
            return False
        self.cursor += 1
        return True

    def clock(self) -> float:
        """The current moment's time in seconds, for the sensor's ``clock``."""
        return float(self.sample["t"])

    def fail(
        self,
        device: int = 0,
        at: int | None = None,
        function: str | None = None,
        value: int = NVML_ERROR_UNKNOWN,
    ) -> None:
        """At moment ``at`` (default: now) calls on ``device`` (or only ``function``) raise."""
        self._failures[(device, self.cursor if at is None else at)] = (function, value)

    def reset_counter(self, at: int, device: int = 0, to_mj: int = 0) -> None:
        """From moment ``at`` on, the energy counter restarts at ``to_mj``."""
        self._resets.setdefault(device, []).append((at, to_mj))

    # -- pynvml API ------------------------------------------------------------------------

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialized = True

    def nvmlShutdown(self) -> None:
        self._check_init()
        self.initialized = False
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        self._check_init()
        return self.device_count

    def nvmlDeviceGetHandleByIndex(self, index: int) -> RecordedHandle:
        self._check_init()
        if not 0 <= index < self.device_count:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return RecordedHandle(index)

    def nvmlDeviceGetUUID(self, handle: RecordedHandle) -> str:
        self._device_call("nvmlDeviceGetUUID", handle)
        uuid: str = self.info["uuid"]
        return uuid if handle.index == 0 else f"{uuid[:-2]}{handle.index:02d}"

    def nvmlDeviceGetName(self, handle: RecordedHandle) -> str:
        self._device_call("nvmlDeviceGetName", handle)
        return str(self.info["name"])

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: RecordedHandle) -> int:
        self._device_call("nvmlDeviceGetTotalEnergyConsumption", handle)
        if not self.energy_supported:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        energy = int(self.sample["energy_mj"])
        for at, to_mj in sorted(self._resets.get(handle.index, [])):
            if self.cursor >= at:
                energy = energy - int(self.samples[at]["energy_mj"]) + to_mj
        return energy

    def nvmlDeviceGetPowerUsage(self, handle: RecordedHandle) -> int:
        self._device_call("nvmlDeviceGetPowerUsage", handle)
        return int(self.sample["power_mw"])

    def nvmlDeviceGetProcessUtilization(
        self, handle: RecordedHandle, timeStamp: int
    ) -> list[ProcessUtilizationSample]:
        self._device_call("nvmlDeviceGetProcessUtilization", handle)
        found = [
            ProcessUtilizationSample(pid, ts, sm, mem)
            for moment in self.samples[: self.cursor + 1]
            if not isinstance(moment["proc_util"], str)
            for pid, sm, mem, ts in moment["proc_util"]
            if ts > timeStamp
        ]
        if not found:
            raise NVMLError(NVML_ERROR_NOT_FOUND)
        return found

    def nvmlDeviceGetComputeRunningProcesses(self, handle: RecordedHandle) -> list[ProcessInfo]:
        self._device_call("nvmlDeviceGetComputeRunningProcesses", handle)
        return [ProcessInfo(pid, used) for pid, used in self.sample["running"]]

    # -- internals -------------------------------------------------------------------------

    def _check_init(self) -> None:
        if not self.initialized:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)

    def _device_call(self, function: str, handle: RecordedHandle) -> None:
        self._check_init()
        self.calls.append((function, handle.index))
        delay = self.call_s.get(_CALL_KEYS.get(function, ""), 0.0)
        if delay:
            time.sleep(delay)
        failure = self._failures.get((handle.index, self.cursor))
        if failure is not None and failure[0] in (None, function):
            raise NVMLError(failure[1])
