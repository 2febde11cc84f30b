"""``sci-agent intensity``: the grid intensity now, fetched through the configured chain."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING

from agent.config_check import ConfigError
from agent.grid import ProviderError, build_chain, resolve_region
from agent.grid.builtin import SOURCE, BuiltinProvider
from agent.grid.zones import WORLD
from agent.records import IntensityValue

if TYPE_CHECKING:
    from agent.config import GridConfig


def intensity_command(
    config: GridConfig, zone: str | None, region: str | None, as_json: bool
) -> tuple[str, int]:
    """Fetch synchronously (refresh, then current) and return ``(text, exit code)``.

    The text is one line (plus one per provider that failed on the way), or with
    ``as_json`` the object ``{zone, value_zone, gco2_per_kwh, provider, signal, time,
    fallback, errors}`` (``value_zone``: whose value it is, ``FR`` for ``FR-COR``); the
    exit code is 0, a fallback value included. A bad ``--zone``/``--region`` or config
    raises ``ConfigError`` (a ``ValueError``) naming the option or key.
    """
    chain = build_chain(override(config, zone, region))
    chain.refresh(force=True)
    value = chain.current()
    errors = chain.last_errors
    if as_json:
        return json.dumps(_as_dict(value, errors), indent=2), 0
    whose = f" (value of {value.value_zone})" if value.value_zone else ""
    lines = [
        f"{value.zone}{whose}  {value.gco2_per_kwh:.0f} gCO2e/kWh  "
        f"provider={value.provider} ({describe(value)})  signal={value.signal}  "
        f"fallback={'yes' if value.fallback else 'no'}"
    ]
    lines += [f"  {name} failed: {message}" for name, message in errors.items()]
    return "\n".join(lines), 0


def describe(value: IntensityValue) -> str:
    """Where a value comes from, in a few words."""
    if value.provider == "builtin":
        if value.zone.strip().upper() == WORLD:
            return f"Ember {value.time.year} world average"
        return f"{SOURCE} {value.time.year}, yearly average"
    if value.provider == "static":
        return "grid.intensity_gco2_per_kwh"
    return f"for {value.time:%Y-%m-%d %H:%M} UTC"


def override(config: GridConfig, zone: str | None, region: str | None) -> GridConfig:
    """``config`` for ``--zone`` or ``--region`` (at most one); ``ConfigError`` naming it."""
    if zone and region:
        raise ConfigError("--zone/--region: give one, not both")
    if zone:
        try:
            BuiltinProvider().fetch(zone)  # a zone the last resort knows
        except ProviderError as exc:
            raise ConfigError(f"--zone: {exc.message}") from None
        return replace(config, zone=zone, region=None)
    if region:
        return replace(config, zone=resolve_region(region, key="--region"), region=region)
    return config


def _as_dict(value: IntensityValue, errors: dict[str, str]) -> dict[str, object]:
    return {
        "zone": value.zone,
        "value_zone": value.of_zone,
        "gco2_per_kwh": value.gco2_per_kwh,
        "provider": value.provider,
        "signal": value.signal,
        "time": value.time.isoformat(),
        "fallback": value.fallback,
        "errors": errors,
    }
