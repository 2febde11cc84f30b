"""Every dashboard page under Streamlit's AppTest, on a generated store and on a real
influxd holding the same data: real figures, honest states, hostile names."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from agent import report
from agent.config import Config
from dashboard import ui
from dashboard.escape import md, report_markdown
from dashboard.export import report_csv
from dashboard.sample_data import SampleSpec, fill_store
from dashboard.timerange import TimeRange, fmt_ms
from devtools.servers import InfluxdServer
from tests import dashboard_data as data

APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
KINDS = ["store", "influxdb"]
#: A first run: 15 minutes of data on one model-estimated host; "agent" (first by name)
#: counts no unit, the others count requests, jobs or inferences.
FRESH_APPS = ("web", "api", "batch", "ml", "agent")
FRESH_S = 900


@pytest.fixture(scope="module")
def end() -> int:
    return data.end_ms()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, end: int) -> Path:
    path = tmp_path_factory.mktemp("app-store") / "store.db"
    data.fill(path, end)
    return path


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory, end: int) -> Path:
    """A store as a first run leaves it: the last hour holds 15 minutes of data."""
    path = tmp_path_factory.mktemp("fresh-store") / "store.db"
    spec = SampleSpec(
        hosts=1,
        apps=len(FRESH_APPS),
        days=FRESH_S / 86400,
        interval_s=data.INTERVAL_S,
        end_ms=end,
        model_hosts=1,
        stale_hosts=0,
        app_names=FRESH_APPS,
    )
    fill_store(path, spec)
    return path


@pytest.fixture(scope="module")
def forecast_csv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, datetime]:
    """Hourly intensities from 2 h ago to 24 h ahead, lowest from +10 h to +12 h."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    path = tmp_path_factory.mktemp("grid") / "forecast.csv"
    rows = ["time,gco2_per_kwh"]
    for h in range(-2, 25):
        value = 25.0 if h in (10, 11) else 200.0 + 10 * (h % 5)
        rows.append(f"{(now + timedelta(hours=h)).isoformat()},{value}")
    path.write_text("\n".join(rows) + "\n")
    return path, now + timedelta(hours=10)


@pytest.fixture(scope="module")
def configs(
    tmp_path_factory: pytest.TempPathFactory,
    store: Path,
    influxd: InfluxdServer,
    end: int,
    forecast_csv: tuple[Path, datetime],
    fresh: Path,
) -> dict[str, Path]:
    data.fill_influx(influxd, end)
    influxd.create_database("nothing_yet")  # created, no agent has written yet
    influxd.query(f'GRANT READ ON "nothing_yet" TO "{data.READER}"')
    grid = f'[grid]\nzone = "FR"\nproviders = ["csv"]\n[grid.csv]\npath = "{forecast_csv[0]}"\n'
    folder = tmp_path_factory.mktemp("configs")
    texts = {
        "store": data.config_toml(store, extra=grid),
        "influxdb": data.config_toml(store, influx=influxd, extra=grid),
        "empty-store": data.config_toml(folder / "missing.db"),
        "fresh": data.config_toml(fresh),
        "empty-influxdb": data.config_toml(folder / "missing.db", influx=influxd).replace(
            f'influx_database = "{influxd.database}"', 'influx_database = "nothing_yet"'
        ),
    }
    paths = {}
    for name, text in texts.items():
        paths[name] = folder / f"{name}.toml"
        paths[name].write_text(text)
    return paths


@pytest.fixture
def run_app(configs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    def start(kind: str, page: str | None = None) -> AppTest:
        monkeypatch.setenv("SCI_AGENT_CONFIG", str(configs[kind]))
        st.cache_data.clear()
        st.cache_resource.clear()
        at = AppTest.from_file(str(APP), default_timeout=60).run()
        if page is not None:
            at.switch_page(page).run()
        return at

    yield start


def ok(at: AppTest) -> None:
    """No exception and no error on the page."""
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def metric(at: AppTest, label: str) -> str:
    found = [m for m in at.metric if m.label == label]
    assert found, f"no metric {label!r} in {[m.label for m in at.metric]}"
    return str(found[0].value)


def captions(at: AppTest) -> str:
    return "\n".join(str(c.value) for c in at.caption)


def charts(at: AppTest) -> int:
    return len(at.get("plotly_chart"))


def figure(at: AppTest, key: str) -> dict[str, Any]:
    """The Plotly figure of the chart with ``key``."""
    found = [c for c in at.get("plotly_chart") if key in c.proto.id]
    assert found, f"no chart {key!r}"
    spec: dict[str, Any] = json.loads(found[0].proto.spec)
    return spec


def values(array: Any) -> list[float]:
    """A Plotly array: a list, or ``{"dtype", "bdata"}`` (base64 of the numbers)."""
    if isinstance(array, dict):
        import numpy as np

        raw = base64.b64decode(array["bdata"])
        return [float(x) for x in np.frombuffer(raw, dtype=np.dtype(array["dtype"]))]
    return [float("nan") if x is None else float(x) for x in array]


def last_range(at: AppTest) -> TimeRange:
    rng = at.session_state["last_range"]
    assert isinstance(rng, TimeRange)
    return rng


# -- Fleet -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_fleet(run_app: object, store: Path, end: int, kind: str) -> None:
    at = run_app(kind)  # type: ignore[operator]
    ok(at)
    assert at.title[0].value == "Fleet"
    rng = last_range(at)
    assert metric(at, "Hosts reporting") == "3 of 4"  # host-03 stopped
    assert metric(at, "Energy") == ui.fmt_energy(data.sci_sum(store, "energy_kwh", rng))
    carbon = data.sci_sum(store, "operational_g + embodied_g", rng)
    assert metric(at, "Carbon") == ui.fmt_grams(carbon)
    watts = data.one(
        store,
        "SELECT sum(total_j / interval_s) FROM intervals WHERE ts_ms = ?",
        (end,),
    )
    assert metric(at, "Power now") == ui.fmt_power(watts)
    warnings = "\n".join(str(w.value) for w in at.warning)
    assert f"{md('host-03')} stopped reporting" in warnings  # names are escaped Markdown
    assert fmt_ms(end - 7200 * 1000) in warnings
    assert "host-01 stopped" not in warnings
    assert ui.MODEL_NOTE in captions(at) and f"{md('host-01')}: cpu, dram" in captions(at)
    assert charts(at) == 3
    table = at.dataframe[0].value
    web = table[table["app"] == "web"].iloc[0]
    units = data.sci_sum(store, "units", rng, app="web")
    web_carbon = data.sci_sum(store, "operational_g + embodied_g", rng, app="web")
    assert web["unit"] == "request"
    assert web["SCI per unit"] == ui.fmt_sci(web_carbon / units)
    assert web["carbon"] == ui.fmt_grams(web_carbon)
    assert set(data.HOSTILE_APPS) <= set(table["app"])
    # an app without a unit has no SCI: left out of the table, named in a note, never None
    assert "cron" not in set(table["app"])
    assert not {"None", "nan"} & {str(x) for x in table.to_numpy().ravel()}
    assert "no functional unit counted: cron" in captions(at)
    # the carbon headline says how it splits, as the Application page does
    operational = data.sci_sum(store, "operational_g", rng)
    embodied = data.sci_sum(store, "embodied_g", rng)
    assert ui.carbon_split(operational, embodied) in captions(at)
    assert f"Operational {ui.fmt_grams(operational)} (" in captions(at)


def test_fleet_host_filter(run_app: object, store: Path) -> None:
    at = run_app("store")  # type: ignore[operator]
    at.multiselect(key="host_filter").set_value([data.HOSTILE_HOST]).run()
    ok(at)
    rng = last_range(at)
    assert metric(at, "Hosts reporting") == "1 of 1"
    expected = data.sci_sum(store, "energy_kwh", rng, hosts=[data.HOSTILE_HOST])
    assert metric(at, "Energy") == ui.fmt_energy(expected)
    assert ui.MODEL_NOTE not in captions(at)  # the hostile host is measured by RAPL
    assert set(at.dataframe[0].value["app"]) == set(data.HOSTILE_APPS)
    at.multiselect(key="fleet_apps").set_value([data.HOSTILE_APPS[0]]).run()
    ok(at)
    assert list(at.dataframe[0].value["app"]) == [data.HOSTILE_APPS[0]]


# -- Host ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_host(run_app: object, store: Path, kind: str) -> None:
    at = run_app(kind, "views/host.py")  # type: ignore[operator]
    ok(at)
    assert at.title[0].value == "Host"
    assert at.selectbox(key="host_pick").value == "host-01"
    assert ui.MODEL_NOTE in captions(at)
    assert charts(at) == 3
    assert [m.label for m in at.metric][1] == "Energy (estimated)"  # cpu, dram: the model
    assert metric(at, "Interval") == "1 min"

    at.selectbox(key="host_pick").set_value("host-02").run()
    ok(at)
    assert ui.MODEL_NOTE not in captions(at)
    assert "gpu0 (nvml)" in captions(at)
    assert metric(at, "Energy measured").endswith("Wh")

    at.selectbox(key="host_pick").set_value(data.HOSTILE_HOST).run()
    ok(at)
    rng = last_range(at)
    joules = data.one(
        store,
        "SELECT sum(total_j) FROM intervals WHERE host = ? AND ts_ms > ? AND ts_ms <= ?",
        (data.HOSTILE_HOST, rng.start_ms, rng.end_ms),
    )
    assert metric(at, "Energy measured") == ui.fmt_energy(joules / 3.6e6)
    processes = at.dataframe[0].value
    assert set(processes["app"]) == set(data.HOSTILE_APPS)

    at.selectbox(key="host_pick").set_value("host-03").run()
    ok(at)
    assert any(f"{md('host-03')} stopped reporting" in str(w.value) for w in at.warning)
    assert metric(at, "Power (last data)").endswith(" W")


# -- Application -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_application(run_app: object, store: Path, kind: str) -> None:
    at = run_app(kind, "views/application.py")  # type: ignore[operator]
    ok(at)
    assert at.title[0].value == "Application"
    for app in (*data.HOSTILE_APPS, "web"):
        at.selectbox(key="app_pick").set_value(app).run()
        ok(at)
        rng = last_range(at)  # each run reads up to its own "now"
        carbon = data.sci_sum(store, "operational_g + embodied_g", rng, app=app)
        units = data.sci_sum(store, "units", rng, app=app)
        unit = "request"  # every app of this loop counts requests
        assert metric(at, f"SCI per {unit}") == ui.fmt_sci(carbon / units), app
        assert metric(at, "Carbon") == ui.fmt_grams(carbon)
        before = rng.previous()
        carbon_before = data.sci_sum(store, "operational_g + embodied_g", before, app=app)
        units_before = data.sci_sum(store, "units", before, app=app)
        delta = next(m for m in at.metric if m.label == f"SCI per {unit}").delta
        assert delta == ui.change(carbon / units, carbon_before / units_before)
        assert charts(at) == 4
        sci = figure(at, "app_sci")
        headline_unit = metric(at, f"SCI per {unit}").split()[-1]  # "mg"
        assert sci["layout"]["yaxis"]["title"]["text"] == f"{headline_unit} CO2e per request"
        assert sci["layout"]["yaxis"]["exponentformat"] == "none"  # no "500µ" ticks
        dashes = {t["name"]: t["line"]["dash"] for t in sci["data"]}
        assert dashes == {"this period": "solid", "previous period": "dot"}
        components = figure(at, "app_components")["layout"]["yaxis"]["title"]["text"]
        assert components.startswith("Energy (") and components.endswith("Wh)"), components
    assert ui.MODEL_NOTE in captions(at)  # web runs on host-01, estimated by the model


def test_application_units_and_no_unit(run_app: object) -> None:
    at = run_app("store", "views/application.py")  # type: ignore[operator]
    at.selectbox(key="app_pick").set_value("batch").run()  # unit: job
    ok(at)
    assert metric(at, "Jobs per second") and metric(at, "SCI per job").endswith("g")
    at.selectbox(key="app_pick").set_value("cron").run()  # no unit configured
    ok(at)
    assert metric(at, "SCI") == "–"
    assert any("has no functional unit" in str(i.value) for i in at.info)
    assert charts(at) == 2  # energy by component, operational versus embodied


def test_application_on_a_first_run(run_app: object, fresh: Path) -> None:
    """15 minutes of data in the last hour: the page opens on the app with units and the
    most carbon (not "agent", first by name, which has no SCI), and its units per second
    are its units over the time that has data, what the chart shows, not over the hour."""
    at = run_app("fresh", "views/application.py")  # type: ignore[operator]
    ok(at)
    rng = last_range(at)
    sql = (
        "SELECT app FROM sci WHERE ts_ms > ? AND ts_ms <= ? GROUP BY app HAVING sum(units) > 0"
        " ORDER BY sum(operational_g + embodied_g) DESC LIMIT 1"
    )
    con = sqlite3.connect(fresh)
    try:
        (biggest,) = con.execute(sql, (rng.start_ms, rng.end_ms)).fetchone()
    finally:
        con.close()
    assert biggest != "agent"
    assert at.selectbox(key="app_pick").value == biggest
    unit = {"web": "request", "api": "request", "batch": "job", "ml": "inference"}[biggest]
    assert metric(at, f"SCI per {unit}") != "–"
    units = data.sci_sum(fresh, "units", rng, app=biggest)
    shown = float(metric(at, f"{ui.plural(unit).capitalize()} per second").replace(",", ""))
    over_data = units / FRESH_S
    # ÷ the data's 15 min, give or take the first bucket (old code: ÷ the hour, 4× less)
    assert over_data * 0.85 <= shown <= over_data * 1.01, (shown, over_data)
    ys = [y for y in values(figure(at, "app_units")["data"][0]["y"]) if y == y]
    assert min(ys) * 0.99 <= shown <= max(ys) * 1.01

    at.switch_page("views/host.py").run()
    ok(at)
    assert metric(at, "Energy (estimated)").endswith("Wh")  # every joule is modelled
    assert "Energy measured" not in [m.label for m in at.metric]


#: What a number must never look like on a page: "None", "nan", "1.77e-05".
BAD_NUMBER = re.compile(r"\bNone\b|\bnan\b|(?<![\w/.-])\d+(\.\d+)?[eE][-+]?\d+\b")


@pytest.mark.parametrize(
    "page", [None, "views/host.py", "views/application.py", "views/grid.py", "views/report.py"]
)
def test_numbers_read_as_people_write_them(run_app: object, page: str | None) -> None:
    """Every metric, caption and table cell: SI prefixes, no "None", no scientific notation."""
    for kind in ("store", "fresh"):
        at = run_app(kind, page)  # type: ignore[operator]
        ok(at)
        shown = [str(m.value) for m in at.metric] + [str(m.label) for m in at.metric]
        shown += [str(c.value) for c in at.caption]
        for frame in at.dataframe:
            shown += [str(x) for x in frame.value.to_numpy().ravel()]
        bad = [x for x in shown if BAD_NUMBER.search(x)]
        assert not bad, (kind, bad)


def test_formats_agree_with_the_cli() -> None:
    """ui's formatters write what ``sci.humanize`` (the CLI) writes; "–" when missing."""
    from sci import humanize

    assert ui.fmt_sci(0.0002686) == humanize.grams(0.0002686) == "268.6 µg"
    assert ui.fmt_grams(11.21) == "11.21 g" and ui.fmt_energy(0.06453) == "64.53 Wh"
    assert ui.fmt_power(0.35) == "350 mW"
    assert ui.fmt_seconds(4.99998) == "5 s" and ui.fmt_seconds(60.0) == "1 min"
    assert ui.fmt_number(1.77291e-05) == "0.00001773"
    assert [ui.fmt_sci(None), ui.fmt_grams(float("nan")), ui.fmt_number(None)] == ["–"] * 3
    assert ui.scale_for([0.0002686], ui.MASS_SCALES) == ("µg", 1e-6)
    assert ui.scale_for([0.0012, 0.0004], ui.MASS_SCALES) == ("mg", 1e-3)
    assert ui.scale_for([0.0643], ui.ENERGY_SCALES) == ("Wh", 1e-3)


# -- Grid ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_grid(run_app: object, kind: str, forecast_csv: tuple[Path, datetime]) -> None:
    at = run_app(kind, "views/grid.py")  # type: ignore[operator]
    ok(at)
    assert at.title[0].value == "Grid"
    assert charts(at) == 2
    at.selectbox(key="range_preset").set_value("Last 24 hours").run()  # a fallback hour
    ok(at)
    assert "fallback values" in captions(at)
    greenest = forecast_csv[1]
    assert metric(at, "Greenest 2 h window").startswith(f"{greenest:%a %d %b %H:%M}")
    at.slider(key="window_hours").set_value(1.0).run()
    assert metric(at, "Greenest 1 h window").startswith(f"{greenest:%a %d %b %H:%M}")
    at.multiselect(key="zone_pick").set_value([data.HOSTILE_ZONE]).run()
    ok(at)
    assert charts(at) == 2


# -- Report ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_report(run_app: object, store: Path, kind: str) -> None:
    at = run_app(kind, "views/report.py")  # type: ignore[operator]
    at.selectbox(key="report_app").set_value("web").run()
    ok(at)
    assert at.title[0].value == "Report"
    rng = last_range(at)
    expected = report.build(
        Config(),
        "web",
        datetime.fromtimestamp(rng.start_ms / 1000, UTC),
        datetime.fromtimestamp(rng.end_ms / 1000, UTC),
        str(store),
    )
    shown = "\n".join(str(m.value) for m in at.markdown)
    head = report_markdown(expected).split("## Methodology")[0]  # names escaped
    assert head.strip() in shown
    assert len(at.get("download_button")) == 3
    assert ui.MODEL_NOTE in captions(at)


def test_report_csv_has_the_figures(store: Path, end: int) -> None:
    built = report.build(
        Config(), "web", datetime.fromtimestamp(end / 1000 - 3600, UTC),
        datetime.fromtimestamp(end / 1000, UTC), str(store),
    )  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(report_csv(built))))
    assert len(rows) == 1
    assert float(rows[0]["sci_g_per_unit"]) == pytest.approx(built.sci_g_per_unit)
    assert rows[0]["unit"] == "request" and rows[0]["hosts"] == "; ".join(built.hosts)
    assert rows[0]["modelled"] == "cpu (model); dram (model)"


# -- honest states ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["empty-store", "empty-influxdb"])
@pytest.mark.parametrize(
    "page", [None, "views/host.py", "views/application.py", "views/grid.py", "views/report.py"]
)
def test_no_data_yet(run_app: object, kind: str, page: str | None) -> None:
    at = run_app(kind, page)  # type: ignore[operator]
    ok(at)
    text = "\n".join(str(i.value) for i in at.info)
    assert "No data yet" in text
    assert ("make run" in text) if kind == "empty-store" else ("[influxdb]" in text)
    assert charts(at) == 0


# -- ranges ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "page", [None, "views/host.py", "views/application.py", "views/grid.py", "views/report.py"]
)
def test_a_range_longer_than_the_data(run_app: object, page: str | None) -> None:
    """A week over one day of data: the previous period is empty, nothing breaks."""
    at = run_app("store", page)  # type: ignore[operator]
    at.selectbox(key="range_preset").set_value("Last 7 days").run()
    ok(at)
    assert last_range(at).bucket_ms == 1800 * 1000


def test_a_custom_range(run_app: object, store: Path, end: int) -> None:
    at = run_app("store")  # type: ignore[operator]
    at.selectbox(key="range_preset").set_value("Custom").run()
    start = datetime.fromtimestamp(end / 1000 - 10 * 3600, UTC).replace(tzinfo=None)
    stop = start + timedelta(hours=3)
    at.datetime_input(key="range_from").set_value(start)
    at.datetime_input(key="range_to").set_value(stop).run()
    ok(at)
    rng = last_range(at)
    assert rng.end_ms == round(stop.replace(tzinfo=UTC).timestamp() * 1000)
    assert rng.start_ms <= round(start.replace(tzinfo=UTC).timestamp() * 1000)
    assert metric(at, "Energy") == ui.fmt_energy(data.sci_sum(store, "energy_kwh", rng))
    at.datetime_input(key="range_to").set_value(start - timedelta(hours=1)).run()
    assert any("end must be after" in str(e.value) for e in at.error)
