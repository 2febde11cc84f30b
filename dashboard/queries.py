"""The pages' typed calls: one method per query of the data source, through the cache.

``Queries(src).app_totals(hosts, rng)`` answers as ``src.app_totals(hosts, rng)``, from
Streamlit's data cache when the same query with the same arguments ran in the last ten
minutes: ranges end on refresh boundaries, so the queries of reruns repeat. The cache
key is the source's identity (``cache_key``, never a credential), the query's name and
its arguments. Each method's signature is the source's (``DataSource``), so mypy
checks every call a page makes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, cast

import pandas as pd
import streamlit as st

from agent.config import Config
from agent.report import SciReport
from dashboard.data.base import DataSource, Hosts
from dashboard.timerange import TimeRange

P = ParamSpec("P")
R = TypeVar("R")

CACHE_TTL_S = 600
CACHE_ENTRIES = 512


@st.cache_data(ttl=CACHE_TTL_S, max_entries=CACHE_ENTRIES, show_spinner=False)
def _cached(
    _call: Callable[..., Any],
    source: str,
    query: str,
    args: tuple[Any, ...],
    kwargs: tuple[tuple[str, Any], ...],
) -> Any:
    """``_call(*args, **kwargs)``; the other arguments are the cache key (``_call`` is not
    hashed: Streamlit skips arguments named with a leading underscore)."""
    del source, query
    return _call(*args, **dict(kwargs))


@dataclass(frozen=True)
class Queries:
    """A data source's queries, cached; see the module docstring."""

    src: DataSource

    def _run(self, call: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """``call(*args, **kwargs)`` through the cache."""
        named = tuple(sorted(kwargs.items()))
        return cast(R, _cached(call, self.src.cache_key(), call.__name__, args, named))

    def hosts(self, now_ms: int) -> pd.DataFrame:
        return self._run(self.src.hosts, now_ms)

    def apps(self, hosts: Hosts = None) -> pd.DataFrame:
        return self._run(self.src.apps, hosts)

    def zones(self) -> pd.DataFrame:
        return self._run(self.src.zones)

    def power_by_component(self, hosts: Hosts, rng: TimeRange) -> pd.DataFrame:
        return self._run(self.src.power_by_component, hosts, rng)

    def app_totals(self, hosts: Hosts, rng: TimeRange) -> pd.DataFrame:
        return self._run(self.src.app_totals, hosts, rng)

    def sci_over_time(
        self, hosts: Hosts, apps: Sequence[str] | None, rng: TimeRange
    ) -> pd.DataFrame:
        return self._run(self.src.sci_over_time, hosts, apps, rng)

    def remote_over_time(self, hosts: Hosts, app: str, rng: TimeRange) -> pd.DataFrame:
        return self._run(self.src.remote_over_time, hosts, app, rng)

    def energy_by_component(self, hosts: Hosts, app: str, rng: TimeRange) -> pd.DataFrame:
        return self._run(self.src.energy_by_component, hosts, app, rng)

    def operational_vs_embodied(self, hosts: Hosts, app: str, rng: TimeRange) -> pd.DataFrame:
        return self._run(self.src.operational_vs_embodied, hosts, app, rng)

    def intensity_over_time(self, zones: Sequence[str] | None, rng: TimeRange) -> pd.DataFrame:
        return self._run(self.src.intensity_over_time, zones, rng)

    def top_processes(self, host: str, rng: TimeRange, n: int = 10) -> pd.DataFrame:
        return self._run(self.src.top_processes, host, rng, n)

    def idle_vs_active(self, host: str, rng: TimeRange) -> pd.DataFrame:
        return self._run(self.src.idle_vs_active, host, rng)

    def estimated_components(self, hosts: Hosts, rng: TimeRange) -> pd.DataFrame:
        return self._run(self.src.estimated_components, hosts, rng)

    def sci_report(self, config: Config, app: str, start_ms: int, end_ms: int) -> SciReport:
        return self._run(self.src.sci_report, config, app, start_ms, end_ms)
