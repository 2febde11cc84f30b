"""Grid zones that say whose value they are, and hostile or broken grid APIs.

Zones the builtin data does not hold get their parent country's value, flagged; unknown
zones are errors with close matches, in ``intensity``, ``run`` and ``doctor`` alike.
Providers run against real loopback HTTP servers (``tests/http_replay.py``) answering
implausible values or trickling their answer; the chain must fall back to the next
provider, say so, and never hand the bad value on.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.config import (
    CarbonAwareConfig,
    ConfigError,
    ElectricityMapsConfig,
    GridConfig,
    UkGridConfig,
    WattTimeConfig,
)
from agent.grid import build_chain
from agent.grid.base import ProviderError
from agent.grid.builtin import BuiltinProvider
from agent.grid.carbonaware import CarbonAwareProvider
from agent.grid.chain import IntensityChain
from agent.grid.command import intensity_command
from agent.grid.csvfile import CsvProvider
from agent.grid.electricitymaps import ElectricityMapsProvider
from agent.grid.http import http_json
from agent.grid.static import StaticProvider
from agent.grid.ukgrid import UkGridProvider
from agent.grid.watttime import WattTimeProvider
from devtools.servers import CaptureServer
from tests.http_replay import ReplayServer, Reply, fixture, replay_server
from tests.server_fixtures import self_signed_certificate

LOGGER = "sci_agent.grid"
EM_PATH = "/v3/carbon-intensity/latest"
NOW = datetime(2024, 5, 21, 14, 10, tzinfo=UTC)  # ten minutes after the fixtures' values
FR = 56.039  # France in the builtin data (Our World in Data 2023)


@pytest.fixture
def server() -> Iterator[ReplayServer]:
    with replay_server() as s:
        yield s


def em(server: ReplayServer, timeout_s: float = 2.0) -> ElectricityMapsProvider:
    config = ElectricityMapsConfig(base_url=server.url + "/v3", token="t")
    return ElectricityMapsProvider(config, timeout_s)


def em_answer(**fields: object) -> dict[str, object]:
    """The fixture's latest value, timed five minutes ago unless ``fields`` say otherwise."""
    return {**fixture("electricitymaps-latest.json"), "datetime": _ago(5), **fields}


def _ago(minutes: float) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat()


# -- zones --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "parent"),
    [("FR-COR", "FR"), ("US-CA", "US"), ("DE-X", "DE"), ("US-CAL-CISO", "US"), ("fr-cor", "FR")],
)
def test_a_sub_zone_gets_its_parents_value_flagged(zone: str, parent: str) -> None:
    out, code = intensity_command(GridConfig(), zone, None, as_json=True)
    data = json.loads(out)
    own = BuiltinProvider().fetch(parent)
    assert code == 0
    assert data["zone"] == zone and data["value_zone"] == parent
    assert data["gco2_per_kwh"] == own.gco2_per_kwh and data["fallback"] is True
    assert own.fallback is False and own.value_zone is None


def test_a_country_is_its_own_value() -> None:
    for zone in ("FR", "FRA", "WORLD"):
        data = json.loads(intensity_command(GridConfig(), zone, None, as_json=True)[0])
        assert (data["value_zone"], data["fallback"]) == (zone, False)
    text, _ = intensity_command(GridConfig(), "FR-COR", None, as_json=False)
    assert text.startswith("FR-COR (value of FR)  56 gCO2e/kWh  provider=builtin")
    assert text.endswith("fallback=yes")


def test_the_chain_keeps_whose_value_it_is() -> None:
    value = build_chain(GridConfig(zone="FR-COR")).current()
    assert (value.zone, value.value_zone, value.of_zone) == ("FR-COR", "FR", "FR")
    assert (value.gco2_per_kwh, value.fallback) == (FR, True)


def test_an_unknown_zone_names_the_key_and_close_matches() -> None:
    with pytest.raises(ConfigError, match=r"^--zone: unknown grid zone 'Frnace'.*FR \(France\)"):
        intensity_command(GridConfig(), "Frnace", None, False)
    with pytest.raises(ConfigError, match=r"^grid\.zone: unknown grid zone 'Germany'.*DE \("):
        build_chain(GridConfig(zone="Germany"))
    with pytest.raises(ConfigError, match=r"^grid\.zone: unknown grid zone 'DEU-X'.*DE \("):
        build_chain(GridConfig(zone="DEU-X"))
    with pytest.raises(ConfigError, match=r"grid zone 'FR-'.*did you mean FR \(France\)\?$"):
        build_chain(GridConfig(zone="FR-"))


def agent_config(tmp_path: Path, grid: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f'[store]\npath = "{tmp_path}/store.db"\n[sensors.rapl]\nroot = "{tmp_path}/none"\n'
        f"[sensors.nvml]\nenabled = false\n[grid]\n{grid}\n",
        encoding="utf-8",
    )
    return path


def sci_agent(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "agent", "--config", str(config), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def test_doctor_fails_on_a_zone_run_rejects(tmp_path: Path) -> None:
    config = agent_config(tmp_path, 'zone = "Frnace"')
    once = sci_agent(config, "once", "--interval", "0.05")
    assert once.returncode == 2 and "grid.zone: unknown grid zone 'Frnace'" in once.stderr
    doctor = sci_agent(config, "doctor")
    assert doctor.returncode == 1
    assert "grid:     FAILS  grid.zone: unknown grid zone 'Frnace'" in doctor.stdout
    assert "did you mean FR (France)?" in doctor.stdout


def test_doctor_shows_a_parents_value(tmp_path: Path) -> None:
    doctor = sci_agent(agent_config(tmp_path, 'zone = "FR-COR"'), "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "zone FR-COR: 56 gCO2e/kWh from builtin" in doctor.stdout
    assert "the value of FR), a fallback value" in doctor.stdout


# -- implausible values -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (em_answer(carbonIntensity=-500), "-500 gCO2e/kWh is outside 0-5000"),
        (em_answer(carbonIntensity=1e308), "1e+308 gCO2e/kWh is outside 0-5000"),
        (em_answer(carbonIntensity=5000.5), "5000.5 gCO2e/kWh is outside 0-5000"),
        (f'{{"carbonIntensity": NaN, "datetime": "{_ago(5)}"}}', "is not a number: nan"),
        (f'{{"carbonIntensity": 1e999, "datetime": "{_ago(5)}"}}', "is not a number: inf"),
        (em_answer(datetime="2999-01-01T00:00:00Z"), "timed 2999-01-01T00:00:00+00:00, in the"),
        (em_answer(datetime=_ago(-30)), "in the future"),
    ],
)
def test_an_implausible_value_falls_back_and_is_never_used(
    server: ReplayServer, body: object, problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    server.route(EM_PATH, Reply(body))
    chain = IntensityChain([em(server), StaticProvider(100.0)], "DE")
    chain.refresh(force=True)
    value = chain.current()
    assert (value.provider, value.gco2_per_kwh, value.fallback) == ("static", 100.0, True)
    assert problem in chain.last_errors["electricitymaps"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("electricitymaps failed" in w and problem in w for w in warnings)
    for _ in range(3):
        chain.refresh()  # backing off: the bad value is never cached, never logged again
        assert chain.current().provider == "static"
    assert sum("electricitymaps failed" in r.getMessage() for r in caplog.records) == 1


def test_a_value_a_few_minutes_ahead_is_clock_skew(server: ReplayServer) -> None:
    server.route(EM_PATH, Reply(em_answer(datetime=_ago(-10))))
    chain = IntensityChain([em(server)], "DE")
    chain.refresh()
    assert (chain.current().provider, chain.current().gco2_per_kwh) == ("electricitymaps", 302)


def test_every_provider_parse_path_rejects_an_implausible_value(
    server: ReplayServer, tmp_path: Path
) -> None:
    uk = fixture("ukgrid-intensity.json")
    uk["data"][0]["intensity"]["actual"] = -1
    server.route("/intensity", Reply(uk))
    with pytest.raises(ProviderError, match=r"ukgrid: 'intensity.actual' is implausible: -1"):
        UkGridProvider(UkGridConfig(base_url=server.url), 2.0).fetch("GB")

    wt = fixture("watttime-forecast.json")
    wt["data"][0]["value"] = 20000  # lbs/MWh: 9,072 g/kWh
    server.route("/login", Reply(fixture("watttime-login.json")))
    server.route("/v3/forecast", Reply(wt))
    config = WattTimeConfig(base_url=server.url, username="u", password="p", region="CAISO_NORTH")
    with pytest.raises(ProviderError, match=r"watttime: 'value' is implausible: 9071.8"):
        WattTimeProvider(config, 2.0).fetch("US-CAL-CISO")

    ca = fixture("carbonaware-bylocation.json")
    for row in ca:
        row["rating"] = -3.5
    server.route("/emissions/bylocation", Reply(ca))
    with pytest.raises(ProviderError, match=r"carbonaware: 'rating' is implausible: -3.5"):
        CarbonAwareProvider(CarbonAwareConfig(base_url=server.url), 2.0).fetch("westeurope")

    path = tmp_path / "i.csv"
    path.write_text("time,gco2_per_kwh\n2024-05-21T13:00Z,6000\n", encoding="utf-8")
    with pytest.raises(ProviderError, match=r"line 2: bad gco2_per_kwh '6000'"):
        CsvProvider(str(path), now=lambda: NOW).fetch("FR")


def test_a_static_value_out_of_range_falls_back_to_builtin() -> None:
    chain = IntensityChain([StaticProvider(9999.0)], "FR")
    assert (chain.current().provider, chain.current().gco2_per_kwh) == ("builtin", FR)
    assert "implausible value: 9999" in chain.last_errors["static"]


def test_a_forecast_reaching_2999_is_skipped(server: ReplayServer) -> None:
    forecast = fixture("electricitymaps-forecast.json")
    forecast["forecast"][-1]["datetime"] = "2999-01-01T00:00:00Z"
    server.route("/v3/carbon-intensity/forecast", Reply(forecast))
    server.route("/intensity/2024-05-21T14:10Z/fw48h", Reply(fixture("ukgrid-fw48h.json")))
    uk = UkGridProvider(UkGridConfig(base_url=server.url), 2.0, now=lambda: NOW)
    chain = IntensityChain([em(server), uk], "GB")
    values = chain.forecast()
    assert {v.provider for v in values} == {"ukgrid"} and all(v.fallback for v in values)


def test_an_agent_cycle_never_sees_a_negative_intensity(server: ReplayServer) -> None:
    from agent.config import Config, NvmlConfig, RaplConfig, SensorsConfig, StoreConfig
    from agent.runtime import Agent

    server.route(EM_PATH, Reply(em_answer(carbonIntensity=-500)))
    grid = GridConfig(
        zone="DE",
        providers=("electricitymaps", "builtin"),
        electricitymaps=ElectricityMapsConfig(base_url=server.url + "/v3", token="t"),
    )
    config = Config(
        grid=grid,
        store=StoreConfig(enabled=False),
        sensors=SensorsConfig(rapl=RaplConfig(root="/nonexistent"), nvml=NvmlConfig(enabled=False)),
    )
    agent = Agent(config, serve_http=False)
    agent.start()
    try:
        agent.chain.refresh(force=True)
        result = agent.measure()
    finally:
        agent.stop()
    assert result.intensity is not None
    assert (result.intensity.provider, result.intensity.fallback) == ("builtin", True)
    assert result.intensity.gco2_per_kwh > 0
    assert all(s.intensity_gco2_per_kwh > 0 and s.operational_g >= 0 for s in result.sci)


# -- a whole-request deadline -------------------------------------------------------------------


@pytest.mark.parametrize("body_only", [False, True], ids=["status-line", "body"])
def test_a_trickling_server_times_out_and_the_next_provider_answers(
    server: ReplayServer, body_only: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # one byte every 0.25 s: each read is well within the 1 s socket timeout, so only a
    # deadline on the whole request stops it (the server hangs up after 4 s in any case)
    body = fixture("electricitymaps-latest.json")
    server.route(EM_PATH, Reply(body, trickle_s=0.25, trickle_body=body_only))
    server.route("/intensity", Reply(fixture("ukgrid-intensity.json")))
    uk = UkGridProvider(UkGridConfig(base_url=server.url), 1.0)
    chain = IntensityChain([em(server, timeout_s=1.0), uk], "GB")
    start = time.monotonic()
    chain.refresh()
    elapsed = time.monotonic() - start
    assert elapsed < 1.8, f"the refresh took {elapsed:.2f}s with grid.timeout_s = 1"
    value = chain.current()
    assert (value.provider, value.gco2_per_kwh, value.fallback) == ("ukgrid", 127, True)
    assert chain.last_errors["electricitymaps"] == (
        "timed out after 1s (grid.timeout_s, the whole request)"
    )
    assert "grid intensity provider electricitymaps failed: timed out after 1s" in caplog.text


def test_a_trickled_tls_handshake_ends_by_the_deadline() -> None:
    stop = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def trickle_a_server_hello() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)  # the ClientHello
                for byte in b"\x16\x03\x03\x40\x00" + b"\x02" * 40:  # a long record, slowly
                    conn.sendall(bytes([byte]))
                    if stop.wait(0.25):
                        return

        thread = threading.Thread(target=trickle_a_server_hello, daemon=True)
        thread.start()
        url = f"https://127.0.0.1:{listener.getsockname()[1]}/x"
        start = time.monotonic()
        try:
            with pytest.raises(ProviderError, match="timed out after 1s"):
                http_json("GET", url, timeout_s=1.0, provider="p")
            assert time.monotonic() - start < 1.8
        finally:
            stop.set()
            thread.join(5)


def test_a_slow_but_steady_answer_within_the_deadline_is_read(server: ReplayServer) -> None:
    body = b'{"ok": 1}'
    server.route("/x", Reply(body, trickle_s=0.02, trickle_body=True))
    assert http_json("GET", server.url + "/x", timeout_s=2.0, provider="p") == {"ok": 1}


def test_https_goes_through_the_deadline_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed_certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust it for the default context
    tls = CaptureServer(tls=(cert, key))
    try:
        tls.reply(200, '{"carbonIntensity": 12}')
        data = http_json("GET", tls.url + "/latest", timeout_s=2.0, provider="p")
        assert data == {"carbonIntensity": 12}
        assert not math.isnan(data["carbonIntensity"])
    finally:
        tls.close()


# -- whose value, downstream --------------------------------------------------------------------


def test_once_json_and_the_report_say_whose_value_it_is(tmp_path: Path) -> None:
    from agent import report
    from agent.attribution import attribute
    from agent.config import AppRule, Config, StoreConfig
    from agent.records import ComponentReading, CpuActivity, ProcessActivity
    from agent.records_json import to_json
    from agent.scoring import Scorer
    from exporters.sqlite_store import SqliteStore

    end = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    procs = [ProcessActivity(1, 1, "gunicorn", "web", 100, 1 << 30)]
    readings = [ComponentReading("cpu", "cpu", "model", 500.0)]
    measured = attribute(
        "h", end - timedelta(seconds=60), end, readings, CpuActivity(100, 200, 2), procs, 1 << 34
    )
    grid = build_chain(GridConfig(zone="FR-COR")).current()
    result = Scorer({"web": "request"}, 1000.0, 4.0, cpu_count=2).score(measured, grid, {"web": 5})
    once = to_json(result)["intensity"]
    assert (once["zone"], once["value_zone"], once["fallback"]) == ("FR-COR", "FR", True)

    store = SqliteStore(tmp_path / "store.db")
    store.open()
    store.write([result])
    store.close()
    config = Config(
        store=StoreConfig(path=str(tmp_path / "store.db")),
        apps=(AppRule(name="web", exe="x", unit="request"),),
    )
    built = report.build(config, "web", end - timedelta(hours=1), end + timedelta(minutes=1), None)
    (source,) = built.intensity_sources
    assert (source["zone"], source["value_zone"], source["fallback_intervals"]) == (
        "FR-COR",
        "FR",
        1,
    )
    assert "- FR-COR: builtin (average signal), 1 intervals, 1 of them fallback values; " in (
        built.to_markdown()
    )
    assert "the values of FR, its parent zone" in built.to_markdown()
