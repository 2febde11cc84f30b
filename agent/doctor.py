"""``sci-agent doctor``: what can measure on this host, what cannot, and the fix."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from agent.config import Config, ConfigError
from agent.embodied import HOW_TO_SET, host_embodied
from agent.sensors import SensorSet


def store_status(path: str) -> tuple[bool, str]:
    """Whether the store's file can be created or opened for writing."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        return False, f"{folder} is not writable by uid {os.getuid()}"
    if target.exists():
        try:
            db = sqlite3.connect(f"file:{target}?mode=ro", uri=True)
            rows = db.execute("SELECT count(*) FROM intervals").fetchone()[0]
            db.close()
            return True, f"{target} ({rows} intervals)"
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF in (
                sqlite3.SQLITE_CORRUPT,
                sqlite3.SQLITE_NOTADB,
            ):
                return False, (
                    f"{target} is corrupt ({exc}): `sci-agent run` moves it aside to "
                    f"{target.name}.corrupt-<UTC time> and starts a fresh store"
                )
            return False, f"{target}: {exc}"
    return True, f"{target} (will be created)"


def influx_status(config: Config) -> tuple[bool, str]:
    """Ping InfluxDB and check the credentials can write (an empty write)."""
    from agent.config import ConfigError
    from exporters.delivery import DeliveryError
    from exporters.influx_sink import build_network_sink

    cfg = config.influxdb
    where = f"{cfg.url} ({cfg.api}: {cfg.bucket or cfg.database})"
    try:
        sink = build_network_sink(cfg)
    except ConfigError as exc:
        return False, str(exc)
    try:
        return True, f"{where}: {sink.check()}"
    except DeliveryError as exc:
        return False, f"{where}: {exc} (the agent keeps spooling meanwhile)"
    finally:
        sink.close()


def grid_status(config: Config) -> tuple[bool, list[str]]:
    """The grid section: the chain built exactly as ``run`` builds it, and its value now.

    False, with ``run``'s own error (naming the key), when ``run`` would refuse the grid
    settings. Otherwise the remote providers are tried once (each within
    ``grid.timeout_s``): one that fails is listed, since ``run`` would fall back.
    """
    from agent.config import ConfigError
    from agent.grid import build_chain
    from agent.grid.command import describe

    try:
        chain = build_chain(config.grid)  # the one check ``run`` makes, shared
    except ConfigError as exc:
        return False, [f"grid:     FAILS  {exc} (run refuses this config)"]
    chain.refresh(force=True)
    value = chain.current()
    whose = f", the value of {value.value_zone}" if value.value_zone else ""
    lines = [
        f"grid:     ok  zone {value.zone}: {value.gco2_per_kwh:.0f} gCO2e/kWh from "
        f"{value.provider} ({describe(value)}{whose})"
        + (", a fallback value" if value.fallback else "")
    ]
    lines += [f"          {name} failed: {msg}" for name, msg in chain.last_errors.items()]
    return True, lines


def embodied_lines(config: Config, vcpus: int | None = None) -> list[str]:
    """Which embodied figure (TE) the agent will charge this host, and how to set a real one."""
    try:
        figure = host_embodied(config, vcpus or os.cpu_count() or 1)
    except ConfigError as exc:
        return [f"embodied: FAILS  {exc}"]
    kind = "default in use" if figure.is_default else "configured"
    lines = [f"embodied: {figure.kgco2e:.6g} kgCO2e over {config.embodied.lifespan_years:g} years"]
    lines.append(f"          {kind}: {figure.basis}")
    if figure.is_default:
        lines.append(f"          for a real figure: {HOW_TO_SET}")
    return lines


def report(config: Config, config_source: str, sensors: SensorSet) -> tuple[str, int]:
    """The doctor's text and exit status: 0 when it can measure the CPU and run accepts the grid."""
    lines = [
        f"config:   {config_source}",
        f"host:     {config.host}",
        f"interval: {config.interval_s:g} s",
        "",
        "sensors:",
    ]
    for name, health in sensors.health.items():
        if health.ok:
            detail = sensors.details.get(name, "")
            kinds = next((sorted(s.kinds()) for s in sensors.sensors if s.name == name), [])
            lines.append(
                f"  ok    {name:<6} measures {', '.join(kinds)}"
                + (f" ({detail})" if detail else "")
            )
        else:
            lines.append(f"  no    {name:<6} {health.reason}")
            if health.fix:
                lines.append(f"        fix: {health.fix}")
    covering = sensors.covering()
    lines += ["", "measured by:"]
    for kind in ("cpu", "dram", "psys", "gpu"):
        source = covering.get(kind)
        label = source or "nothing"
        if source == "model":
            label += " (estimated by the power model, labelled source=model)"
        lines.append(f"  {kind:<5} {label}")
    embodied = embodied_lines(config)
    embodied_ok = not embodied[0].startswith("embodied: FAILS")
    lines += ["", *embodied]
    if config.store.enabled:
        ok, text = store_status(config.store.path)
        lines += ["", f"store:    {'ok' if ok else 'FAILS'}  {text}"]
    if config.influxdb.enabled:
        ok, text = influx_status(config)
        lines.append(f"influxdb: {'ok' if ok else 'FAILS'}  {text}")
    grid_ok, grid_lines = grid_status(config)
    lines += ["", *grid_lines]
    can_measure = "cpu" in covering
    lines += [
        "",
        "verdict:  "
        + (
            "the agent can measure this host"
            if can_measure
            else "the agent cannot measure the CPU on this host"
        ),
    ]
    if not grid_ok:
        lines.append("          but run refuses the grid settings above")
    if not embodied_ok:
        lines.append("          but run refuses the embodied settings above")
    return "\n".join(lines), 0 if can_measure and grid_ok and embodied_ok else 1
