"""The sensor registry: each module of ``agent/sensors`` that is a sensor registers here.

A sensor's factory gets the ``SensorSet`` being filled and the whole config; it opens
its sensor with ``SensorSet.try_open`` (or records why it is off). Factories run in
``order``: the counters (RAPL 10, NVML 20) before the power model (90), which covers
whatever kind they left uncovered (``SensorSet.covered``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.plugins import Registry

if TYPE_CHECKING:
    from agent.config import Config
    from agent.sensors import SensorSet

SensorFactory = Callable[["SensorSet", "Config"], None]

SENSORS: Registry[SensorFactory] = Registry("sensors", "agent.sensors")
