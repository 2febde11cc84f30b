"""Energy sensors and the registry that picks, for each component, what measures it.

RAPL measures CPU packages, DRAM and psys where it can be read; NVML measures
NVIDIA GPUs; the power model covers whatever kind no counter measures, labelled
``source=model``. A sensor that cannot open says why and how to fix it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from agent.config import Config
from agent.records import ComponentKind, SensorHealth
from agent.sensors.base import IntervalContext, Sensor, SensorUnavailable
from agent.sensors.model import ModelSensor
from agent.static_power import StaticPowerLearner

__all__ = [
    "IntervalContext",
    "Sensor",
    "SensorSet",
    "SensorUnavailable",
    "open_sensors",
]

log = logging.getLogger("sci_agent.sensors")


@dataclass
class SensorSet:
    """The sensors that opened, and the health of every sensor that was tried."""

    sensors: list[Sensor] = field(default_factory=list)
    health: dict[str, SensorHealth] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)

    def covering(self) -> dict[ComponentKind, str]:
        """Which sensor measures each kind of component."""
        out: dict[ComponentKind, str] = {}
        for s in self.sensors:
            for kind in sorted(s.kinds()):
                out.setdefault(kind, s.name)
        return out

    def close(self) -> None:
        for s in self.sensors:
            try:
                s.close()
            except Exception as exc:  # closing must never stop a shutdown
                log.debug("closing sensor %s failed: %s", s.name, exc)


def _try_open(sensors: SensorSet, sensor: Sensor, quiet: bool = False) -> bool:
    health = sensors.health.setdefault(sensor.name, SensorHealth(sensor.name))
    try:
        sensor.open()
    except SensorUnavailable as exc:
        health.ok, health.reason, health.fix = False, exc.reason, exc.fix
        level = logging.INFO if quiet else logging.WARNING
        log.log(
            level,
            "sensor %s unavailable: %s%s",
            sensor.name,
            exc.reason,
            f" (fix: {exc.fix})" if exc.fix else "",
        )
        return False
    health.ok = True
    sensors.sensors.append(sensor)
    return True


def open_sensors(config: Config) -> SensorSet:
    """Open every enabled sensor; the model fills in what no counter covers."""
    found = SensorSet()
    covered: set[ComponentKind] = set()
    cfg = config.sensors
    if cfg.rapl.enabled:
        from agent.sensors.rapl import RaplSensor

        rapl = RaplSensor(cfg.rapl.root, static=_learner(config, "rapl"))
        # No powercap tree at all is normal on VMs; a tree we cannot read is worth a warning.
        if _try_open(found, rapl, quiet=not os.path.isdir(cfg.rapl.root)):
            covered |= rapl.kinds()
    else:
        found.health["rapl"] = SensorHealth("rapl", reason="disabled in the config")
    if cfg.nvml.enabled:
        from agent.sensors.nvml import NvmlSensor

        nvml = NvmlSensor(idle_watts=cfg.nvml.idle_watts, static=_learner(config, "nvml"))
        if _try_open(found, nvml, quiet=True):
            covered |= nvml.kinds()
            found.details["nvml"] = ", ".join(
                f"gpu{d.index} {d.name} {d.uuid}" for d in nvml.devices
            )
    else:
        found.health["nvml"] = SensorHealth("nvml", reason="disabled in the config")
    missing = [k for k in ("cpu", "dram") if k not in covered and not _covered_by_psys(k, covered)]
    if missing:
        model = ModelSensor(cfg.model, covers=missing)  # type: ignore[arg-type]
        if _try_open(found, model):
            found.details["model"] = f"{model.method}; covers {', '.join(missing)}"
            if "cpu" in missing:
                log.info("measuring CPU with the power model: %s", model.method)
    return found


def _learner(config: Config, sensor: str) -> StaticPowerLearner:
    """The static-power learner of a counter sensor, with its saved state and overrides."""
    return StaticPowerLearner(sensor, config.sensors.state_dir, config.sensors.static_watts)


def _covered_by_psys(kind: str, covered: set[ComponentKind]) -> bool:
    """psys (whole platform) includes DRAM when RAPL has no separate DRAM zone."""
    return kind == "dram" and "psys" in covered
