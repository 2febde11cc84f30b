"""Power-model sensor for hosts with no energy counters (most VMs and clouds).

Every reading is labelled ``source="model"`` and carries ``model``: the model's name,
its coefficients and where they came from. CPU power comes from utilisation:

- the Teads TDP curve when ``tdp_w`` is configured, or when the CPU model is found
  in the shipped TDP table *and* the host is not a virtual machine (a VM's vCPUs
  are a slice of a chip whose TDP covers all of it, so a looked-up TDP would
  overstate it many times);
- otherwise Cloud Carbon Footprint's per-vCPU minimum/maximum watts: the pair set in
  ``[sensors.model]`` if any, else CCF's row for the CPU's microarchitecture (from
  ``/proc/cpuinfo``, see ``agent.sensors.ccf``), else CCF's average.

Memory power is a per-GB model over the installed memory. Each reading's
``static_joules`` is the model's zero-load power over the interval (Teads: 12 % of
TDP; CCF: vCPUs × minimum watts; memory: all of it), ``static_source="model"``.
The model covers only the kinds that no counter measures (``covers``), so RAPL's
DRAM zone wins over it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config_check import ConfigError, positive
from agent.records import ComponentKind, ComponentReading
from agent.sensors.base import IntervalContext, SensorUnavailable
from agent.sensors.ccf import Processor, ccf_row
from agent.sensors.registry import SENSORS
from agent.sensors.tdp import lookup_tdp_row
from sci.power import (
    CCF_MAX_W_PER_VCPU,
    CCF_MEMORY_W_PER_GB,
    CCF_MIN_W_PER_VCPU,
    ccf_static_watts,
    ccf_watts,
    memory_watts,
    teads_static_watts,
    teads_watts,
)

if TYPE_CHECKING:
    from agent.config import Config, SensorsConfig
    from agent.sensors import SensorSet

log = logging.getLogger("sci_agent.sensors")

GB = 1_000_000_000


def _int(value: str) -> int | None:
    try:
        return int(value.strip(), 0)
    except ValueError:
        return None


class CpuInfo:
    """The facts the model needs from ``/proc/cpuinfo``."""

    def __init__(
        self,
        model: str,
        sockets: int,
        virtualised: bool,
        processor: Processor | None = None,
    ) -> None:
        self.model = model
        self.sockets = sockets
        self.virtualised = virtualised
        self.processor = processor or Processor(model_name=model)

    @classmethod
    def parse(cls, text: str) -> CpuInfo:
        """Read the first CPU's identity, the socket count and the hypervisor flag."""
        first: dict[str, str] = {}
        sockets: set[str] = set()
        virtualised = False
        for line in text.splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "physical id":
                sockets.add(value)
            elif key == "flags" and "hypervisor" in value.split():
                virtualised = True
            first.setdefault(key, value)
        processor = Processor(
            model_name=first.get("model name", ""),
            vendor=first.get("vendor_id", ""),
            family=_int(first.get("cpu family", "")),
            model=_int(first.get("model", "")),
            stepping=_int(first.get("stepping", "")),
            arm_implementer=first.get("CPU implementer", ""),
            arm_part=first.get("CPU part", ""),
        )
        return cls(processor.model_name, max(1, len(sockets)), virtualised, processor)

    @classmethod
    def read(cls, proc_root: str | Path = "/proc") -> CpuInfo:
        try:
            text = Path(proc_root, "cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return cls("", 1, False)
        return cls.parse(text)


class ModelSensor:
    """Estimates CPU and memory energy from utilisation with published coefficients."""

    name = "model"

    def __init__(
        self,
        config: ModelConfig,
        covers: Iterable[ComponentKind] = ("cpu", "dram"),
        cpuinfo: CpuInfo | None = None,
    ) -> None:
        self._config = config
        self._covers = frozenset(covers) & {"cpu", "dram"}
        self._cpuinfo = cpuinfo
        self.tdp_w: float | None = None
        self.method = ""  # the CPU model's name and coefficients, without the vCPU count
        self.min_w_per_vcpu = CCF_MIN_W_PER_VCPU
        self.max_w_per_vcpu = CCF_MAX_W_PER_VCPU
        self._ccf = ("average", "Cloud Carbon Footprint AWS average")

    def open(self) -> None:
        if not self._config.enabled:
            raise SensorUnavailable(
                "the power model is disabled", "set [sensors.model] enabled = true"
            )
        info = self._cpuinfo or CpuInfo.read()
        cpu_model = self._config.cpu_model or info.model
        if self._config.tdp_w is not None:
            self.tdp_w = self._config.tdp_w
            self.method = (
                f"Teads curve, TDP {self.tdp_w:g} W (configured: [sensors.model] tdp_w)"
            )
            return
        found = lookup_tdp_row(cpu_model) if cpu_model else None
        if found is not None and not info.virtualised:
            row, tdp = found
            self.tdp_w = tdp * info.sockets
            self.method = (
                f"Teads curve, TDP {tdp:g} W × {info.sockets} socket(s)"
                f" (cpu-tdp.csv row {row!r})"
            )
            return
        self._choose_ccf(info, cpu_model, vm=found is not None)

    def _choose_ccf(self, info: CpuInfo, cpu_model: str, vm: bool) -> None:
        cfg = self._config
        if cfg.min_w_per_vcpu is not None and cfg.max_w_per_vcpu is not None:
            self.min_w_per_vcpu, self.max_w_per_vcpu = cfg.min_w_per_vcpu, cfg.max_w_per_vcpu
            self._set_ccf("configured", "[sensors.model] min_w_per_vcpu, max_w_per_vcpu")
            return
        processor = info.processor
        if cpu_model != processor.model_name:  # [sensors.model] cpu_model names another CPU
            processor = Processor(model_name=cpu_model)
        row, how = ccf_row(processor)
        why_not_tdp = "; a VM: no TDP curve" if vm else ""
        if row is None:
            self._set_ccf("average", f"Cloud Carbon Footprint AWS average; {how}{why_not_tdp}")
            return
        self.min_w_per_vcpu, self.max_w_per_vcpu = row.min_w_per_vcpu, row.max_w_per_vcpu
        source = f"Cloud Carbon Footprint coefficients; row chosen by {how}{why_not_tdp}"
        self._set_ccf(row.microarchitecture, source)

    def _set_ccf(self, label: str, source: str) -> None:
        self._ccf = (label, source)
        self.method = self._ccf_name("")

    def _ccf_name(self, times: str) -> str:
        label, source = self._ccf
        lo, hi = self.min_w_per_vcpu, self.max_w_per_vcpu
        return f"CCF per-vCPU, {label}: {lo:g}–{hi:g} W{times} ({source})"

    def kinds(self) -> frozenset[ComponentKind]:
        return self._covers

    def read(self, ctx: IntervalContext) -> list[ComponentReading]:
        readings: list[ComponentReading] = []
        seconds = ctx.interval_s
        if "cpu" in self._covers:
            util = min(100.0, max(0.0, ctx.cpu.busy_fraction * 100.0))
            watts, static, name = self._cpu(ctx.cpu.cpu_count, util)
            readings.append(
                ComponentReading(
                    "cpu", "cpu", "model", watts * seconds, None, static * seconds, "model", name
                )
            )
        if "dram" in self._covers:
            gigabytes = ctx.memory_total_bytes / GB
            w_per_gb = self._config.memory_w_per_gb
            joules = memory_watts(gigabytes, w_per_gb) * seconds
            name = f"CCF memory {w_per_gb:g} W/GB × {gigabytes:.1f} GB" + (
                "" if w_per_gb == CCF_MEMORY_W_PER_GB else " (configured: memory_w_per_gb)"
            )
            readings.append(
                ComponentReading("dram", "dram", "model", joules, None, joules, "model", name)
            )
        return readings

    def _cpu(self, vcpus: int, util: float) -> tuple[float, float, str]:
        """(watts, zero-load watts, the model named) for ``vcpus`` at ``util`` %."""
        if self.tdp_w is not None:
            return teads_watts(self.tdp_w, util), teads_static_watts(self.tdp_w), self.method
        lo, hi = self.min_w_per_vcpu, self.max_w_per_vcpu
        name = self._ccf_name(f" × {vcpus} vCPUs")
        return ccf_watts(vcpus, util, lo, hi), ccf_static_watts(vcpus, lo), name

    def close(self) -> None:
        """Nothing to release."""


# -- registration: the [sensors.model] section, its checks and the factory ---------------------


@dataclass(frozen=True)
class ModelConfig:
    """Published power-model coefficients for hosts with no energy counters."""

    enabled: bool = True
    tdp_w: float | None = None  # else looked up from the CPU model name
    cpu_model: str | None = None  # else read from /proc/cpuinfo
    # A pair; unset: CCF's row for this CPU's microarchitecture, else CCF's average
    min_w_per_vcpu: float | None = None
    max_w_per_vcpu: float | None = None
    memory_w_per_gb: float = 0.392


def _validate_model(sensors: SensorsConfig) -> None:
    model: ModelConfig = sensors.model
    for key in ("min_w_per_vcpu", "max_w_per_vcpu", "memory_w_per_gb"):
        value = getattr(model, key)
        if value is not None and value < 0:
            raise ConfigError(f"sensors.model.{key}: must be 0 or more")
    if (model.min_w_per_vcpu is None) != (model.max_w_per_vcpu is None):
        missing = "max_w_per_vcpu" if model.max_w_per_vcpu is None else "min_w_per_vcpu"
        raise ConfigError(
            f"sensors.model.{missing}: set min_w_per_vcpu and max_w_per_vcpu together"
        )
    if model.max_w_per_vcpu is not None and model.max_w_per_vcpu < (model.min_w_per_vcpu or 0):
        raise ConfigError("sensors.model.max_w_per_vcpu: must be ≥ min_w_per_vcpu")
    if model.tdp_w is not None:
        positive("sensors.model.tdp_w", model.tdp_w)


def _open_model(found: SensorSet, config: Config) -> None:
    """The model, for the CPU and DRAM no counter opened before it covers (if any)."""
    covered = found.covered()
    missing: list[ComponentKind] = [
        k for k in ("cpu", "dram") if k not in covered and not _covered_by_psys(k, covered)
    ]
    if not missing:
        return
    model = ModelSensor(config.sensors.model, covers=missing)
    if found.try_open(model):
        found.details["model"] = f"{model.method}; covers {', '.join(missing)}"
        if "cpu" in missing:
            log.info("measuring CPU with the power model: %s", model.method)


def _covered_by_psys(kind: str, covered: set[ComponentKind]) -> bool:
    """psys (whole platform) includes DRAM when RAPL has no separate DRAM zone."""
    return kind == "dram" and "psys" in covered


SENSORS.register("model", _open_model, section=ModelConfig, validate=_validate_model, order=90)
