"""The error every config check raises, and the small checks config sections share.

A plugin module (a sensor, a grid provider, a sink) declares its own config section
and validates it with these; it must not import ``agent.config``, which imports the
plugins to compose the whole configuration.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration problem; the message names the key and what is wrong."""


def positive(key: str, value: float) -> None:
    """``ConfigError`` naming ``key`` unless ``value`` is greater than 0 (``nan`` is not)."""
    if not value > 0:
        raise ConfigError(f"{key}: must be greater than 0, got {value}")
