"""Power-model sensor for hosts with no energy counters (most VMs and clouds).

Every reading is labelled ``source="model"``. CPU power comes from utilisation:

- the Teads TDP curve when ``tdp_w`` is configured, or when the CPU model is found
  in the shipped TDP table *and* the host is not a virtual machine (a VM's vCPUs
  are a slice of a chip whose TDP covers all of it, so a looked-up TDP would
  overstate it many times);
- otherwise Cloud Carbon Footprint's per-vCPU minimum/maximum watts.

Memory power is a per-GB model over the installed memory. The model covers only
the kinds that no counter measures (``covers``), so RAPL's DRAM zone wins over it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from agent.config import ModelConfig
from agent.records import ComponentKind, ComponentReading
from agent.sensors.base import IntervalContext, SensorUnavailable
from agent.sensors.tdp import lookup_tdp
from sci.power import ccf_watts, memory_watts, teads_watts

GB = 1_000_000_000


class CpuInfo:
    """The facts the model needs from ``/proc/cpuinfo``."""

    def __init__(self, model: str, sockets: int, virtualised: bool) -> None:
        self.model = model
        self.sockets = sockets
        self.virtualised = virtualised

    @classmethod
    def read(cls, proc_root: str | Path = "/proc") -> CpuInfo:
        model, sockets, virtualised = "", set(), False
        try:
            text = Path(proc_root, "cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return cls("", 1, False)
        for line in text.splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not model:
                model = value.strip()
            elif key == "physical id":
                sockets.add(value.strip())
            elif key == "flags" and "hypervisor" in value.split():
                virtualised = True
        return cls(model, max(1, len(sockets)), virtualised)


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
        self.method = ""

    def open(self) -> None:
        if not self._config.enabled:
            raise SensorUnavailable(
                "the power model is disabled", "set [sensors.model] enabled = true"
            )
        info = self._cpuinfo or CpuInfo.read()
        cpu_model = self._config.cpu_model or info.model
        if self._config.tdp_w is not None:
            self.tdp_w = self._config.tdp_w
            self.method = f"Teads curve, configured TDP {self.tdp_w:g} W"
        else:
            found = lookup_tdp(cpu_model) if cpu_model else None
            if found is not None and not info.virtualised:
                self.tdp_w = found * info.sockets
                self.method = (
                    f"Teads curve, TDP {found:g} W × {info.sockets} socket(s) of {cpu_model!r}"
                )
            else:
                why = (
                    "a virtual machine" if found is not None else f"{cpu_model!r} not in the table"
                )
                self.method = (
                    f"CCF per-vCPU {self._config.min_w_per_vcpu:g}–"
                    f"{self._config.max_w_per_vcpu:g} W ({why})"
                )

    def kinds(self) -> frozenset[ComponentKind]:
        return self._covers

    def read(self, ctx: IntervalContext) -> list[ComponentReading]:
        readings: list[ComponentReading] = []
        if "cpu" in self._covers:
            util = min(100.0, max(0.0, ctx.cpu.busy_fraction * 100.0))
            if self.tdp_w is not None:
                watts = teads_watts(self.tdp_w, util)
            else:
                watts = ccf_watts(
                    ctx.cpu.cpu_count,
                    util,
                    self._config.min_w_per_vcpu,
                    self._config.max_w_per_vcpu,
                )
            readings.append(ComponentReading("cpu", "cpu", "model", watts * ctx.interval_s))
        if "dram" in self._covers:
            watts = memory_watts(ctx.memory_total_bytes / GB, self._config.memory_w_per_gb)
            readings.append(ComponentReading("dram", "dram", "model", watts * ctx.interval_s))
        return readings

    def close(self) -> None:
        """Nothing to release."""
