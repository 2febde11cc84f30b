"""The ``[store]`` sink: the embedded SQLite store (``exporters.sqlite_store``), on by default."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.config_check import ConfigError, positive
from exporters.sinks import SINKS

if TYPE_CHECKING:
    from agent.config import Config
    from exporters.base import Sink


@dataclass(frozen=True)
class StoreConfig:
    enabled: bool = True
    path: str = "var/sci-agent.db"
    retention_days: float = 30
    top_processes: int = 20  # per-process rows kept per interval, plus one "other"


def _validate_store(config: Config) -> None:
    store: StoreConfig = config.store
    positive("store.retention_days", store.retention_days)
    if store.top_processes < 0:
        raise ConfigError("store.top_processes: must be 0 or more")


def _build_store(config: Config) -> Sink | None:
    from exporters.sqlite_store import SqliteStore

    store: StoreConfig = config.store
    if not store.enabled:
        return None
    return SqliteStore(
        store.path,
        store.retention_days,
        store.top_processes,
        max_process_names_per_day=config.max_process_names_per_day,
    )


SINKS.register("store", _build_store, section=StoreConfig, validate=_validate_store, order=10)
