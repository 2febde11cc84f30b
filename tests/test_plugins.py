"""Plugin registries: sensors, grid providers and sinks register themselves.

A plugin is one module: its config section, its checks and its factory. The tests that
add one drop a module into a temporary folder placed on the family package's path, in
a fresh interpreter (the config is composed from the registries when it is imported).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.config import Config, ConfigError, GridConfig, StoreConfig, loads
from agent.grid import PROVIDERS, build_chain, build_provider
from agent.plugins import Registry
from agent.runtime import Agent
from agent.sensors import SENSORS
from exporters.sinks import SINKS
from exporters.sqlite_store import DEFAULT_BACKLOG_INTERVALS, SqliteStore

ROOT = Path(__file__).resolve().parent.parent


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``script`` in a fresh interpreter, from the repository root."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_each_family_lists_its_plugins_in_order() -> None:
    assert SENSORS.names() == ("rapl", "nvml", "model")
    assert PROVIDERS.names() == (
        "static",
        "builtin",
        "electricitymaps",
        "ukgrid",
        "watttime",
        "carbonaware",
        "csv",
    )
    assert SINKS.names() == ("store", "influxdb", "jsonl")


def test_an_unknown_provider_is_named_with_the_registered_ones() -> None:
    with pytest.raises(ConfigError) as err:
        loads('[grid]\nproviders = ["nope"]\n')
    assert str(err.value) == (
        "<config>: grid.providers: unknown provider 'nope' (one of static, builtin,"
        " electricitymaps, ukgrid, watttime, carbonaware, csv)"
    )
    with pytest.raises(ConfigError, match=r"grid\.providers: unknown provider 'nope'"):
        build_provider("nope", GridConfig(), "FR")


def test_registering_imports_no_optional_or_heavy_package() -> None:
    out = _run(
        """
        import sys
        import agent.config
        from agent.grid import PROVIDERS
        from agent.sensors import SENSORS
        from exporters.sinks import SINKS
        assert [p.name for p in SENSORS] and [p.name for p in PROVIDERS] and [p.name for p in SINKS]
        heavy = ("pynvml", "influxdb_client", "pandas", "streamlit", "plotly")
        print(sorted(m for m in sys.modules if m.split(".")[0] in heavy))
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_plugin_name_is_registered_once() -> None:
    registry: Registry[int] = Registry("things", "agent.sensors")
    registry.register("one", 1)
    with pytest.raises(ValueError, match="things: a plugin named 'one' is already registered"):
        registry.register("one", 2)


def test_a_plugin_section_may_not_shadow_a_key_of_its_family() -> None:
    registry: Registry[int] = Registry("sensors", "agent.sensors")
    registry._loaded = True  # only the plugin below
    registry.register("state_dir", 1, section=StoreConfig)
    with pytest.raises(ValueError, match="plugin 'state_dir' shadows a config key"):
        registry.compose(type(Config().sensors))


# -- a provider listed twice: refused by validation, so build_chain never sees one -------------


def test_a_provider_listed_twice_is_a_config_error_before_any_chain_is_built(
    tmp_path: Path,
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[grid]\nzone = "FR"\nproviders = ["builtin", "builtin"]\n')
    out = subprocess.run(
        [sys.executable, "-m", "agent", "intensity", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 2
    assert "grid.providers: a provider is listed twice" in out.stderr
    assert "using its first place" not in out.stderr  # the old warning: unreachable


def test_the_zone_override_keeps_the_validated_providers() -> None:
    """``--zone``/``--region`` change only the zone, so no path adds a provider twice."""
    from agent.grid.command import override

    grid = loads('[grid]\nproviders = ["static", "builtin"]\nintensity_gco2_per_kwh = 9\n').grid
    assert override(grid, "DE", None).providers == ("static", "builtin")
    assert build_chain(override(grid, "DE", None)).zone == "DE"


# -- sinks: built from the registry, in the loop's order -------------------------------------


def test_sinks_are_built_from_their_sections_in_the_loops_order(tmp_path: Path) -> None:
    cfg = loads(
        f'max_process_names_per_day = 7\n[store]\npath = "{tmp_path}/s.db"\n'
        '[influxdb]\nurl = "http://127.0.0.1:9"\napi = "v1"\ndatabase = "sci"\n'
        f'[spool]\ndir = "{tmp_path}/spool"\n[jsonl]\npath = "{tmp_path}/out.jsonl"\n'
    )
    agent = Agent(cfg)
    sinks = agent.build_sinks()
    assert [s.name for s in sinks] == ["store", "prometheus", "influxdb", "jsonl"]
    assert [r.name for r in agent.runners] == ["influxdb"]
    store = sinks[0]
    assert isinstance(store, SqliteStore)
    # the config's daily cap reaches the store (it was passed as the backlog bound before)
    assert store.process_rows.max_names == 7
    assert store.backlog_intervals == DEFAULT_BACKLOG_INTERVALS


def test_a_sink_whose_section_is_off_is_not_built(tmp_path: Path) -> None:
    cfg = loads(f'[store]\nenabled = false\npath = "{tmp_path}/s.db"\n[http]\nenabled = false\n')
    assert Agent(cfg, serve_http=False).build_sinks() == []


# -- following the how-to: one new module makes a working plugin ------------------------------

PROVIDER = '''
from dataclasses import dataclass

from agent.config_check import ConfigError
from agent.grid.registry import PROVIDERS
from agent.grid.static import StaticProvider


@dataclass(frozen=True)
class FixedConfig:
    gco2_per_kwh: float | None = None


def _validate(grid):
    if "fixed" in grid.providers and grid.fixed.gco2_per_kwh is None:
        raise ConfigError("grid.fixed.gco2_per_kwh: required by the fixed provider")


def _build(grid, zone):
    return StaticProvider(grid.fixed.gco2_per_kwh)


PROVIDERS.register("fixed", _build, section=FixedConfig, validate=_validate, order=80)
'''

WITH_PROVIDER = """
import sys
import agent.grid
agent.grid.__path__.append(sys.argv[1])
from agent.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _intensity(tmp_path: Path, toml: str) -> subprocess.CompletedProcess[str]:
    plugins = tmp_path / "plugins"
    plugins.mkdir(exist_ok=True)
    (plugins / "fixed.py").write_text(PROVIDER)
    config = tmp_path / "agent.toml"
    config.write_text(toml)
    return _run(WITH_PROVIDER, str(plugins), "intensity", "--json", "--config", str(config))


def test_a_provider_module_alone_adds_its_section_checks_and_factory(tmp_path: Path) -> None:
    out = _intensity(
        tmp_path,
        '[grid]\nzone = "FR"\nproviders = ["fixed", "builtin"]\n[grid.fixed]\ngco2_per_kwh = 42\n',
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["gco2_per_kwh"] == 42.0


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[grid]\nproviders = ["fixed"]\n',
            "grid.fixed.gco2_per_kwh: required by the fixed provider",
        ),
        ('[grid.fixed]\ncolour = "red"\n', "grid.fixed.colour: unknown key"),
        ('[grid.fixed]\ngco2_per_kwh = "x"\n', "grid.fixed.gco2_per_kwh: expected a number"),
    ],
)
def test_a_new_providers_section_is_decoded_and_checked(
    tmp_path: Path, toml: str, message: str
) -> None:
    out = _intensity(tmp_path, toml)
    assert out.returncode == 2
    assert message in out.stderr


SENSOR = '''
from dataclasses import dataclass

from agent.config_check import ConfigError
from agent.records import ComponentReading
from agent.sensors.registry import SENSORS


@dataclass(frozen=True)
class ConstantConfig:
    enabled: bool = False
    watts: float = 0.0


class ConstantSensor:
    name = "constant"

    def __init__(self, watts):
        self.watts = watts

    def open(self):
        pass

    def kinds(self):
        return frozenset({"gpu"})

    def read(self, ctx):
        return [ComponentReading("gpu0", "gpu", "constant", self.watts * ctx.interval_s)]

    def close(self):
        pass


def _validate(sensors):
    if sensors.constant.watts < 0:
        raise ConfigError("sensors.constant.watts: must be 0 or more")


def _open(found, config):
    if config.sensors.constant.enabled:
        found.try_open(ConstantSensor(config.sensors.constant.watts))
    else:
        found.disabled("constant")


SENSORS.register("constant", _open, section=ConstantConfig, validate=_validate, order=30)
'''

WITH_SENSOR = """
import json, sys
import agent.sensors
agent.sensors.__path__.append(sys.argv[1])
from agent.config import ConfigError, loads
from agent.sensors import open_sensors
try:
    cfg = loads(sys.argv[2])
except ConfigError as exc:
    sys.exit(str(exc))
found = open_sensors(cfg)
print(json.dumps({"open": [s.name for s in found.sensors], "covering": found.covering(),
                  "health": {n: h.reason for n, h in found.health.items()}}))
"""


def _sensors(tmp_path: Path, toml: str) -> subprocess.CompletedProcess[str]:
    plugins = tmp_path / "plugins"
    plugins.mkdir(exist_ok=True)
    (plugins / "constant.py").write_text(SENSOR)
    return _run(WITH_SENSOR, str(plugins), toml)


def test_a_sensor_module_alone_adds_a_sensor(tmp_path: Path) -> None:
    base = f'[sensors.rapl]\nroot = "{tmp_path}/none"\n[sensors.nvml]\nenabled = false\n'
    on = _sensors(tmp_path, base + "[sensors.constant]\nenabled = true\nwatts = 30\n")
    assert on.returncode == 0, on.stderr
    opened = json.loads(on.stdout)
    assert opened["open"] == ["constant", "model"]  # in order; the model fills cpu and dram
    assert opened["covering"]["gpu"] == "constant"
    off = json.loads(_sensors(tmp_path, base).stdout)
    assert off["health"]["constant"] == "disabled in the config"
    bad = _sensors(tmp_path, base + "[sensors.constant]\nwatts = -1\n")
    assert "sensors.constant.watts: must be 0 or more" in bad.stderr


SINK = '''
from dataclasses import dataclass

from exporters.sinks import SINKS


@dataclass(frozen=True)
class TallyConfig:
    enabled: bool = False  # off by default: a [tally] table written in a file turns it on
    path: str | None = None


class TallySink:
    name = "tally"

    def __init__(self, path):
        self.path = path

    def open(self):
        pass

    def write(self, batch):
        with open(self.path, "a") as f:
            f.write(f"{len(batch)}\\n")

    def close(self):
        pass


def _build(config):
    return TallySink(config.tally.path) if config.tally.enabled else None


SINKS.register("tally", _build, section=TallyConfig, order=50)
'''

WITH_SINK = """
import sys
import exporters.sinks
exporters.sinks.__path__.append(sys.argv[1])
from agent.config import loads
from agent.runtime import Agent
sinks = Agent(loads(sys.argv[2]), serve_http=False).build_sinks()
for sink in sinks:
    sink.write([])
print(" ".join(s.name for s in sinks))
"""


def test_a_sink_module_alone_adds_a_sink(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "tally.py").write_text(SINK)
    toml = f'[store]\nenabled = false\n[tally]\npath = "{tmp_path}/tally.txt"\n'
    out = _run(WITH_SINK, str(plugins), toml)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["tally"]
    assert (tmp_path / "tally.txt").read_text() == "0\n"


def test_a_sink_table_present_turns_on_a_sink_that_is_off_by_default(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        loads('[influxdb]\nurl = "ftp://db"\n')
    assert str(err.value) == (
        "<config>: influxdb.url: must start with http:// or https://, got 'ftp://db'"
        " ([influxdb] is present, so it is on; write enabled = false to keep it off)"
    )
    off = loads('[influxdb]\nenabled = false\nurl = "http://db:8086"\n')
    assert not off.influxdb.enabled
    on = loads('[influxdb]\nurl = "http://db:8086"\napi = "v1"\ndatabase = "sci"\n')
    assert on.influxdb.enabled
