"""The dashboard's view of the config: the agent's config and its ``[dashboard]`` section."""

from __future__ import annotations

import os
from dataclasses import dataclass

from agent import config as config_mod
from agent.config import (
    DASHBOARD_SOURCES as SOURCES,
)
from agent.config import (
    Config,
    ConfigError,
    DashboardConfig,
    validate_dashboard,
)

__all__ = [
    "SOURCES",
    "Config",
    "ConfigError",
    "DashboardConfig",
    "Settings",
    "config_path",
    "load",
    "validate_dashboard",
]


@dataclass(frozen=True)
class Settings:
    """The agent's config and the dashboard's section, as one value."""

    config: Config
    dashboard: DashboardConfig
    source_path: str | None  # the file read, None for built-in defaults


def config_path(path: str | os.PathLike[str] | None = None) -> str | None:
    """``path``, else ``$SCI_AGENT_CONFIG``, else None (built-in defaults)."""
    if path is not None:
        return str(path)
    return os.environ.get(config_mod.ENV_CONFIG) or None


def load(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read the config file (see ``config_path``); ``ConfigError`` names a bad key."""
    chosen = config_path(path)
    cfg = config_mod.load(chosen) if chosen is not None else config_mod.validate(Config())
    return Settings(cfg, cfg.dashboard, chosen)
