"""Configuration: defaults, every error names its key, exit status 2 from the CLI."""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import pytest

from agent import config
from agent.config import ConfigError


def test_no_config_gives_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(config.ENV_CONFIG, raising=False)
    cfg = config.load()
    assert cfg.host == socket.gethostname()
    assert cfg.interval_s == 5.0
    assert cfg.sensors.rapl.root == "/sys/class/powercap"
    assert cfg.store.retention_days == 30
    assert cfg.sensors.model.min_w_per_vcpu is None  # unset: CCF's row for this CPU


def test_full_config_decodes(tmp_path: Path) -> None:
    f = tmp_path / "a.toml"
    f.write_text(
        'host = "web-1"\ninterval_s = 2\n'
        '[sensors.rapl]\nroot = "/host/sys/class/powercap"\n'
        "[sensors.model]\ntdp_w = 120\n"
        '[store]\npath = "/tmp/x.db"\nretention_days = 7\n'
        '[[apps]]\nname = "web"\ncmdline = "gunicorn"\n'
        '[[apps]]\nname = "db"\nexe = "postgres"\nuser = "postgres"\n'
    )
    cfg = config.load(f)
    assert (cfg.host, cfg.interval_s, cfg.sensors.model.tdp_w) == ("web-1", 2.0, 120.0)
    assert [a.name for a in cfg.apps] == ["web", "db"]
    assert cfg.apps[1].user == "postgres"


def test_env_variable_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "b.toml"
    f.write_text("interval_s = 3\n")
    monkeypatch.setenv(config.ENV_CONFIG, str(f))
    assert config.load().interval_s == 3.0


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("intervall_s = 5", "intervall_s: unknown key"),
        ("interval_s = 'fast'", "interval_s: expected a number"),
        ("interval_s = -1", "interval_s: must be greater than 0"),
        ("[sensors.rapl]\nroot = 5", "sensors.rapl.root: expected a string"),
        ("[sensors.nvml]\nidle_w = 5", "sensors.nvml.idle_w: unknown key"),
        ("[sensors.model]\nmin_w_per_vcpu = 4", "sensors.model.max_w_per_vcpu"),
        ("[store]\ntop_processes = 1.5", "store.top_processes: expected an integer"),
        ("[[apps]]\ncmdline = 'x'", "apps[0].name: required"),
        ("[[apps]]\nname = 'web'", "apps[0]: give at least one of"),
        ("[[apps]]\nname = 'web'\ncmdline = '('", "apps[0].cmdline: invalid regular expression"),
        ("[[apps]]\nname = '_idle'\nexe = 'x'", "apps[0].name: names starting with '_'"),
        ("[[apps]]\nname='a'\nexe='x'\n[[apps]]\nname='a'\nexe='y'", "apps[1].name: 'a' is def"),
        ("apps = 3", "apps: expected an array of tables"),
        ("[log]\nlevel = 'loud'", "log.level: must be one of"),
        ("interval_s = ", "invalid TOML"),
    ],
)
def test_bad_values_name_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.loads(text)
    assert key in str(err.value)


def test_cli_exits_2_with_one_clear_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("[store]\nretention_days = 0\n")
    out = subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(f), "doctor"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"sci-agent: config error: {f}: store.retention_days: must be greater than 0, got 0.0"
    ]
    missing = subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(tmp_path / "nope.toml"), "once"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and "config file not found" in missing.stderr


# -- every number finite and in range, found by walking the dataclasses ---------------------

#: TOML values for required fields of array tables, so a table decodes and validates;
#: per table where one needs its own (an alert rule's metric must be a known one).
REQUIRED = {"app": '"base"', "url": '"http://127.0.0.1:1/metrics"', "metric": '"m"', "name": '"x"'}
REQUIRED_IN = {"alerts.rules": {"metric": '"host_watts"', "threshold": "1"}}
#: An app with a unit, for [[scrape]] tables to count into.
BASE = '[[apps]]\nname = "base"\nexe = "base"\nunit = "request"\n'


def _leaves(cls: type, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any, Any]]:
    """(path, type, field) of every leaf key; a ``[]`` suffix marks an array of tables."""
    hints = get_type_hints(cls)
    for f in fields(cls):
        hint = hints[f.name]
        if get_origin(hint) in (Union, UnionType):
            hint = next(a for a in get_args(hint) if a is not type(None))
        if is_dataclass(hint):
            yield from _leaves(hint, (*path, f.name))  # type: ignore[arg-type]
        elif get_origin(hint) is tuple and is_dataclass(get_args(hint)[0]):
            yield from _leaves(get_args(hint)[0], (*path, f.name + "[]"))
        else:
            yield (*path, f.name), hint, f


def _item_class(names: list[str]) -> Any:
    """The dataclass of the array of tables at ``names`` (e.g. ["alerts", "rules"])."""
    cls: Any = config.Config
    for name in names:
        hint = get_type_hints(cls)[name]
        cls = get_args(hint)[0] if get_origin(hint) is tuple else hint
    return cls


def _toml(path: tuple[str, ...], value: str) -> tuple[str, str]:
    """A config setting the key at ``path`` to the TOML ``value``, and the key's dotted name."""
    *tables, leaf = path
    if not tables:
        return f"{leaf} = {value}\n{BASE}", leaf
    array = next((i for i, t in enumerate(tables) if t.endswith("[]")), None)
    if array is not None:
        names = [t.removesuffix("[]") for t in tables[: array + 1]]
        name = ".".join(names)
        index = 1 if name == "apps" else 0
        given = {**REQUIRED, **REQUIRED_IN.get(name, {})}
        required = "".join(
            f"{f.name} = {given.get(f.name, chr(34) + 'x' + chr(34))}\n"
            for f in fields(_item_class(names))
            if f.default is MISSING and f.default_factory is MISSING and f.name != leaf
        )
        return f"{BASE}[[{name}]]\n{required}{leaf} = {value}\n", f"{name}[{index}].{leaf}"
    return f"{BASE}[{'.'.join(tables)}]\n{leaf} = {value}\n", ".".join(path)


NUMBERS = [p for p, hint, _ in _leaves(config.Config) if hint in (int, float)]
FLOATS = [p for p, hint, _ in _leaves(config.Config) if hint is float]
SECRET_NAME = re.compile(r"(^|_)(token|password|secret)$")
SECRETS = [
    p
    for p, hint, f in _leaves(config.Config)
    if hint is str and (SECRET_NAME.search(p[-1]) or not f.repr)
]
#: Numbers that may be negative (an alert on a falling SCI change: threshold = -20).
SIGNED = [("alerts", "rules[]", "threshold"), ("alerts", "rules[]", "clear_threshold")]
PATHS = [
    ("sensors", "rapl", "root"),
    ("procfs", "root"),
    ("procfs", "sys_root"),
    ("store", "path"),
    ("grid", "csv", "path"),
    ("spool", "dir"),
    ("jsonl", "path"),
]


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(path).replace("[]", "")


def test_the_walk_finds_the_keys_it_must() -> None:
    assert {("sci", "pue"), ("interval_s",), ("scrape[]", "interval_s")} <= set(FLOATS)
    assert {("embodied", "lifespan_years"), ("sensors", "model", "max_w_per_vcpu")} <= set(FLOATS)
    assert {("dashboard", "port"), ("store", "top_processes")} <= set(NUMBERS)
    assert {("http", "token"), ("influxdb", "password"), ("dashboard", "influx_token")} <= set(
        SECRETS
    )
    assert set(PATHS) <= {p for p, hint, _ in _leaves(config.Config) if hint is str}


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "+inf", "+nan"])
@pytest.mark.parametrize("path", NUMBERS, ids=_dotted)
def test_nan_and_inf_are_refused_in_every_number(path: tuple[str, ...], value: str) -> None:
    text, key = _toml(path, value)
    with pytest.raises(ConfigError) as err:
        config.loads(text)
    if path in FLOATS:
        shown = value.lstrip("+")
        assert f"{key}: must be a finite number, got {shown}" in str(err.value)
    else:
        assert f"{key}: expected an integer" in str(err.value)


@pytest.mark.parametrize("path", NUMBERS, ids=_dotted)
def test_every_number_has_an_upper_bound(path: tuple[str, ...]) -> None:
    text, key = _toml(path, "1e300" if path in FLOATS else str(2**62))
    with pytest.raises(ConfigError) as err:
        config.loads(text)
    assert f"{key}: must be at most" in str(err.value)


@pytest.mark.parametrize("path", [p for p in NUMBERS if p not in SIGNED], ids=_dotted)
def test_every_number_has_a_lower_bound(path: tuple[str, ...]) -> None:
    text, key = _toml(path, "-1")
    with pytest.raises(ConfigError) as err:
        config.loads(text)
    assert str(err.value).startswith(f"<config>: {key}: must be")


@pytest.mark.parametrize("path", SIGNED, ids=_dotted)
def test_signed_numbers_are_bounded_below_too(path: tuple[str, ...]) -> None:
    assert config.loads(_toml(path, "-1")[0]).alerts.rules  # -1 is a fine threshold
    text, key = _toml(path, "-1e300")
    with pytest.raises(ConfigError) as err:
        config.loads(text)
    assert f"{key}: must be" in str(err.value)


def test_an_integer_beyond_a_float_is_refused_not_a_traceback() -> None:
    with pytest.raises(ConfigError, match="interval_s: must be a finite number"):
        config.loads("interval_s = 1" + "0" * 400)


def test_a_config_built_in_code_is_checked_too() -> None:
    with pytest.raises(ConfigError, match=re.escape("sci.pue: must be a finite number, got nan")):
        config.validate(config.Config(sci=config.SciConfig(pue=math.nan)))
    model = config.ModelConfig(min_w_per_vcpu=math.inf, max_w_per_vcpu=math.inf)
    with pytest.raises(
        ConfigError, match=re.escape("sensors.model.min_w_per_vcpu: must be a finite")
    ):
        config.validate(config.Config(sensors=config.SensorsConfig(model=model)))


@pytest.mark.parametrize(
    ("text", "refused"),
    [
        ("interval_s = 86400", "interval_s = 86401"),
        ("[sci]\npue = 5", "[sci]\npue = 5.01"),
        ("[grid]\nintensity_gco2_per_kwh = 5000", "[grid]\nintensity_gco2_per_kwh = 5000.5"),
        ("[embodied]\nlifespan_years = 50", "[embodied]\nlifespan_years = 51"),
        (
            "[sensors.model]\nmin_w_per_vcpu = 0\nmax_w_per_vcpu = 10000",
            "[sensors.model]\nmin_w_per_vcpu = 0\nmax_w_per_vcpu = 10001",
        ),
        ("[sensors.nvml]\nidle_watts = 0", "[sensors.nvml]\nidle_watts = 10001"),
        ("[store]\nretention_days = 36500", "[store]\nretention_days = 36501"),
        ("[grid]\ntimeout_s = 3600", "[grid]\ntimeout_s = 3601"),
        ("[dashboard]\nport = 65535", "[dashboard]\nport = 65536"),
        ("[http]\nmax_body_bytes = 1073741824", "[http]\nmax_body_bytes = 1073741825"),
    ],
)
def test_documented_bounds_are_inclusive(text: str, refused: str) -> None:
    config.loads(text)
    with pytest.raises(ConfigError, match="must be at most"):
        config.loads(refused)


def test_cli_exits_2_on_nan_without_a_traceback(tmp_path: Path) -> None:
    f = tmp_path / "nan.toml"
    f.write_text("[sci]\npue = nan\n")
    out = run_cli(f, "doctor")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"sci-agent: config error: {f}: sci.pue: must be a finite number, got nan"
    ]


# -- secrets are never echoed ---------------------------------------------------------------

WRONG = [
    ("12345678", "12345678", "an integer"),
    ("true", "True", "a boolean"),
    ("3.25", "3.25", "a number"),
    ('["hunter2"]', "hunter2", "an array"),
    ('{ a = "hunter2" }', "hunter2", "a table"),
    ("1979-05-27T07:32:00Z", "1979", "a date-time"),
]


@pytest.mark.parametrize(("value", "secret", "kind"), WRONG, ids=[w[2] for w in WRONG])
@pytest.mark.parametrize("path", SECRETS, ids=_dotted)
def test_a_secret_of_the_wrong_type_is_not_echoed(
    path: tuple[str, ...], value: str, secret: str, kind: str
) -> None:
    text, key = _toml(path, value)
    with pytest.raises(ConfigError) as err:
        config.loads(text)
    message = str(err.value)
    assert f"{key}: expected a string, got {kind} (value hidden)" in message
    assert secret not in message


def test_other_keys_still_show_the_wrong_value() -> None:
    with pytest.raises(
        ConfigError, match=re.escape("sensors.rapl.root: expected a string, got 12345678")
    ):
        config.loads("[sensors.rapl]\nroot = 12345678")


def test_credentials_in_a_url_are_not_echoed() -> None:
    for url in ("ftp://reader:hunter2@db:8086/", "http://reader:hunter2@db:99999/"):
        with pytest.raises(ConfigError) as err:
            config.loads(f'[influxdb]\nurl = "{url}"')
        assert "influxdb.url" in str(err.value) and "hunter2" not in str(err.value)
    with pytest.raises(ConfigError, match=re.escape("influxdb.url: not a URL")):
        config.loads('[influxdb]\nurl = "http://[::1"')


def test_cli_does_not_echo_a_secret(tmp_path: Path) -> None:
    f = tmp_path / "secret.toml"
    f.write_text("[http]\ntoken = 12345678\n")
    f.chmod(0o600)
    out = run_cli(f, "doctor")
    assert out.returncode == 2
    assert "http.token: expected a string, got an integer (value hidden)" in out.stderr
    assert "12345678" not in out.stderr + out.stdout


# -- a config holding secrets that others can read ------------------------------------------


@pytest.mark.parametrize(
    ("mode", "who"), [(0o644, "its group and others"), (0o640, "its group"), (0o604, "others")]
)
def test_a_readable_config_with_a_secret_draws_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int, who: str
) -> None:
    f = tmp_path / "agent.toml"
    f.write_text('[http]\ntoken = "hunter2-token"\n[grid.watttime]\npassword = "pw-hunter2"\n')
    f.chmod(mode)
    with caplog.at_level(logging.WARNING, logger="sci_agent.config"):
        config.load(f)
    [record] = [r for r in caplog.records if r.name == "sci_agent.config"]
    message = record.getMessage()
    assert record.levelno == logging.WARNING
    assert message == (
        f"{f}: mode {mode:04o} lets {who} read the secrets it holds "
        f"(grid.watttime.password, http.token); run chmod 600 {f}"
    )
    assert "hunter2" not in message


@pytest.mark.parametrize(
    ("mode", "text"),
    [
        (0o600, '[http]\ntoken = "hunter2-token"\n'),
        (0o400, '[influxdb]\nenabled = false\ntoken = "hunter2-token"\n'),
        (0o644, "interval_s = 5\n"),
        (0o644, '[http]\ntoken = ""\n'),
    ],
)
def test_no_warning_when_private_or_holding_no_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int, text: str
) -> None:
    f = tmp_path / "agent.toml"
    f.write_text(text)
    f.chmod(mode)
    with caplog.at_level(logging.DEBUG, logger="sci_agent.config"):
        config.load(f)
    assert not [r for r in caplog.records if r.name == "sci_agent.config"]


# -- paths: ~ expanded -------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS, ids=_dotted)
def test_tilde_is_expanded_in_every_path_key(
    path: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = config.loads(_toml(path, '"~/sci/x"')[0])
    value: Any = cfg
    for part in path:
        value = getattr(value, part)
    assert value == f"{tmp_path}/sci/x"


def test_other_paths_are_left_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/someone")
    cfg = config.loads(
        '[jsonl]\npath = "-"\n[store]\npath = "var/a~b.db"\n[[apps]]\nname = "w"\ncgroup = "~/x"\n'
    )
    assert (cfg.jsonl.path, cfg.store.path, cfg.apps[0].cgroup) == ("-", "var/a~b.db", "~/x")


def test_run_writes_under_home_not_a_literal_tilde(tmp_path: Path) -> None:
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    f = tmp_path / "agent.toml"
    f.write_text(
        'interval_s = 0.2\n[store]\npath = "~/sci/x.db"\n[jsonl]\npath = "~/sci/out.jsonl"\n'
        f'[sensors.nvml]\nenabled = false\n[sensors.rapl]\nroot = "{tmp_path}/no-powercap"\n'
        "[http]\nenabled = false\n"
    )
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent", "--config", str(f), "run"],
        cwd=cwd,
        env={**os.environ, "HOME": str(home)},
        stderr=subprocess.PIPE,
        text=True,
    )
    out = home / "sci" / "out.jsonl"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (out.is_file() and out.read_text()):
        time.sleep(0.1)
    agent.send_signal(signal.SIGTERM)
    _, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err
    assert (home / "sci" / "x.db").is_file() and out.read_text()
    assert not (cwd / "~").exists()


# -- files that are not UTF-8 ------------------------------------------------------------


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    f = tmp_path / "latin1.toml"
    f.write_bytes("# café\ninterval_s = 5\n".encode("latin-1"))
    with pytest.raises(ConfigError) as err:
        config.load(f)
    assert str(err.value) == f"{f}: not UTF-8 text (byte 0xe9 at offset 5)"
    out = run_cli(f, "doctor")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"sci-agent: config error: {f}: not UTF-8 text (byte 0xe9 at offset 5)"
    ]


def run_cli(
    f: Path, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m agent --config F ARGS``, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(f), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env,
    )


def test_procfs_full_scan_every_must_be_at_least_one() -> None:
    assert config.loads("[procfs]\nfull_scan_every = 5\n").procfs.full_scan_every == 5
    with pytest.raises(ConfigError, match=re.escape("procfs.full_scan_every: must be 1 or more")):
        config.loads("[procfs]\nfull_scan_every = 0\n")
