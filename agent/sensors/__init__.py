"""Energy sensors and the registry that picks, for each component, what measures it.

RAPL measures CPU packages, DRAM and psys where it can be read; NVML measures
NVIDIA GPUs; the power model covers whatever kind no counter measures, labelled
``source=model``. A sensor that cannot open says why and how to fix it. Each sensor
module registers itself, its ``[sensors.NAME]`` section and its checks in ``SENSORS``
(``agent.sensors.registry``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.records import ComponentKind, SensorHealth
from agent.sensors.base import IntervalContext, Sensor, SensorUnavailable
from agent.sensors.registry import SENSORS
from agent.static_power import StaticPowerLearner

if TYPE_CHECKING:
    from agent.config import Config

__all__ = [
    "SENSORS",
    "IntervalContext",
    "Sensor",
    "SensorSet",
    "SensorUnavailable",
    "learner",
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

    def covered(self) -> set[ComponentKind]:
        """Every kind of component an opened sensor measures."""
        return {kind for s in self.sensors for kind in s.kinds()}

    def disabled(self, name: str) -> None:
        """Record that sensor ``name`` is switched off in the config."""
        self.health[name] = SensorHealth(name, reason="disabled in the config")

    def try_open(self, sensor: Sensor, quiet: bool = False) -> bool:
        """Open ``sensor`` and keep it; else record and log why (at INFO when ``quiet``)."""
        health = self.health.setdefault(sensor.name, SensorHealth(sensor.name))
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
        self.sensors.append(sensor)
        return True

    def close(self) -> None:
        for s in self.sensors:
            try:
                s.close()
            except Exception as exc:  # closing must never stop a shutdown
                log.debug("closing sensor %s failed: %s", s.name, exc)


def open_sensors(config: Config) -> SensorSet:
    """Open every registered sensor in order; the model fills in what no counter covers."""
    found = SensorSet()
    for plugin in SENSORS:
        plugin.factory(found, config)
    return found


def learner(config: Config, sensor: str) -> StaticPowerLearner:
    """The static-power learner of a counter sensor, with its saved state and overrides."""
    return StaticPowerLearner(sensor, config.sensors.state_dir, config.sensors.static_watts)
