"""Grid intensity providers against a real HTTP server on loopback, and the chain.

Every provider talks to ``tests/http_replay.py`` (``ThreadingHTTPServer`` on 127.0.0.1)
replaying answers shaped like the real APIs' (``tests/fixtures/grid``).
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.config import (
    CarbonAwareConfig,
    ConfigError,
    CsvGridConfig,
    ElectricityMapsConfig,
    GridConfig,
    UkGridConfig,
    WattTimeConfig,
)
from agent.grid import build_chain, chain_zone, resolve_region
from agent.grid.base import HttpStatusError, Provider, ProviderError
from agent.grid.builtin import WORLD_GCO2_PER_KWH, BuiltinProvider
from agent.grid.carbonaware import CarbonAwareProvider
from agent.grid.chain import IntensityChain
from agent.grid.command import intensity_command
from agent.grid.csvfile import CsvProvider
from agent.grid.electricitymaps import ElectricityMapsProvider
from agent.grid.http import http_json
from agent.grid.static import StaticProvider
from agent.grid.ukgrid import UkGridProvider
from agent.grid.watttime import WattTimeProvider, lbs_per_mwh_to_g_per_kwh
from agent.records import IntensityValue, Signal
from tests.http_replay import ReplayServer, Reply, fixture, replay_server

LOGGER = "sci_agent.grid"
EM_TOKEN = "em-secret-token-5f3a9c"
WT_USER = "sci-agent-tests"
WT_PASSWORD = "wt-password-9d8e7f"
WT_TOKEN = fixture("watttime-login.json")["token"]
T0 = datetime(2024, 5, 21, 14, 0, tzinfo=UTC)
FAST = 0.3  # timeout_s for tests that expect a timeout


@pytest.fixture
def server() -> Iterator[ReplayServer]:
    with replay_server() as s:
        yield s


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class FakeProvider(Provider):
    """A provider answering from a list: a number, or a message to raise."""

    signal: Signal = "average"

    def __init__(self, name: str, *answers: float | str, ttl_s: float = 60.0) -> None:
        self.name = name
        self.ttl_s = ttl_s
        self.remote = True
        self.answers = list(answers)
        self.calls = 0

    def fetch(self, zone: str) -> IntensityValue:
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, str):
            raise ProviderError(self.name, answer)
        return IntensityValue(zone, answer, self.name, self.signal, T0)


def em(
    server: ReplayServer, timeout_s: float = 2.0, token: str = EM_TOKEN
) -> ElectricityMapsProvider:
    config = ElectricityMapsConfig(base_url=server.url + "/v3", token=token)
    return ElectricityMapsProvider(config, timeout_s)


def wt(server: ReplayServer, clock: FakeClock | None = None) -> WattTimeProvider:
    config = WattTimeConfig(
        base_url=server.url, username=WT_USER, password=WT_PASSWORD, region="CAISO_NORTH"
    )
    if clock is None:
        return WattTimeProvider(config, 2.0)
    return WattTimeProvider(config, 2.0, clock=clock)


# -- Electricity Maps ---------------------------------------------------------------------------


def test_electricitymaps_latest_sends_the_token_and_reads_the_value(server: ReplayServer) -> None:
    server.route("/v3/carbon-intensity/latest", Reply(fixture("electricitymaps-latest.json")))
    value = em(server).fetch("DE")
    assert value == IntensityValue("DE", 302.0, "electricitymaps", "average", T0)
    (request,) = server.requests
    assert request.headers["auth-token"] == EM_TOKEN
    assert request.query == {"zone": ["DE"]}


def test_electricitymaps_forecast_and_history(server: ReplayServer) -> None:
    server.route("/v3/carbon-intensity/forecast", Reply(fixture("electricitymaps-forecast.json")))
    server.route("/v3/carbon-intensity/history", Reply(fixture("electricitymaps-history.json")))
    provider = em(server)
    assert [v.gco2_per_kwh for v in provider.forecast("DE")] == [310, 295, 281]
    history = provider.history("DE")
    assert [(v.gco2_per_kwh, v.time.hour) for v in history] == [(340, 12), (321, 13)]
    assert all(r.headers["auth-token"] == EM_TOKEN for r in server.requests)


def test_electricitymaps_401_names_the_token_setting_never_its_value(
    server: ReplayServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.route(
        "/v3/carbon-intensity/latest",
        Reply(fixture("electricitymaps-unauthorized.json"), status=401),
    )
    with pytest.raises(HttpStatusError) as info:
        em(server).fetch("DE")
    message = str(info.value)
    assert message.startswith("electricitymaps: HTTP 401 Unauthorized")
    assert "check [grid.electricitymaps] token" in message
    assert EM_TOKEN not in message
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    chain = IntensityChain([em(server)], "DE")
    chain.refresh()
    assert "token" in chain.last_errors["electricitymaps"]
    assert EM_TOKEN not in caplog.text and EM_TOKEN not in repr(chain.last_errors)


def test_electricitymaps_missing_or_null_field(server: ReplayServer) -> None:
    latest = fixture("electricitymaps-latest.json")
    del latest["carbonIntensity"]
    server.route("/v3/carbon-intensity/latest", Reply(latest))
    with pytest.raises(ProviderError, match="response has no 'carbonIntensity' field"):
        em(server).fetch("DE")
    server.route("/v3/carbon-intensity/latest", Reply({**latest, "carbonIntensity": None}))
    with pytest.raises(ProviderError, match="'carbonIntensity' is null"):
        em(server).fetch("DE")


# -- HTTP failures (through http_json, as every provider uses it) ------------------------------


def test_timeout_names_the_limit(server: ReplayServer) -> None:
    server.route(
        "/v3/carbon-intensity/latest", Reply(fixture("electricitymaps-latest.json"), delay_s=3)
    )
    with pytest.raises(ProviderError) as info:
        em(server, timeout_s=FAST).fetch("DE")
    assert str(info.value) == (
        "electricitymaps: timed out after 0.3s (grid.timeout_s, the whole request)"
    )


def test_http_500(server: ReplayServer) -> None:
    server.route("/intensity", Reply("<html>oops</html>", status=500, content_type="text/html"))
    with pytest.raises(HttpStatusError) as info:
        UkGridProvider(UkGridConfig(base_url=server.url), 2.0).fetch("GB")
    assert info.value.status == 500
    assert str(info.value) == "ukgrid: HTTP 500 Internal Server Error"


def test_garbage_body_is_not_json(server: ReplayServer) -> None:
    server.route("/v3/forecast", Reply(b"\x00\xffnot json", content_type="text/plain"))
    server.route("/login", Reply(fixture("watttime-login.json")))
    with pytest.raises(ProviderError) as info:
        wt(server).fetch("US-CAL-CISO")
    assert str(info.value) == "watttime: response is not JSON (text/plain, 10 bytes)"


def test_connection_refused_names_the_host() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    with pytest.raises(ProviderError) as info:
        http_json("GET", f"http://127.0.0.1:{port}/x", timeout_s=FAST, provider="p")
    assert str(info.value) == f"p: cannot connect to 127.0.0.1:{port} (connection refused)"


def test_secrets_are_masked_in_error_details(server: ReplayServer) -> None:
    server.route("/x", Reply({"message": f"bad token {EM_TOKEN}"}, status=403))
    with pytest.raises(ProviderError) as info:
        http_json("GET", server.url + "/x", provider="p", secrets=[EM_TOKEN], auth_hint="hint")
    assert str(info.value) == "p: HTTP 403 Forbidden: bad token *** (hint)"


# -- National Grid ESO (ukgrid) -----------------------------------------------------------------


def test_ukgrid_national_uses_actual_then_forecast(server: ReplayServer) -> None:
    provider = UkGridProvider(UkGridConfig(base_url=server.url), 2.0)
    server.route("/intensity", Reply(fixture("ukgrid-intensity.json")))
    value = provider.fetch("GB")
    assert (value.gco2_per_kwh, value.time, value.zone) == (
        127,
        datetime(2024, 5, 21, 13, 30, tzinfo=UTC),
        "GB",
    )
    server.route("/intensity", Reply(fixture("ukgrid-intensity-forecast-only.json")))
    assert provider.fetch("GB").gco2_per_kwh == 129


def test_ukgrid_region_and_postcode(server: ReplayServer) -> None:
    server.route("/regional/regionid/13", Reply(fixture("ukgrid-regional.json")))
    server.route("/regional/postcode/RG10", Reply(fixture("ukgrid-postcode.json")))
    by_id = UkGridProvider(UkGridConfig(base_url=server.url, region_id=13), 2.0)
    assert by_id.fetch("GB").gco2_per_kwh == 152
    by_postcode = UkGridProvider(UkGridConfig(base_url=server.url, postcode="rg10 4ab"), 2.0)
    assert by_postcode.fetch("GB-ENG").gco2_per_kwh == 118


def test_ukgrid_forecasts(server: ReplayServer) -> None:
    server.route("/intensity/2024-05-21T14:00Z/fw48h", Reply(fixture("ukgrid-fw48h.json")))
    server.route(
        "/regional/intensity/2024-05-21T14:00Z/fw48h/regionid/13",
        Reply(fixture("ukgrid-regional-fw48h.json")),
    )
    national = UkGridProvider(UkGridConfig(base_url=server.url), 2.0, now=lambda: T0)
    assert [v.gco2_per_kwh for v in national.forecast("GB")] == [129, 125, 122]
    regional = UkGridProvider(UkGridConfig(base_url=server.url, region_id=13), 2.0, now=lambda: T0)
    assert [v.gco2_per_kwh for v in regional.forecast("GB")] == [150, 146]


def test_ukgrid_refuses_zones_outside_great_britain(server: ReplayServer) -> None:
    with pytest.raises(ProviderError, match="covers Great Britain only, not zone 'FR'"):
        UkGridProvider(UkGridConfig(base_url=server.url), 2.0).fetch("FR")
    assert server.requests == []


# -- WattTime -------------------------------------------------------------------------------------


def test_watttime_converts_lbs_per_mwh_and_sends_the_token(server: ReplayServer) -> None:
    server.route("/login", Reply(fixture("watttime-login.json")))
    server.route("/v3/forecast", Reply(fixture("watttime-forecast.json")))
    provider = wt(server)
    value = provider.fetch("US-CAL-CISO")
    assert value.gco2_per_kwh == pytest.approx(453.59237)
    assert (value.signal, value.provider, value.time) == ("marginal", "watttime", T0)
    assert [round(v.gco2_per_kwh, 3) for v in provider.forecast("US-CAL-CISO")] == [
        round(980.5 * 0.45359237, 3),
        round(902.0 * 0.45359237, 3),
    ]
    login = server.hits("/login")[0]
    basic = base64.b64encode(f"{WT_USER}:{WT_PASSWORD}".encode()).decode()
    assert login.headers["authorization"] == f"Basic {basic}"
    data = server.hits("/v3/forecast")[0]
    assert data.headers["authorization"] == f"Bearer {WT_TOKEN}"
    assert data.query == {"region": ["CAISO_NORTH"], "signal_type": ["co2_moer"]}
    assert len(server.hits("/login")) == 1  # the token is cached


def test_lbs_per_mwh_conversion() -> None:
    assert lbs_per_mwh_to_g_per_kwh(1000) == pytest.approx(453.59237)
    assert lbs_per_mwh_to_g_per_kwh(0) == 0


def test_watttime_expired_token_logs_in_again_once(server: ReplayServer) -> None:
    server.route("/login", Reply(fixture("watttime-login.json")))
    server.route(
        "/v3/forecast",
        Reply(fixture("watttime-forecast.json")),
        Reply({"error": "expired"}, status=401),
        Reply(fixture("watttime-forecast.json")),
    )
    provider = wt(server)
    provider.fetch("X")
    assert provider.fetch("X").gco2_per_kwh == pytest.approx(453.59237)
    assert len(server.hits("/login")) == 2
    assert len(server.hits("/v3/forecast")) == 3


def test_watttime_second_401_is_an_error(server: ReplayServer) -> None:
    server.route("/login", Reply(fixture("watttime-login.json")))
    server.route("/v3/forecast", Reply({"error": "nope"}, status=401))
    provider = wt(server)
    with pytest.raises(HttpStatusError, match="401 Unauthorized even with a new token"):
        provider.fetch("X")
    assert len(server.hits("/login")) == 2
    assert len(server.hits("/v3/forecast")) == 2


def test_watttime_renews_the_token_before_30_minutes(server: ReplayServer) -> None:
    server.route("/login", Reply(fixture("watttime-login.json")))
    server.route("/v3/forecast", Reply(fixture("watttime-forecast.json")))
    clock = FakeClock()
    provider = wt(server, clock)
    provider.fetch("X")
    clock.t += 20 * 60
    provider.fetch("X")
    assert len(server.hits("/login")) == 1
    clock.t += 6 * 60
    provider.fetch("X")
    assert len(server.hits("/login")) == 2


def test_watttime_bad_login_never_shows_credentials(
    server: ReplayServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.route("/login", Reply({"error": f"bad password {WT_PASSWORD}"}, status=401))
    provider = wt(server)
    with pytest.raises(HttpStatusError) as info:
        provider.fetch("X")
    assert "check [grid.watttime] username and password" in str(info.value)
    chain = IntensityChain([provider], "US-CAL-CISO")
    chain.refresh()
    basic = base64.b64encode(f"{WT_USER}:{WT_PASSWORD}".encode()).decode()
    seen = str(info.value) + caplog.text + repr(chain.last_errors)
    assert "watttime" in caplog.text
    for secret in (WT_PASSWORD, basic, WT_TOKEN):
        assert secret not in seen


def test_watttime_rejects_other_units(server: ReplayServer) -> None:
    answer = fixture("watttime-forecast.json")
    answer["meta"]["units"] = "percentile"
    server.route("/login", Reply(fixture("watttime-login.json")))
    server.route("/v3/forecast", Reply(answer))
    with pytest.raises(ProviderError, match="unexpected units 'percentile'"):
        wt(server).fetch("X")


# -- Carbon Aware SDK -----------------------------------------------------------------------------


def test_carbonaware_takes_the_latest_rating_and_forecast(server: ReplayServer) -> None:
    server.route("/emissions/bylocation", Reply(fixture("carbonaware-bylocation.json")))
    server.route("/emissions/forecasts/current", Reply(fixture("carbonaware-forecast.json")))
    provider = CarbonAwareProvider(CarbonAwareConfig(base_url=server.url), 2.0, "westeurope")
    value = provider.fetch("NL")
    assert (value.gco2_per_kwh, value.time, value.zone) == (298.2, T0, "NL")
    assert server.requests[0].query == {"location": ["westeurope"]}
    forecast = provider.forecast("NL")
    assert [v.gco2_per_kwh for v in forecast] == [296.7, 291.0, 280.4]  # sorted by time


def test_carbonaware_empty_answer(server: ReplayServer) -> None:
    server.route("/emissions/bylocation", Reply([]))
    provider = CarbonAwareProvider(CarbonAwareConfig(base_url=server.url), 2.0)
    with pytest.raises(ProviderError, match="no emissions data for location 'NL'"):
        provider.fetch("NL")


# -- csv, static, builtin -----------------------------------------------------------------------


def write_csv(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_csv_current_and_forecast(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "i.csv",
        "time,gco2_per_kwh,signal\n"
        "2024-05-21T15:00:00Z,90,\n"
        "2024-05-21T13:00:00Z,120,average\n"
        "2024-05-21T14:00:00+00:00,100,marginal\n",
    )
    provider = CsvProvider(path, now=lambda: T0)
    value = provider.fetch("FR")
    assert (value.gco2_per_kwh, value.time, value.signal) == (100, T0, "marginal")
    assert [v.gco2_per_kwh for v in provider.forecast("FR")] == [90]


def test_csv_bad_line_is_named(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "i.csv", "time,gco2_per_kwh\n2024-05-21T13:00Z,120\n2024-05-21T14:00Z,abc\n"
    )
    with pytest.raises(ProviderError) as info:
        CsvProvider(path, now=lambda: T0).fetch("FR")
    assert str(info.value) == (
        f"csv: {path} line 3: bad gco2_per_kwh 'abc' (expected a number from 0 to 5000)"
    )
    write_csv(tmp_path / "j.csv", "time,gco2_per_kwh\nyesterday,1\n")
    with pytest.raises(ProviderError, match="line 2: bad time 'yesterday'"):
        CsvProvider(str(tmp_path / "j.csv")).fetch("FR")
    write_csv(tmp_path / "k.csv", "when,gco2_per_kwh\n")
    with pytest.raises(ProviderError, match="line 1: missing column time"):
        CsvProvider(str(tmp_path / "k.csv")).fetch("FR")


def test_csv_reloads_when_the_file_changes(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "i.csv", "time,gco2_per_kwh\n2024-05-21T13:00Z,120\n")
    provider = CsvProvider(path, now=lambda: T0)
    assert provider.fetch("FR").gco2_per_kwh == 120
    write_csv(tmp_path / "i.csv", "time,gco2_per_kwh\n2024-05-21T13:30Z,80.5\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert provider.fetch("FR").gco2_per_kwh == 80.5


def test_csv_missing_file_and_only_future_rows(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match=r"cannot read .*No such file"):
        CsvProvider(str(tmp_path / "none.csv")).fetch("FR")
    path = write_csv(tmp_path / "i.csv", "time,gco2_per_kwh\n2024-05-21T15:00Z,1\n")
    with pytest.raises(ProviderError, match="no row at or before now"):
        CsvProvider(path, now=lambda: T0).fetch("FR")


def test_static() -> None:
    value = StaticProvider(123.0, now=lambda: T0).fetch("FR")
    assert value == IntensityValue("FR", 123.0, "static", "average", T0)


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        ("FR", 56.039),
        ("FRA", 56.039),
        ("fr", 56.039),
        ("US-CAL-CISO", 369.473),
        ("DK-DK1", 151.65),
        ("GB", 237.589),
        ("UK", 237.589),
        ("SE-SE3", 40.695),
    ],
)
def test_builtin_resolves_countries_and_subzones(zone: str, expected: float) -> None:
    value = BuiltinProvider().fetch(zone)
    assert value.gco2_per_kwh == expected
    assert value.zone == zone  # the zone asked, not its country
    assert value.signal == "average"
    assert value.time == datetime(2023, 1, 1, tzinfo=UTC)


def test_builtin_world_and_unknown_zones() -> None:
    assert BuiltinProvider().fetch("WORLD").gco2_per_kwh == WORLD_GCO2_PER_KWH
    with pytest.raises(ProviderError, match="unknown grid zone 'XX': use an ISO 3166"):
        BuiltinProvider().fetch("XX")
    with pytest.raises(ProviderError, match="unknown grid zone 'FRA-X'"):
        BuiltinProvider().fetch("FRA-X")
    with pytest.raises(ProviderError, match=r"no yearly intensity for Monaco \(MCO\)"):
        BuiltinProvider().fetch("MC")


def test_region_mapping() -> None:
    assert resolve_region("aws:eu-west-3") == "FR"
    assert resolve_region("AWS:us-east-1") == "US-MIDA-PJM"
    assert resolve_region("gcp:europe-west1") == "BE"
    assert resolve_region("azure:westeurope") == "NL"
    with pytest.raises(
        ConfigError, match=r"grid.region: unknown aws region 'eu-nowhere-1'; known: .*eu-west-3"
    ):
        resolve_region("aws:eu-nowhere-1")
    with pytest.raises(ConfigError, match=r"grid\.region: expected CLOUD:REGION"):
        resolve_region("eu-west-3")


def test_every_cloud_region_resolves_in_the_builtin_data() -> None:
    from agent.grid.data import cloud_regions

    for region in cloud_regions().values():
        assert BuiltinProvider().fetch(region.zone).gco2_per_kwh > 0


# -- the chain ----------------------------------------------------------------------------------


def test_chain_first_provider_is_not_a_fallback() -> None:
    chain = IntensityChain([FakeProvider("a", 100.0), FakeProvider("b", 200.0)], "FR")
    chain.refresh()
    assert (chain.current().provider, chain.current().fallback) == ("a", False)


def test_chain_falls_through_a_dead_provider(server: ReplayServer) -> None:
    server.route("/v3/carbon-intensity/latest", Reply("boom", status=500))
    server.route("/intensity", Reply(fixture("ukgrid-intensity.json")))
    chain = IntensityChain(
        [em(server), UkGridProvider(UkGridConfig(base_url=server.url), 2.0)], "GB"
    )
    chain.refresh()
    value = chain.current()
    assert (value.provider, value.gco2_per_kwh, value.fallback) == ("ukgrid", 127, True)
    assert chain.last_errors == {"electricitymaps": "HTTP 500 Internal Server Error"}


def test_chain_falls_back_to_builtin_when_all_fail() -> None:
    chain = IntensityChain([FakeProvider("a", "down")], "FR")
    assert chain.current().provider == "builtin" and chain.current().fallback
    chain.refresh()
    assert (chain.current().provider, chain.current().fallback) == ("builtin", True)
    assert chain.providers == ["a", "builtin"]


def test_builtin_alone_is_not_a_fallback() -> None:
    chain = build_chain(GridConfig(zone="FR", providers=("builtin",)))
    assert chain.current() == BuiltinProvider().fetch("FR")
    assert chain.current().fallback is False


def test_a_dead_api_never_delays_current(server: ReplayServer) -> None:
    hold = threading.Event()
    server.route(
        "/v3/carbon-intensity/latest", Reply(fixture("electricitymaps-latest.json"), hold=hold)
    )
    chain = IntensityChain([em(server, timeout_s=10)], "DE")
    chain.start()
    try:
        assert server.received.wait(5)
        value = chain.current()  # the refresh thread is stuck in the held request
        assert not hold.is_set()
        assert (value.provider, value.fallback) == ("builtin", True)
        hold.set()
        deadline = time.monotonic() + 5
        while chain.current().provider != "electricitymaps" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (chain.current().provider, chain.current().fallback) == ("electricitymaps", False)
    finally:
        chain.stop()


def test_stale_value_is_flagged_then_gives_way_to_builtin() -> None:
    clock = FakeClock()
    provider = FakeProvider("a", 100.0, "down", ttl_s=60)
    chain = IntensityChain([provider], "FR", clock=clock, max_stale_s=3600)
    chain.refresh()
    assert chain.current().fallback is False
    clock.t += 61
    chain.refresh()
    value = chain.current()
    assert (value.provider, value.gco2_per_kwh, value.fallback) == ("a", 100.0, True)
    assert chain.last_errors == {"a": "down"}
    clock.t += 3600
    assert chain.current().provider == "builtin"


def test_a_fresh_fallback_beats_a_stale_preferred_value() -> None:
    clock = FakeClock()
    a, b = FakeProvider("a", 100.0, "down", ttl_s=60), FakeProvider("b", 200.0, ttl_s=600)
    chain = IntensityChain([a, b], "FR", clock=clock)
    chain.refresh()
    clock.t += 61
    chain.refresh()
    assert (chain.current().provider, chain.current().fallback) == ("b", True)


def test_refresh_renews_before_expiry_and_backs_off_after_failure() -> None:
    clock = FakeClock()
    a = FakeProvider("a", 100.0, ttl_s=100)
    chain = IntensityChain([a], "FR", clock=clock)
    chain.refresh()
    clock.t += 50
    chain.refresh()
    assert a.calls == 1  # still current
    clock.t += 30
    chain.refresh()
    assert a.calls == 2  # due at 75 % of the TTL
    dead = FakeProvider("dead", "down")
    chain = IntensityChain([dead], "FR", clock=clock)
    chain.refresh()
    chain.refresh()
    assert dead.calls == 1  # backing off
    clock.t += 31
    chain.refresh()
    assert dead.calls == 2
    chain.refresh(force=True)
    assert dead.calls == 3


def test_each_error_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    a = FakeProvider("a", "down", "down", "other", 1.0)
    chain = IntensityChain([a], "FR")
    for _ in range(3):
        chain.refresh(force=True)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "a failed: down" in warnings[0] and "a failed: other" in warnings[1]
    chain.refresh(force=True)
    assert chain.last_errors == {}
    assert "grid intensity provider a works again" in caplog.text


def test_local_providers_are_ready_at_construction(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "i.csv", "time,gco2_per_kwh\n2024-05-21T13:00Z,42\n")
    chain = build_chain(GridConfig(zone="FR", providers=("csv",), csv=CsvGridConfig(path=path)))
    assert (chain.current().provider, chain.current().gco2_per_kwh) == ("csv", 42)
    chain = build_chain(
        GridConfig(
            zone="FR",
            providers=("electricitymaps", "static"),
            intensity_gco2_per_kwh=7.0,
            electricitymaps=ElectricityMapsConfig(token="t", base_url="http://127.0.0.1:9"),
        )
    )
    assert (chain.current().provider, chain.current().fallback) == ("static", True)


def test_chain_forecast_skips_empty_and_failing(server: ReplayServer) -> None:
    server.route("/v3/carbon-intensity/forecast", Reply("down", status=503))
    server.route("/intensity/2024-05-21T14:00Z/fw48h", Reply(fixture("ukgrid-fw48h.json")))
    uk = UkGridProvider(UkGridConfig(base_url=server.url), 2.0, now=lambda: T0)
    chain = IntensityChain([em(server), uk], "GB")
    forecast = chain.forecast()
    assert [v.gco2_per_kwh for v in forecast] == [129, 125, 122]
    assert all(v.fallback for v in forecast)


def test_background_thread_stops() -> None:
    chain = IntensityChain([FakeProvider("a", 1.0)], "FR")
    chain.start()
    chain.start()  # idempotent
    chain.stop()
    assert chain.current().provider == "a"
    assert not [t for t in threading.enumerate() if t.name == "sci-agent-grid"]


# -- build_chain and the command -----------------------------------------------------------------


def test_chain_zone_resolution() -> None:
    assert chain_zone(GridConfig(zone="DE")) == "DE"
    assert chain_zone(GridConfig(region="gcp:europe-west4")) == "NL"
    assert chain_zone(GridConfig()) == "WORLD"
    assert chain_zone(GridConfig(providers=("ukgrid", "builtin"))) == "GB"
    assert build_chain(GridConfig()).current().gco2_per_kwh == WORLD_GCO2_PER_KWH


def test_build_chain_names_missing_settings() -> None:
    with pytest.raises(ConfigError, match=r"grid\.electricitymaps\.token: required"):
        build_chain(GridConfig(zone="FR", providers=("electricitymaps",)))
    with pytest.raises(ConfigError, match=r"grid\.watttime\.password: required"):
        build_chain(GridConfig(providers=("watttime",), watttime=WattTimeConfig(username="u")))
    with pytest.raises(ConfigError, match=r"grid\.zone: unknown grid zone 'ZZ'"):
        build_chain(GridConfig(zone="ZZ"))
    with pytest.raises(ConfigError, match="the ukgrid provider covers Great Britain only"):
        build_chain(GridConfig(zone="FR", providers=("ukgrid",)))
    with pytest.raises(ConfigError, match=r"grid\.region: unknown gcp region"):
        build_chain(GridConfig(region="gcp:mars-1"))


def test_builtin_listed_early_shadows_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    chain = build_chain(
        GridConfig(zone="FR", providers=("builtin", "static"), intensity_gco2_per_kwh=1.0)
    )
    assert chain.providers == ["builtin"]
    assert (chain.current().provider, chain.current().fallback) == ("builtin", False)
    assert "static after builtin are never used" in caplog.text


def test_intensity_command_text_and_json(server: ReplayServer) -> None:
    server.route(
        "/v3/carbon-intensity/latest",
        Reply(fixture("electricitymaps-unauthorized.json"), status=401),
    )
    config = GridConfig(
        providers=("electricitymaps", "builtin"),
        electricitymaps=ElectricityMapsConfig(base_url=server.url + "/v3", token=EM_TOKEN),
    )
    text, code = intensity_command(config, "FR", None, as_json=False)
    assert code == 0
    first, second = text.splitlines()
    assert first == (
        "FR  56 gCO2e/kWh  provider=builtin (Our World in Data 2023, yearly average)  "
        "signal=average  fallback=yes"
    )
    assert second.startswith("  electricitymaps failed: HTTP 401 Unauthorized")
    assert EM_TOKEN not in text
    out, code = intensity_command(config, None, "aws:eu-west-3", as_json=True)
    data = json.loads(out)
    assert data["zone"] == "FR" and data["gco2_per_kwh"] == 56.039 and data["fallback"] is True
    assert data["time"] == "2023-01-01T00:00:00+00:00"
    assert set(data["errors"]) == {"electricitymaps"} and EM_TOKEN not in out


def test_intensity_command_live_value(server: ReplayServer) -> None:
    server.route("/v3/carbon-intensity/latest", Reply(fixture("electricitymaps-latest.json")))
    config = GridConfig(
        providers=("electricitymaps",),
        electricitymaps=ElectricityMapsConfig(base_url=server.url + "/v3", token=EM_TOKEN),
    )
    text, code = intensity_command(config, "DE", None, as_json=False)
    assert (text, code) == (
        "DE  302 gCO2e/kWh  provider=electricitymaps (for 2024-05-21 14:00 UTC)  "
        "signal=average  fallback=no",
        0,
    )


def test_intensity_command_bad_input() -> None:
    with pytest.raises(ConfigError, match="--zone: unknown grid zone 'XX'"):
        intensity_command(GridConfig(), "XX", None, False)
    with pytest.raises(ConfigError, match="--region: unknown aws region 'nowhere'"):
        intensity_command(GridConfig(), None, "aws:nowhere", False)
    with pytest.raises(ConfigError, match="--zone: no yearly intensity for Monaco"):
        intensity_command(GridConfig(), "MC", None, False)


def test_values_are_immutable_records() -> None:
    value = BuiltinProvider().fetch("FR")
    assert replace(value, fallback=True).fallback and not value.fallback
    assert math.isinf(BuiltinProvider.ttl_s)
