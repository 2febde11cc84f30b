"""Configuration: TOML decoded onto typed, frozen dataclasses, validated at start.

Every key has a default, so no file at all is a valid configuration. An unknown
key or a bad value raises ``ConfigError`` naming the key (``sensors.rapl.root``).
Every number must be finite and within the range of its kind (``_LIMITS``); a secret
(``_is_secret``) is never echoed in a message; ``~`` is expanded in path keys
(``_is_path``), and a relative one written in a config file is made absolute against
that file's folder (defaults stay relative to the working directory); a file holding
secrets that others can read draws a warning. The table of a sink that is off by default
(``[influxdb]``) present in a file is enabled unless it says ``enabled = false``.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import re
import socket
import stat
import tomllib
import types
from collections.abc import Iterator
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from agent.alerts.config import AlertsConfig, validate_alerts
from agent.config_check import ConfigError as ConfigError
from agent.config_check import positive as _positive
from agent.grid.carbonaware import CarbonAwareConfig as CarbonAwareConfig
from agent.grid.csvfile import CsvGridConfig as CsvGridConfig
from agent.grid.electricitymaps import ElectricityMapsConfig as ElectricityMapsConfig
from agent.grid.registry import PROVIDERS as _PROVIDERS
from agent.grid.ukgrid import UkGridConfig as UkGridConfig
from agent.grid.watttime import WattTimeConfig as WattTimeConfig
from agent.plugins import Sections
from agent.redaction import redact_url
from agent.sensors.model import ModelConfig as ModelConfig
from agent.sensors.nvml import NvmlConfig as NvmlConfig
from agent.sensors.rapl import RaplConfig as RaplConfig
from agent.sensors.registry import SENSORS
from exporters.sinks import SINKS
from exporters.sinks.influxdb import INFLUX_APIS as INFLUX_APIS
from exporters.sinks.influxdb import InfluxConfig as InfluxConfig
from exporters.sinks.influxdb import validate_influx as validate_influx
from exporters.sinks.jsonl import JsonlConfig as JsonlConfig
from exporters.sinks.store import StoreConfig as StoreConfig
from sci.embodied import DEFAULT_LIFESPAN_YEARS

# The sections of plugins (``RaplConfig``, ``InfluxConfig``…) are imported above so that
# ``from agent.config import RaplConfig`` goes on working; each lives beside its plugin.

ENV_CONFIG = "SCI_AGENT_CONFIG"

_redact_url = redact_url  # the name ``agent.cli`` uses

log = logging.getLogger("sci_agent.config")

#: ``[sci] idle_policy``; "proportional" is the old name of "full" (agent.scoring).
IdlePolicy = Literal["capacity", "full", "separate", "proportional"]


@dataclass(frozen=True, init=False)
class SensorsConfig(Sections):
    """``[sensors]``: one ``[sensors.NAME]`` table per registered sensor, and these keys."""

    state_dir: str = "var/state"  # learned static floors, kept across restarts
    static_watts: dict[str, float] = field(default_factory=dict)  # component → zero-load W

    if TYPE_CHECKING:  # the shipped sensors' tables, typed; composed from SENSORS at run time
        rapl: RaplConfig = field(default_factory=RaplConfig)
        nvml: NvmlConfig = field(default_factory=NvmlConfig)
        model: ModelConfig = field(default_factory=ModelConfig)


SensorsConfig = SENSORS.compose(SensorsConfig)  # type: ignore[misc]


@dataclass(frozen=True)
class ProcfsConfig:
    root: str = "/proc"
    sys_root: str = "/sys"  # for CPU topology (package of each CPU)
    cgroup_root: str = "/sys/fs/cgroup"  # per-cgroup CPU usage: read only groups that ran
    full_scan_every: int = 60  # every N scans read every process (RSS, cgroup moves)


@dataclass(frozen=True)
class AppRule:
    """An ``[[apps]]`` rule: every matcher given must match (first rule wins)."""

    name: str
    cmdline: str | None = None  # regular expression searched in the command line
    exe: str | None = None  # executable name (basename of argv[0] or comm)
    cgroup: str | None = None  # glob over the cgroup path
    user: str | None = None  # user name or numeric uid
    unit: str | None = None  # the functional unit R of its SCI (request, inference…)


@dataclass(frozen=True, init=False)
class GridConfig(Sections):
    """Where the carbon intensity I comes from; ``builtin`` is always the last resort.

    One ``[grid.NAME]`` table per registered provider that has settings, and these keys.
    """

    zone: str | None = None  # e.g. FR, DE, GB, US-CAL-CISO
    region: str | None = None  # e.g. aws:eu-west-3, gcp:europe-west1, azure:westeurope
    providers: tuple[str, ...] = ("builtin",)
    intensity_gco2_per_kwh: float | None = None  # for the static provider
    timeout_s: float = 5.0

    if TYPE_CHECKING:  # the shipped providers' tables, typed; composed from PROVIDERS
        electricitymaps: ElectricityMapsConfig = field(default_factory=ElectricityMapsConfig)
        ukgrid: UkGridConfig = field(default_factory=UkGridConfig)
        watttime: WattTimeConfig = field(default_factory=WattTimeConfig)
        carbonaware: CarbonAwareConfig = field(default_factory=CarbonAwareConfig)
        csv: CsvGridConfig = field(default_factory=CsvGridConfig)


GridConfig = _PROVIDERS.compose(GridConfig)  # type: ignore[misc]


@dataclass(frozen=True)
class EmbodiedConfig:
    """The host's embodied emissions M, amortised over its lifespan."""

    # unset: per cloud instance type, else a VM's share of the reference server, else
    # (bare metal) the whole reference server (sci.embodied)
    total_kgco2e: float | None = None
    lifespan_years: float = DEFAULT_LIFESPAN_YEARS
    instance_type: str | None = None  # e.g. "m5.large"; unset: detected where cheap (AWS)
    host_threads: int | None = None  # hardware threads of the VM's host; unset: 80


@dataclass(frozen=True)
class SciConfig:
    idle_policy: IdlePolicy = "capacity"
    pue: float = 1.0


@dataclass(frozen=True)
class HttpConfig:
    enabled: bool = True
    listen: str = "127.0.0.1:9475"
    token: str | None = None  # bearer token required by POST /v1/units when set
    max_body_bytes: int = 65536
    max_connections: int = 64  # connections served at once; beyond: a short queue, then 503
    request_timeout_s: float = 10.0  # whole request (line, headers, body), not per read


#: Bounds of ``http.max_connections`` (one thread and one descriptor each).
HTTP_MAX_CONNECTIONS = 1024
#: Upper bound of ``http.request_timeout_s``.
HTTP_MAX_REQUEST_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class ScrapeConfig:
    """A Prometheus counter an application already exposes, counted as its units."""

    app: str
    url: str
    metric: str
    labels: dict[str, str] = field(default_factory=dict)
    interval_s: float = 15.0


@dataclass(frozen=True)
class SpoolConfig:
    """The durable buffer between the sampling loop and network sinks."""

    dir: str = "var/spool"  # one folder per network sink below it
    max_mb: float = 256
    flush_deadline_s: float = 5.0  # on SIGTERM, flush this long, then keep the rest


DASHBOARD_SOURCES = ("store", "influxdb")


@dataclass(frozen=True)
class DashboardConfig:
    """Where the dashboard reads from; InfluxDB credentials should be read-only ones."""

    source: str = "store"  # "store" (the embedded SQLite store) or "influxdb"
    influx_url: str = "http://127.0.0.1:8086"
    influx_database: str = "sci"  # 1.x database, or the bucket mapped by the v1 API (2.x/3.x)
    influx_username: str | None = None
    influx_password: str | None = field(default=None, repr=False)
    influx_token: str | None = field(default=None, repr=False)  # "Authorization: Token …"
    refresh_s: float = 30.0
    port: int = 8501


def validate_dashboard(d: DashboardConfig) -> DashboardConfig:
    """Check values beyond their types; raise ``ConfigError`` naming the key."""
    if d.source not in DASHBOARD_SOURCES:
        raise ConfigError(f"dashboard.source: must be one of {', '.join(DASHBOARD_SOURCES)}")
    if not d.influx_url.startswith(("http://", "https://")):
        raise ConfigError("dashboard.influx_url: must start with http:// or https://")
    if d.source == "influxdb" and not d.influx_database:
        raise ConfigError('dashboard.influx_database: required when source = "influxdb"')
    if not d.refresh_s > 0:
        raise ConfigError(f"dashboard.refresh_s: must be greater than 0, got {d.refresh_s}")
    if not 0 < d.port < 65536:
        raise ConfigError(f"dashboard.port: must be 1-65535, got {d.port}")
    return d


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"


@dataclass(frozen=True, init=False)
class Config(Sections):
    """The whole configuration: these sections, and one table per registered sink."""

    host: str = field(default_factory=socket.gethostname)
    interval_s: float = 5.0
    max_process_names_per_day: int = 200  # distinct process series per host per day, all sinks
    sensors: SensorsConfig = field(default_factory=SensorsConfig)
    procfs: ProcfsConfig = field(default_factory=ProcfsConfig)
    apps: tuple[AppRule, ...] = ()
    grid: GridConfig = field(default_factory=GridConfig)
    embodied: EmbodiedConfig = field(default_factory=EmbodiedConfig)
    sci: SciConfig = field(default_factory=SciConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    scrape: tuple[ScrapeConfig, ...] = ()
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    log: LogConfig = field(default_factory=LogConfig)

    if TYPE_CHECKING:  # the shipped sinks' tables, typed; composed from SINKS at run time
        store: StoreConfig = field(default_factory=StoreConfig)
        influxdb: InfluxConfig = field(default_factory=InfluxConfig)
        jsonl: JsonlConfig = field(default_factory=JsonlConfig)


Config = SINKS.compose(Config)  # type: ignore[misc]


_LOG_LEVELS = ("debug", "info", "warning", "error")
_APP_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$")

T = TypeVar("T")


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Load the config from ``path``, else ``$SCI_AGENT_CONFIG``, else defaults.

    Warns (without failing) when the file holds a secret that its group or others
    may read.
    """
    chosen = path if path is not None else os.environ.get(ENV_CONFIG) or None
    if chosen is None:
        return validate(Config())
    file = Path(chosen)
    try:
        with file.open("rb") as f:
            raw = f.read()
            mode = os.fstat(f.fileno()).st_mode
    except FileNotFoundError:
        raise ConfigError(f"{file}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read config: {exc.strerror}") from None
    base_dir = Path(os.path.abspath(file)).parent
    cfg = loads(_utf8(raw, str(file)), source=str(file), base_dir=base_dir)
    _warn_if_readable(str(file), mode, cfg)
    return cfg


def _utf8(raw: bytes, source: str) -> str:
    """``raw`` decoded as UTF-8; ``ConfigError`` names the first bad byte and its offset."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start]
        raise ConfigError(
            f"{source}: not UTF-8 text (byte 0x{bad:02x} at offset {exc.start})"
        ) from None


def loads(
    text: str, source: str = "<config>", base_dir: str | os.PathLike[str] | None = None
) -> Config:
    """Parse and validate TOML text; relative paths in it are made absolute against ``base_dir``.

    Without ``base_dir`` (text that is not from a file) paths stay as written.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    implied = _enable_present_sinks(data)
    try:
        cfg = _decode(Config, data, "")
        if base_dir is not None:
            cfg = _resolve_paths(cfg, data, Path(base_dir))
        return validate(cfg)
    except ConfigError as exc:
        hint = ""
        for name in implied:
            if str(exc).startswith(f"{name}."):
                hint = f" ([{name}] is present, so it is on; write enabled = false to keep it off)"
        raise ConfigError(f"{source}: {exc}{hint}") from None


def _enable_present_sinks(data: dict[str, Any]) -> list[str]:
    """Enable each table of a sink that is off by default (``[influxdb]``) and does not
    say ``enabled``; the names of those it enabled.

    A configured section is meant: a url without ``enabled = true`` must not export
    nothing in silence.
    """
    enabled = []
    for plugin in SINKS:
        section = data.get(plugin.name)
        if plugin.section is None or not isinstance(section, dict) or "enabled" in section:
            continue
        if any(f.name == "enabled" and f.default is False for f in fields(plugin.section)):
            data[plugin.name] = {**section, "enabled": True}
            enabled.append(plugin.name)
    return enabled


def _resolve_paths(obj: T, data: Any, base: Path) -> T:
    """``obj`` with every relative path key written in ``data`` made absolute against ``base``.

    Defaults (keys not in ``data``), ``"-"`` (stdout) and empty values are left alone.
    """
    if not isinstance(data, dict):
        return obj
    changes: dict[str, Any] = {}
    for f in fields(obj):  # type: ignore[arg-type]
        if f.name not in data:
            continue
        value, raw = getattr(obj, f.name), data[f.name]
        if is_dataclass(value):
            changes[f.name] = _resolve_paths(value, raw, base)
        elif isinstance(value, tuple) and isinstance(raw, list) and len(raw) == len(value):
            if value and is_dataclass(value[0]):
                changes[f.name] = tuple(
                    _resolve_paths(v, r, base) for v, r in zip(value, raw, strict=True)
                )
        elif isinstance(value, str) and _is_path(f) and value not in ("", "-"):
            changes[f.name] = value if os.path.isabs(value) else os.path.normpath(base / value)
    return replace(obj, **changes) if changes else obj  # type: ignore[type-var]


def validate(cfg: Config) -> Config:
    """Check values beyond their types; raise ``ConfigError`` naming the key.

    Each registered plugin checks its own section (``SENSORS``, ``PROVIDERS``, ``SINKS``);
    the checks of the other sections are the ``_validate_*`` functions below.
    """
    _check_numbers(cfg, lower=False)  # finite and not too large, before any arithmetic
    _positive("interval_s", cfg.interval_s)
    if not cfg.host.strip():
        raise ConfigError("host: must not be empty")
    if cfg.max_process_names_per_day < 1:
        raise ConfigError("max_process_names_per_day: must be 1 or more")
    if cfg.procfs.full_scan_every < 1:
        raise ConfigError("procfs.full_scan_every: must be 1 or more")
    _validate_sensors(cfg.sensors)
    _validate_grid(cfg.grid)
    _validate_embodied(cfg.embodied)
    _validate_sci(cfg.sci)
    _validate_http(cfg.http)
    _validate_scrape(cfg)
    SINKS.validate(cfg)
    validate_dashboard(cfg.dashboard)
    try:
        validate_alerts(cfg.alerts)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for i, alert_rule in enumerate(cfg.alerts.rules):
        if alert_rule.metric == "sci_change_pct" and not cfg.store.enabled:
            raise ConfigError(
                f"alerts.rules[{i}].metric: sci_change_pct compares with the last 7 days"
                " kept in the embedded store; set store.enabled = true"
            )
    if not cfg.spool.max_mb >= 1:
        raise ConfigError(f"spool.max_mb: must be at least 1, got {cfg.spool.max_mb}")
    _positive("spool.flush_deadline_s", cfg.spool.flush_deadline_s)
    if cfg.log.level.lower() not in _LOG_LEVELS:
        raise ConfigError(f"log.level: must be one of {', '.join(_LOG_LEVELS)}")
    _validate_apps(cfg.apps)
    _check_numbers(cfg, lower=True)  # keys without a check of their own above
    return cfg


def _validate_sensors(sensors: SensorsConfig) -> None:
    for component, watts in sensors.static_watts.items():
        if not (math.isfinite(watts) and watts >= 0):
            raise ConfigError(
                f"sensors.static_watts.{component}: must be a finite number of watts, 0 or more,"
                f" got {watts}"
            )
    if not sensors.state_dir.strip():
        raise ConfigError("sensors.state_dir: must not be empty")
    SENSORS.validate(sensors)


def _validate_grid(grid: GridConfig) -> None:
    if grid.zone is not None and grid.region is not None:
        raise ConfigError("grid.region: give grid.zone or grid.region, not both")
    if not grid.providers:
        raise ConfigError("grid.providers: must name at least one provider")
    if len(set(grid.providers)) != len(grid.providers):
        raise ConfigError("grid.providers: a provider is listed twice")
    known = _PROVIDERS.names()
    for name in grid.providers:
        if name not in known:
            raise ConfigError(
                f"grid.providers: unknown provider {name!r} (one of {', '.join(known)})"
            )
    _PROVIDERS.validate(grid)
    _positive("grid.timeout_s", grid.timeout_s)


def _validate_sci(sci: SciConfig) -> None:
    if sci.pue < 1.0:
        raise ConfigError(f"sci.pue: must be 1.0 or more, got {sci.pue}")


def _validate_http(http: HttpConfig) -> None:
    host, _, port = http.listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"http.listen: expected HOST:PORT, got {http.listen!r}")
    if http.max_body_bytes < 64:
        raise ConfigError("http.max_body_bytes: must be at least 64")
    cap = http.max_connections
    if not 1 <= cap <= HTTP_MAX_CONNECTIONS:
        raise ConfigError(f"http.max_connections: must be 1-{HTTP_MAX_CONNECTIONS}, got {cap}")
    timeout = http.request_timeout_s
    if not 0 < timeout <= HTTP_MAX_REQUEST_TIMEOUT_S:  # also refuses nan
        raise ConfigError(
            f"http.request_timeout_s: must be greater than 0 and at most"
            f" {HTTP_MAX_REQUEST_TIMEOUT_S:g} seconds, got {timeout}"
        )


def _validate_scrape(cfg: Config) -> None:
    units = {rule.name: rule.unit for rule in cfg.apps}
    for i, scrape in enumerate(cfg.scrape):
        if scrape.app not in units:
            raise ConfigError(f"scrape[{i}].app: {scrape.app!r} is not an [[apps]] name")
        if units[scrape.app] is None:
            raise ConfigError(f"scrape[{i}].app: app {scrape.app!r} has no unit to count")
        if not scrape.url.startswith(("http://", "https://")):
            raise ConfigError(f"scrape[{i}].url: must start with http:// or https://")
        _positive(f"scrape[{i}].interval_s", scrape.interval_s)


def _validate_apps(apps: tuple[AppRule, ...]) -> None:
    seen: set[str] = set()
    for i, rule in enumerate(apps):
        where = f"apps[{i}]"
        if not _APP_NAME.match(rule.name):
            raise ConfigError(
                f"{where}.name: {rule.name!r} must be 1-64 letters, digits, '_', '.', ':' or '-'"
            )
        if rule.name.startswith("_"):
            raise ConfigError(f"{where}.name: names starting with '_' are reserved")
        if rule.name in seen:
            raise ConfigError(f"{where}.name: {rule.name!r} is defined twice")
        seen.add(rule.name)
        if not any((rule.cmdline, rule.exe, rule.cgroup, rule.user)):
            raise ConfigError(f"{where}: give at least one of cmdline, exe, cgroup, user")
        if rule.cmdline is not None:
            try:
                re.compile(rule.cmdline)
            except re.error as exc:
                raise ConfigError(f"{where}.cmdline: invalid regular expression: {exc}") from None


def _validate_embodied(e: EmbodiedConfig) -> None:
    if e.total_kgco2e is not None and e.total_kgco2e < 0:
        raise ConfigError("embodied.total_kgco2e: must be 0 or more")
    if e.host_threads is not None and e.host_threads < 1:
        raise ConfigError(f"embodied.host_threads: must be 1 or more, got {e.host_threads}")
    shape = r"[a-z][a-z0-9-]*\.[a-z0-9-]+"
    if e.instance_type is not None and not re.fullmatch(shape, e.instance_type):
        raise ConfigError(
            f"embodied.instance_type: expected a cloud instance type such as m5.large,"
            f" got {e.instance_type!r}"
        )
    _positive("embodied.lifespan_years", e.lifespan_years)


def _decode(cls: type[T], data: Any, prefix: str) -> T:
    """Decode a TOML table onto dataclass ``cls``, rejecting unknown keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a table")
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in known:
            raise ConfigError(f"{prefix}{key}: unknown key")
    values: dict[str, Any] = {}
    for name, f in known.items():
        if name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ConfigError(f"{prefix}{name}: required")
            continue
        value = _coerce(hints[name], data[name], f"{prefix}{name}", secret=_is_secret(f))
        if isinstance(value, str) and _is_path(f):
            value = os.path.expanduser(value)  # "-" (stdout) and plain paths are unchanged
        values[name] = value
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str, secret: bool = False) -> Any:
    """``value`` as type ``hint``, or ``ConfigError``; a secret's value is never shown."""
    got = _shown(value, secret)
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        return _coerce(options[0], value, key, secret)
    if origin is tuple and get_args(hint)[0] is str:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected an array of strings, got {got}")
        return tuple(value)
    if origin is dict and get_args(hint)[1] is float:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table of numbers, got {value!r}")
        return {k: _coerce(float, v, f"{key}.{k}") for k, v in value.items()}
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ConfigError(f"{key}: expected a table of strings, got {got}")
        return dict(value)
    if origin is tuple:
        item = get_args(hint)[0]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected an array of tables ([[{key}]])")
        return tuple(_decode(item, v, f"{key}[{i}].") for i, v in enumerate(value))
    if origin is Literal:
        if not isinstance(value, str) or value not in get_args(hint):
            choices = ", ".join(get_args(hint))
            raise ConfigError(f"{key}: must be one of {choices}, got {got}")
        return value
    if isinstance(hint, type) and hasattr(hint, "__dataclass_fields__"):
        return _decode(hint, value, f"{key}.")
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {got}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {got}")
        return _finite(value, key)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {got}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {got}")
        return value
    raise ConfigError(f"{key}: unsupported type")  # pragma: no cover - schema bug


def _finite(value: int | float, key: str) -> float:
    """``value`` as a finite float; ``nan``, ``inf`` and ints beyond a float are refused."""
    try:
        number = float(value)
    except OverflowError:
        raise ConfigError(f"{key}: must be a finite number, got an integer too large") from None
    if not math.isfinite(number):
        raise ConfigError(f"{key}: must be a finite number, got {number}")
    return number


# -- secrets and paths, told by the key's name or the field's metadata ----------------------

_SECRET_NAME = re.compile(r"(^|_)(token|password|passwd|secret|api_key|apikey)$")
_PATH_NAME = re.compile(r"(^|_)(path|dir|root)$")
_KINDS: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a number"),
    (str, "a string"),
    (list, "an array"),
    (dict, "a table"),
    (dt.datetime, "a date-time"),
    (dt.date, "a date"),
    (dt.time, "a time"),
)


def _is_secret(f: Field[Any]) -> bool:
    """A credential: named token/password/secret/api_key, ``repr=False``, or ``secret`` metadata."""
    return bool(_SECRET_NAME.search(f.name)) or not f.repr or bool(f.metadata.get("secret"))


def _is_path(f: Field[Any]) -> bool:
    """A filesystem path (``~`` is expanded): named path, dir, root, ``*_dir``…; or by metadata."""
    return bool(_PATH_NAME.search(f.name)) or bool(f.metadata.get("path"))


def _shown(value: Any, secret: bool) -> str:
    """How a value appears in a message: its repr, or for a secret only its kind."""
    if not secret:
        return repr(value)
    kind = next((name for t, name in _KINDS if isinstance(value, t)), "a value")
    return f"{kind} (value hidden)"


def _fields(obj: Any, prefix: str = "") -> Iterator[tuple[str, Field[Any], Any]]:
    """Every leaf of a config tree: (dotted key, its field, its value); arrays as ``key[i]``."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if is_dataclass(value):
            yield from _fields(value, f"{key}.")
        elif isinstance(value, tuple) and value and is_dataclass(value[0]):
            for i, item in enumerate(value):
                yield from _fields(item, f"{key}[{i}].")
        else:
            yield key, f, value


def _warn_if_readable(source: str, mode: int, cfg: Config) -> None:
    """Log a warning when ``source`` holds a non-empty secret its group or others may read."""
    readers = [
        who for bit, who in ((stat.S_IRGRP, "its group"), (stat.S_IROTH, "others")) if mode & bit
    ]
    if not readers or not stat.S_ISREG(mode):
        return
    held = [key for key, f, value in _fields(cfg) if _is_secret(f) and value]
    if held:
        log.warning(
            "%s: mode %04o lets %s read the secrets it holds (%s); run chmod 600 %s",
            source,
            stat.S_IMODE(mode),
            " and ".join(readers),
            ", ".join(held),
            source,
        )


# -- ranges: every number finite, within the bounds of its kind -------------------------------

_INT_MAX = 2**31 - 1
_FLOAT_MAX = 1e9
#: (key name pattern, minimum, maximum, what the maximum is); the first match applies.
_LIMITS: tuple[tuple[re.Pattern[str], float, float, str], ...] = (
    (re.compile(r"threshold$"), -_FLOAT_MAX, _FLOAT_MAX, "a billion"),
    (re.compile(r"^interval_s$"), 0, 86_400, "one day"),
    (re.compile(r"timeout_s$"), 0, 3_600, "one hour"),
    (re.compile(r"_s$"), 0, 604_800, "one week"),
    (re.compile(r"_days$"), 0, 36_500, "100 years"),
    (re.compile(r"_years$"), 0, 50, "50 years"),
    (re.compile(r"(^|_)(w|watts)(_|$)"), 0, 10_000, "10 kW"),
    (re.compile(r"gco2_per_kwh$"), 0, 5_000, "above any grid on record"),
    (re.compile(r"kgco2e$"), 0, 1_000_000, "1,000 tonnes"),
    (re.compile(r"^pue$"), 1, 5, "worse than any surveyed data centre"),
    (re.compile(r"_mb$"), 0, 1_048_576, "1 TiB"),
    (re.compile(r"_bytes$"), 0, 2**30, "1 GiB"),
    (re.compile(r"(^|_)port$"), 1, 65_535, "the largest port"),
    (re.compile(r"^batch_size$"), 1, 1_000_000, "a million lines"),
    (re.compile(r"^top_processes$"), 0, 10_000, "rows per interval"),
)


def _limits(name: str, value: int | float) -> tuple[float, float, str]:
    """The (minimum, maximum, reason) for the number key ``name``."""
    for pattern, low, high, why in _LIMITS:
        if pattern.search(name):
            return low, high, why
    if isinstance(value, int):
        return 0, _INT_MAX, "the largest 32-bit integer"
    return 0, _FLOAT_MAX, "a billion"


def _check_numbers(cfg: Config, lower: bool) -> None:
    """Every number finite and at most its kind's maximum; with ``lower``, at least its minimum."""
    for key, f, value in _fields(cfg):
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}: must be a finite number, got {value}")
        low, high, why = _limits(f.name, value)
        if value > high:
            raise ConfigError(f"{key}: must be at most {_fmt(high)} ({why}), got {_fmt(value)}")
        if lower and value < low:
            raise ConfigError(f"{key}: must be {_fmt(low)} or more, got {_fmt(value)}")


def _fmt(x: float) -> str:
    """A number for a message: integers in full up to 1e15, else ``%g``."""
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:g}"
