"""The dashboard's data sources: the store by plain SQL, InfluxDB equal to the store,
hostile names escaped against a real influxd, bucket sizes, config and launch."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agent.config import Config, ConfigError
from agent.httpclient import redact_url
from dashboard import config as dash_config
from dashboard import launch
from dashboard.data.base import COLUMNS, DataSource, DataSourceError
from dashboard.data.influx_source import InfluxClient, InfluxSource
from dashboard.data.influxql import equals_any, ident, literal
from dashboard.data.sqlite_source import SqliteSource
from dashboard.forecast import greenest_window, window_mean
from dashboard.timerange import PRESETS, TimeRange, bucket_s_for
from devtools.servers import InfluxdServer, free_port
from tests import dashboard_data as data


@pytest.fixture(scope="module")
def end() -> int:
    return data.end_ms()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, end: int) -> Path:
    path = tmp_path_factory.mktemp("dash-store") / "store.db"
    data.fill(path, end)
    return path


@pytest.fixture(scope="module")
def filled(influxd: InfluxdServer, end: int) -> InfluxdServer:
    data.fill_influx(influxd, end)
    return influxd


@pytest.fixture(scope="module")
def sources(store: Path, filled: InfluxdServer) -> dict[str, DataSource]:
    client = InfluxClient(
        filled.url, filled.database, username=data.READER, password=data.READER_PASSWORD
    )
    return {"store": SqliteSource(store), "influxdb": InfluxSource(client)}


def window(end: int, hours: float = 6) -> TimeRange:
    return TimeRange.ending(end, hours * 3600)


# -- the store against plain SQL ---------------------------------------------------------


def test_app_totals_are_the_sums_of_the_store(store: Path, end: int) -> None:
    rng = window(end)
    totals = SqliteSource(store).app_totals(None, rng).set_index("app")
    for app in ("web", "api", "batch", "ml", *data.HOSTILE_APPS):
        row = totals.loc[app]
        assert math.isclose(row["energy_kwh"], data.sci_sum(store, "energy_kwh", rng, app=app))
        carbon = data.sci_sum(store, "operational_g + embodied_g", rng, app=app)
        units = data.sci_sum(store, "units", rng, app=app)
        assert math.isclose(row["carbon_g"], carbon)
        assert math.isclose(row["sci"], carbon / units)
    assert totals.loc["web", "unit"] == "request" and totals.loc["ml", "unit"] == "inference"


def test_sci_per_bucket_is_sum_over_sum_never_a_mean_of_ratios(store: Path, end: int) -> None:
    rng = window(end, 24)  # 5-minute buckets of 60-second intervals
    series = SqliteSource(store).sci_over_time(None, ["api"], rng)
    assert 250 <= len(series) <= 400
    row = series.iloc[len(series) // 2]
    lo = int(row["time"].timestamp() * 1000)
    hi = lo + rng.bucket_ms  # a bucket holds the interval ends in (lo, hi]
    where = "FROM sci WHERE app = 'api' AND ts_ms > ? AND ts_ms <= ?"
    carbon = data.one(store, f"SELECT sum(operational_g + embodied_g) {where}", (lo, hi))
    units = data.one(store, f"SELECT sum(units) {where}", (lo, hi))
    mean_of_ratios = data.one(store, f"SELECT avg(sci) {where}", (lo, hi))
    assert math.isclose(row["sci"], carbon / units)
    assert not math.isclose(row["sci"], mean_of_ratios, rel_tol=1e-6)
    assert math.isclose(row["units_per_s"], units / rng.bucket_s)


def test_hosts_last_seen_and_stale(store: Path, end: int) -> None:
    hosts = SqliteSource(store).hosts(end).set_index("host")
    assert hosts.loc["host-01", "last_ms"] == end
    assert hosts.loc["host-03", "last_ms"] == end - 7200 * 1000  # the stale host
    assert hosts.loc["host-01", "interval_s"] == data.INTERVAL_S


def test_model_estimated_components(store: Path, end: int) -> None:
    found = SqliteSource(store).estimated_components(None, window(end))
    model = found[found["source"] == "model"]
    assert set(model["host"]) == {"host-01"} and set(model["component"]) == {"cpu", "dram"}
    assert {"rapl", "nvml", "model"} == set(found["source"])


def test_a_missing_store_is_no_data(tmp_path: Path, end: int) -> None:
    src = SqliteSource(tmp_path / "nothing.db")
    assert src.hosts(end).empty and src.apps().empty
    assert src.sci_over_time(None, None, window(end)).empty
    assert list(src.app_totals(None, window(end)).columns) == list(COLUMNS["app_totals"])


# -- InfluxDB gives what the store gives ---------------------------------------------------

QUERIES = [
    ("hosts", lambda s, e, r: s.hosts(e)),
    ("apps", lambda s, e, r: s.apps()),
    ("zones", lambda s, e, r: s.zones()),
    ("power_by_component", lambda s, e, r: s.power_by_component(None, r)),
    ("app_totals", lambda s, e, r: s.app_totals(None, r)),
    ("sci_over_time", lambda s, e, r: s.sci_over_time(["host-01", "host-02"], None, r)),
    ("units_per_second", lambda s, e, r: s.units_per_second(None, "web", r)),
    ("energy_by_component", lambda s, e, r: s.energy_by_component(None, "ml", r)),
    ("operational_vs_embodied", lambda s, e, r: s.operational_vs_embodied(None, "api", r)),
    ("intensity_over_time", lambda s, e, r: s.intensity_over_time(None, r)),
    ("top_processes", lambda s, e, r: s.top_processes("host-02", r, 3)),
    ("idle_vs_active", lambda s, e, r: s.idle_vs_active("host-01", r)),
    ("estimated_components", lambda s, e, r: s.estimated_components(None, r)),
]


def _canonical(df: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    return df.sort_values(keys).reset_index(drop=True) if keys else df


@pytest.mark.parametrize("hours", [6, 24])
@pytest.mark.parametrize(("name", "run"), QUERIES, ids=[q[0] for q in QUERIES])
def test_influxdb_answers_like_the_store(
    sources: dict[str, DataSource], end: int, name: str, run: object, hours: int
) -> None:
    rng = window(end, hours)
    store = run(sources["store"], end, rng)  # type: ignore[operator]
    influx = run(sources["influxdb"], end, rng)  # type: ignore[operator]
    assert not store.empty, name
    assert list(influx.columns) == list(COLUMNS[name]) == list(store.columns)
    pd.testing.assert_frame_equal(
        _canonical(influx), _canonical(store), check_dtype=False, rtol=1e-9
    )


def test_influxdb_report_equals_the_store_report(sources: dict[str, DataSource], end: int) -> None:
    start, stop = end - 13 * 3600 * 1000 - 17_000, end - 600_000  # not on bucket boundaries
    cfg = Config()
    a = sources["store"].sci_report(cfg, "web", start, stop)
    b = sources["influxdb"].sci_report(cfg, "web", start, stop)
    for field, value in vars(a).items():
        other = getattr(b, field)
        if isinstance(value, float):
            assert math.isclose(value, other, rel_tol=1e-9), field
        else:
            assert value == other, field
    assert a.intensity_sources and any(s["fallback_intervals"] for s in a.intensity_sources)


# -- hostile names -------------------------------------------------------------------------


def test_literals_and_identifiers_are_escaped() -> None:
    assert literal("a'b") == "'a\\'b'"
    assert literal("c\\'") == "'c\\\\\\''"
    assert literal("x\ny") == "'x\\ny'"
    assert ident('we"ird') == '"we\\"ird"'
    assert equals_any("host", ["a", "b'"]) == "(\"host\" = 'a' OR \"host\" = 'b\\'')"
    assert equals_any("host", []) == "false"


@pytest.mark.parametrize("kind", ["store", "influxdb"])
def test_hostile_names_select_their_rows_and_nothing_else(
    sources: dict[str, DataSource], store: Path, end: int, kind: str
) -> None:
    src = sources[kind]
    rng = window(end)
    assert set(src.apps([data.HOSTILE_HOST])["app"]) == set(data.HOSTILE_APPS)
    for app in data.HOSTILE_APPS:
        series = src.sci_over_time(None, [app], rng)
        assert set(series["app"]) == {app}
        expected = data.sci_sum(store, "units", rng, app=app)
        assert math.isclose(series["units"].sum(), expected)
    # The injection attempt, as a name that does not exist: nothing, not everything.
    assert src.sci_over_time(None, ["x' OR app =~ /.*/ OR app = 'y"], rng).empty
    assert src.energy_by_component(None, "zz' OR '1'='1", rng).empty
    totals = src.app_totals([data.HOSTILE_HOST], rng)
    assert set(totals["app"]) == set(data.HOSTILE_APPS)
    grid = src.intensity_over_time([data.HOSTILE_ZONE], rng)
    assert set(grid["zone"]) == {data.HOSTILE_ZONE}
    assert grid["intervals"].sum() == rng.seconds // data.INTERVAL_S
    top = src.top_processes(data.HOSTILE_HOST, rng)
    assert set(top["app"]) == set(data.HOSTILE_APPS)
    assert data.HOSTILE_HOST in set(src.hosts(end)["host"])


# -- credentials and errors ----------------------------------------------------------------


def test_credentials_never_appear(filled: InfluxdServer) -> None:
    secret = "hunter2-" + "x" * 8
    client = InfluxClient(filled.url, filled.database, username=data.READER, password=secret)
    with pytest.raises(DataSourceError) as caught:
        InfluxSource(client).apps()
    assert "not authorised" in str(caught.value) and secret not in str(caught.value)
    assert secret not in repr(client)
    token = InfluxClient(filled.url, filled.database, token=secret)
    assert secret not in repr(token) and secret not in InfluxSource(token).describe()
    d = dash_config.DashboardConfig(influx_password=secret, influx_token=secret)
    assert secret not in repr(d)
    assert redact_url(f"http://u:{secret}@127.0.0.1:8086/x") == "http://***@127.0.0.1:8086/x"


def test_a_dead_influxdb_is_one_clear_error() -> None:
    client = InfluxClient(f"http://127.0.0.1:{free_port()}", "sci", timeout_s=2)
    with pytest.raises(DataSourceError, match="cannot connect"):
        InfluxSource(client).hosts(0)


def test_a_missing_database_is_no_data(filled: InfluxdServer) -> None:
    client = InfluxClient(
        filled.url, "not_there", username=filled.username, password=filled.password
    )
    assert InfluxSource(client).hosts(data.end_ms()).empty


# -- bucket sizes, forecast window -----------------------------------------------------------


@pytest.mark.parametrize("label", list(PRESETS))
def test_every_preset_gives_a_few_hundred_points(label: str) -> None:
    rng = TimeRange.ending(1_700_000_000_000, PRESETS[label])
    points = rng.seconds / rng.bucket_s
    assert points <= 401 and (points >= 150 or rng.bucket_s == 5)
    assert rng.start_ms % rng.bucket_ms == 0


def test_bucket_sizes() -> None:
    assert bucket_s_for(30 * 86400) == 7200
    assert bucket_s_for(7 * 86400) == 1800
    assert bucket_s_for(60, min_s=30) == 30
    assert bucket_s_for(365 * 86400) == 86400


def test_greenest_window() -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    times = [t0 + timedelta(hours=h) for h in range(8)]
    values = [300.0, 250, 90, 80, 300, 50, 400, 400]
    best = greenest_window(times, values, timedelta(hours=2))
    assert best is not None and best.start == times[2] and best.mean_gco2_per_kwh == 85
    one = greenest_window(times, values, timedelta(hours=1))
    assert one is not None and one.start == times[5]
    assert greenest_window(times, values, timedelta(hours=9)) is None
    assert window_mean(times, values, times[0], timedelta(minutes=90)) == pytest.approx(
        (300 * 60 + 250 * 30) / 90
    )


# -- config and launch ---------------------------------------------------------------------


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("SCI_AGENT_CONFIG", raising=False)
    yield


def test_dashboard_section_is_read_beside_the_agent_config(tmp_path: Path, no_env: None) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        'interval_s = 10\n[dashboard]\nsource = "influxdb"\ninflux_url = "http://db:8086"\n'
        'influx_token = "t0k"\nrefresh_s = 15\nport = 8600\n'
    )
    s = dash_config.load(path)
    assert s.config.interval_s == 10
    assert s.dashboard.source == "influxdb" and s.dashboard.refresh_s == 15.0
    assert s.dashboard.port == 8600 and s.dashboard.influx_token == "t0k"
    assert dash_config.load(None).dashboard == dash_config.DashboardConfig()


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("nope = 1", "dashboard.nope"),
        ('source = "csv"', "dashboard.source"),
        ("refresh_s = 0", "dashboard.refresh_s"),
        ("port = 70000", "dashboard.port"),
        ("port = true", "dashboard.port"),
        ('influx_url = "db:8086"', "dashboard.influx_url"),
    ],
)
def test_bad_dashboard_keys_are_named(tmp_path: Path, section: str, key: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[dashboard]\n{section}\n")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        dash_config.load(path)


def test_launch_command_binds_loopback_by_default(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    argv = launch.command(str(cfg), 8765, launch.DEFAULT_HOST)
    assert argv[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert argv[4].endswith("dashboard/app.py")
    assert argv[5:] == [
        "--server.address", "127.0.0.1", "--server.port", "8765", "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer",
        "--", "--config", str(cfg.resolve()),
    ]  # fmt: skip
    assert "--" not in launch.command(None, 8501, "0.0.0.0")


def test_launch_reports_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[dashboard]\nport = 0\n")
    assert launch.main(str(path), None, None) == 2
    assert "dashboard.port" in capsys.readouterr().err


def test_the_launcher_imports_nothing_heavy() -> None:
    """``sci-agent dashboard`` goes through dashboard.launch: no pandas/plotly/streamlit."""
    import subprocess

    code = (
        "import sys, dashboard.launch, dashboard.config; "
        "print(sorted(m for m in ('pandas', 'plotly', 'streamlit') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert out.stdout.strip() == "[]"


# -- idle vs active on real scored intervals: both sources, every share policy -------------


@pytest.mark.parametrize("policy", ["capacity", "full", "separate"])
def test_idle_vs_active_is_the_same_from_both_sources_under_every_policy(
    influxd: InfluxdServer, tmp_path: Path, policy: str
) -> None:
    """Idle is all static energy: the store's ``intervals.idle_j`` and InfluxDB's apps'
    allocated ``idle_j`` plus ``_idle`` give the same figure, whatever the policy."""
    from agent.attribution import attribute
    from agent.records import ComponentReading, CpuActivity, IntensityValue, ProcessActivity
    from agent.scoring import Scorer
    from dashboard.sample_data import send_influx
    from exporters.sqlite_store import SqliteStore

    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    grid = IntensityValue("FR", 50.0, "static", "average", start)
    scorer = Scorer({"web": "request"}, 1000.0, 4.0, policy)
    results = []
    for i in range(24):
        t0 = start + timedelta(seconds=5 * i)
        procs = [
            ProcessActivity(10, 1, "web", "web", 100 + 10 * i, 400 << 20),
            ProcessActivity(11, 1, "db", "db", 50, 1 << 30),
        ]
        readings = [
            ComponentReading("cpu0", "cpu", "rapl", 90.0 + i, None, 40.0, "learned"),
            ComponentReading("dram0", "dram", "rapl", 12.0, None, 8.0, "learned"),
        ]
        cpu = CpuActivity(180 + 10 * i, 1000, 2)
        r = attribute("parity", t0, t0 + timedelta(seconds=5), readings, cpu, procs, 16 << 30)
        results.append(scorer.score(r, grid, {"web": 20.0}))
    store = SqliteStore(tmp_path / "s.db")
    store.open()
    store.write(results)
    store.close()
    database = f"parity_{policy}"
    influxd.create_database(database)
    send_influx(influxd.url, database, results, influxd.username, influxd.password)
    client = InfluxClient(
        influxd.url, database, username=influxd.username, password=influxd.password
    )
    t0_ms = int(start.timestamp() * 1000)
    rng = TimeRange(t0_ms - 60_000, t0_ms + 300_000, 30_000)
    a = SqliteSource(tmp_path / "s.db").idle_vs_active("parity", rng)
    b = InfluxSource(client).idle_vs_active("parity", rng)
    assert not a.empty
    total_static = 24 * (40.0 + 8.0)
    assert math.isclose(float(a["idle_j"].sum()), total_static, rel_tol=1e-9)
    if policy == "full":  # apps carry the unattributed energy too: InfluxDB counts it as idle
        parts = ["active_j", "idle_j", "unattributed_j"]
        assert np.allclose(a[parts].sum(axis=1), b[parts].sum(axis=1), rtol=1e-9)
        assert np.allclose(b["active_j"], a["active_j"], rtol=1e-9)
        return
    pd.testing.assert_frame_equal(_canonical(b), _canonical(a), check_dtype=False, rtol=1e-9)
