"""``sci-agent doctor``: what can measure on this host, what cannot, and the fix."""

from __future__ import annotations

import errno
import grp
import os
import pwd
import socket
import tempfile
from pathlib import Path

from agent.config import Config, ConfigError
from agent.embodied import HOW_TO_SET, host_embodied
from agent.httpclient import HttpError, request
from agent.sensors import SensorSet
from exporters.store_reader import StoreReadError, open_reader
from sci import humanize

#: The group the service's tmpfiles rule gives read access to the RAPL counters.
SERVICE_GROUP = "sci-agent"
TMPFILES_RULE = "/usr/lib/tmpfiles.d/sci-agent.conf"


def whoami() -> str:
    """``uid N (name)`` of this process, as the messages name it."""
    uid = os.geteuid()
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def writable_dir(folder: Path) -> str | None:
    """None when this user can create files in ``folder`` (or create it); else why not.

    Creates and deletes a probe file in ``folder``, or in its nearest existing parent when
    ``folder`` does not exist yet (``run`` creates it then): a permission check by mode
    bits would pass for root on a read-only mount, or on a file where a folder should be.
    """
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a directory, so {folder} cannot be one"
    try:
        fd, name = tempfile.mkstemp(dir=probe, prefix=".sci-agent-doctor-")
    except OSError as exc:
        where = f"{folder}" if probe == folder else f"{folder} cannot be created: {probe}"
        return f"{where} is not writable by {whoami()} ({exc.strerror or exc})"
    os.close(fd)
    os.unlink(name)
    return None


def writable_file(target: Path) -> str | None:
    """None when this user can create ``target``, or open it for writing; else why not."""
    problem = writable_dir(target.parent if str(target.parent) else Path("."))
    if problem is None and target.exists():
        try:
            os.close(os.open(target, os.O_WRONLY | os.O_CLOEXEC))  # opens, writes nothing
        except OSError as exc:
            problem = f"{target} is not writable by {whoami()} ({exc.strerror or exc})"
    return problem


def store_status(path: str) -> tuple[bool, str]:
    """Whether the store's file can be created or opened for writing (shown absolute)."""
    target = Path(os.path.abspath(path))
    problem = writable_file(target)
    if problem is not None:
        return False, problem
    if target.exists():
        try:
            with open_reader(target) as store:
                rows = store.interval_count()
            return True, f"{target} ({rows} intervals)"
        except StoreReadError as exc:
            if exc.corrupt:
                return False, (
                    f"{target} is corrupt ({exc.cause}): `sci-agent run` moves it aside to "
                    f"{target.name}.corrupt-<UTC time> and starts a fresh store"
                )
            return False, f"{target}: {exc.cause}"
    return True, f"{target} (will be created)"


def spool_status(config: Config) -> tuple[bool, str]:
    """Whether the InfluxDB sink's spool folder can be written (``run`` refuses to start else)."""
    folder = Path(os.path.abspath(config.spool.dir)) / "influxdb"
    problem = writable_dir(folder)
    if problem is not None:
        return False, problem
    return True, f"{folder}" + ("" if folder.exists() else " (will be created)")


def rapl_lines(root: str) -> list[str]:
    """Whether this user can read every RAPL counter under ``root``, and the fix if not.

    Reads each ``energy_uj`` as the sensor does (so a capability counts); no lines when
    the machine has no RAPL zones (the sensor lines say so).
    """
    counters = sorted(Path(root).glob("intel-rapl*/energy_uj"))
    counters += sorted(Path(root).glob("intel-rapl*/intel-rapl*/energy_uj"))
    if not counters:
        return []
    denied: list[tuple[Path, str]] = []
    for counter in counters:
        try:
            fd = os.open(counter, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.pread(fd, 32, 0)
            finally:
                os.close(fd)
        except OSError as exc:
            denied.append((counter, exc.strerror or str(exc)))
    me = whoami()
    if not denied:
        return [f"rapl:     ok  {len(counters)} counters readable by {me}"]
    first, why = denied[0]
    lines = [
        f"rapl:     no  {len(denied)} of {len(counters)} counters not readable by {me}, "
        f"e.g. {first}: {why} (root-only since Linux 5.10)"
    ]
    return lines + _rapl_fix(first)


def _rapl_fix(counter: Path) -> list[str]:
    """The group fix (the service's tmpfiles rule, then ``usermod``), and the alternative."""
    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        user = str(os.geteuid())
    try:
        group = grp.getgrgid(counter.stat().st_gid).gr_name
    except (KeyError, OSError):
        group = ""
    member = f"usermod -aG {SERVICE_GROUP} {user}, then log in again (or restart the service)"
    if group == SERVICE_GROUP:
        fix = [f"          fix: the counters already belong to group {SERVICE_GROUP}: {member}"]
    else:
        fix = [
            f"          fix: give group {SERVICE_GROUP} read access at boot with the tmpfiles "
            f"rule {TMPFILES_RULE} (sci-agent install-service installs it; apply it now with "
            "systemd-tmpfiles --create sci-agent.conf),",
            f"               and put this user in that group (the service's user is in it "
            f"already): {member}",
        ]
    return [
        *fix,
        "          or:  grant CAP_DAC_READ_SEARCH (AmbientCapabilities=CAP_DAC_READ_SEARCH in "
        "the unit): it works, but lets the agent read every file on the host",
    ]


def nvml_device_status() -> tuple[bool, str] | None:
    """Whether this user can open the NVIDIA device files; None when there are none."""
    devices = [*sorted(Path("/dev").glob("nvidia[0-9]*")), Path("/dev/nvidiactl")]
    devices = [d for d in devices if d.exists()]
    if not devices:
        return None
    denied = []
    for device in devices:
        try:
            os.close(os.open(device, os.O_RDWR | os.O_CLOEXEC))
        except OSError:
            denied.append(str(device))
    if denied:
        return False, (
            f"{', '.join(denied)} cannot be opened by {whoami()}: run the agent in the group "
            "owning them (ls -l /dev/nvidia*), and under systemd keep DeviceAllow=/dev/nvidia*"
        )
    return True, f"{len(devices)} device files open for {whoami()}"


def http_status(config: Config) -> tuple[str, bool, str]:
    """Can ``run`` listen on ``http.listen``? (state, whether run would fail, text).

    Binds the address (as the local endpoint does, with ``SO_REUSEADDR``) and releases
    it. When the port is taken, ``GET /healthz`` tells a running sci-agent (the service,
    usually: not a failure) from another program (``run`` would fail).
    """
    listen = config.http.listen
    host, _, port_text = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, int(port_text), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            if _agent_answers(host, int(port_text)):
                return "in use", False, (
                    f"{listen}: a sci-agent already serves there (GET /healthz answers): "
                    "the service is running; a second run with this config could not listen"
                )
            return "FAILS", True, (
                f"{listen} is in use by another program: run cannot listen (find it with "
                f"ss -ltnp 'sport = :{port_text}', or set another http.listen)"
            )
        reason = exc.strerror or str(exc)
        return "FAILS", True, f"{listen}: cannot listen as {whoami()}: {reason}"
    return "ok", False, f"{listen} can be bound (and was released)"


def _agent_answers(host: str, port: int) -> bool:
    """True when an sci-agent's local endpoint answers ``GET /healthz`` there."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    shown = f"[{host}]" if ":" in host else host
    try:
        answer = request("GET", f"http://{shown}:{port}/healthz", timeout_s=2, use_proxy=False)
    except HttpError:
        return False
    return answer.status == 200 and str(answer.headers.get("Server", "")).startswith("sci-agent")


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
    te, years = humanize.number(figure.kgco2e, 6), humanize.number(config.embodied.lifespan_years)
    lines = [f"embodied: {te} kgCO2e over {years} years"]
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
    access = rapl_lines(config.sensors.rapl.root) if config.sensors.rapl.enabled else []
    nvml = nvml_device_status() if config.sensors.nvml.enabled else None
    if nvml is not None:
        access.append(f"nvml:     {'ok' if nvml[0] else 'no'}  {nvml[1]}")
    lines += ["", *access] if access else []
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
    lines += ["", f"user:     {whoami()} (run doctor as the service's user to judge the service)"]
    runs = True  # False when ``run`` would refuse to start
    if config.store.enabled:
        ok, text = store_status(config.store.path)
        runs &= ok or "is corrupt" in text  # run moves a corrupt store aside
        lines.append(f"store:    {'ok' if ok else 'FAILS'}  {text}")
    if config.influxdb.enabled:
        ok, text = spool_status(config)
        runs &= ok
        lines.append(f"spool:    {'ok' if ok else 'FAILS'}  {text}")
        ok, text = influx_status(config)
        lines.append(f"influxdb: {'ok' if ok else 'FAILS'}  {text}")
    if config.jsonl.path not in (None, "-"):
        jsonl = Path(os.path.abspath(str(config.jsonl.path)))
        problem = writable_file(jsonl)
        runs &= problem is None
        lines.append(f"jsonl:    FAILS  {problem}" if problem else f"jsonl:    ok  {jsonl}")
    if config.http.enabled:
        state, fails, text = http_status(config)
        runs &= not fails
        lines.append(f"http:     {state}  {text}")
    problem = writable_dir(Path(os.path.abspath(config.sensors.state_dir)))
    if problem is not None:  # run only warns: learned static floors are not kept
        lines.append(f"state:    no  {problem} (learned static power is lost at restart)")
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
    if not runs:
        lines.append("          but run cannot start here: see FAILS above")
    return "\n".join(lines), 0 if can_measure and grid_ok and embodied_ok and runs else 1
