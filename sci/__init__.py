"""sci-agent's scoring library: power models, the SCI formula, embodied shares.

Pure functions with no I/O; the exceptions are ``sci.client``, the small client an
application imports to push its functional units to the agent, and ``sci.Tracker``
(``sci.tracker``), which measures a block of Python with the agent's pipeline. The
tracker is loaded on first use, so ``import sci`` stays light and imports no agent.
"""

from typing import TYPE_CHECKING, Any

from sci.embodied import (
    DEFAULT_LIFESPAN_YEARS,
    DEFAULT_SERVER_EMBODIED_KGCO2E,
    host_embodied_share,
)
from sci.formula import (
    Interval,
    embodied_carbon,
    energy_weighted_intensity,
    joules_to_kwh,
    kwh_to_joules,
    operational_carbon,
    sci,
    sci_over,
    time_weighted_intensity,
    years_to_seconds,
)
from sci.power import ccf_watts, memory_watts, teads_watts

if TYPE_CHECKING:
    from sci.tracker import Tracker

__all__ = [
    "DEFAULT_LIFESPAN_YEARS",
    "DEFAULT_SERVER_EMBODIED_KGCO2E",
    "Interval",
    "Tracker",
    "ccf_watts",
    "embodied_carbon",
    "energy_weighted_intensity",
    "host_embodied_share",
    "joules_to_kwh",
    "kwh_to_joules",
    "memory_watts",
    "operational_carbon",
    "sci",
    "sci_over",
    "teads_watts",
    "time_weighted_intensity",
    "years_to_seconds",
]


def __getattr__(name: str) -> Any:
    """``sci.Tracker``, imported on first use (it brings in the agent)."""
    if name == "Tracker":
        from sci.tracker import Tracker

        return Tracker
    raise AttributeError(f"module 'sci' has no attribute {name!r}")
