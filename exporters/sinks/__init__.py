"""The sink registry: each module of ``exporters/sinks`` registers one sink.

A sink module holds its config section (the top-level table named after it, such as
``[store]``), its checks and its factory, which gets the whole config and returns the
sink, unopened, or ``None`` when the section leaves it off. The sink's code may live
in the same module or, when it is heavy, in a module of ``exporters`` that the factory
imports. ``order`` is the order the loop writes to the sinks in. The local API's
``/metrics`` and the alert engine are sinks too, built by ``agent.runtime`` from their
own sections.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.plugins import Registry

if TYPE_CHECKING:
    from agent.config import Config
    from exporters.base import Sink

__all__ = ["SINKS", "SinkFactory"]

SinkFactory = Callable[["Config"], "Sink | None"]

SINKS: Registry[SinkFactory] = Registry("sinks", "exporters.sinks")
