"""Names that carry markup (a process name any local user picks, a host tag a rogue
fleet writer sends) are shown as text on every page: never a link, an image or
emphasis, in Streamlit's Markdown or in Plotly's charts. Checked on the page sources
under AppTest (store and a real influxd) and in a real headless Chromium."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from dashboard.escape import WORD_JOINER, md, plotly
from dashboard.sample_data import SampleSpec, fill_store, write_influx
from devtools.servers import InfluxdServer
from tests import dashboard_data as data
from tests.dashboard_browser import ARTIFACTS, headless_chromium, need_chromium, serve_dashboard

APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
HOST = "**pwn** [login](https://evil.example/login) www.evil.example a@evil.example :red[x] :smile:"
PROCESSES = (
    "<a href='//evil.example'>x</a>",
    "<img src=x onerror=alert(1)>",
    "[click](//evil.example)",
    "**bold** &lt;b&gt;",
)
APPS = ("web", "<b>api</b>", "[pay](//evil.example/pay)", "*em* _u_ :material/home:")
ZONE = "<a href='//evil.example/z'>FR</a>"
#: the elements a name must never become, and the text it must stay
FORBIDDEN = "a[href*='evil'], img[src='x'], image"


def spec(end_ms: int) -> SampleSpec:
    """One host, stale and estimated by the power model, so its name is in a warning and
    in a caption; four apps whose processes carry markup."""
    return SampleSpec(
        hosts=1,
        apps=4,
        days=1.0,
        interval_s=data.INTERVAL_S,
        end_ms=end_ms,
        model_hosts=1,
        stale_hosts=1,
        stale_s=600.0,  # stopped 10 minutes ago: the last hour still has data
        host_names=(HOST,),
        app_names=APPS,
        process_names=PROCESSES,
        zone=ZONE,
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("markup") / "store.db"
    fill_store(path, spec(data.end_ms()))
    return path


@pytest.fixture(scope="module")
def configs(
    tmp_path_factory: pytest.TempPathFactory, store: Path, influxd: InfluxdServer
) -> dict[str, Path]:
    write_influx(
        influxd.url, influxd.database, spec(data.end_ms()),
        username=influxd.username, password=influxd.password,
    )  # fmt: skip
    influxd.create_user(data.READER, data.READER_PASSWORD, "READ")
    folder = tmp_path_factory.mktemp("markup-configs")
    paths = {}
    for kind, text in (
        ("store", data.config_toml(store)),
        ("influxdb", data.config_toml(store, influx=influxd)),
    ):
        paths[kind] = folder / f"{kind}.toml"
        paths[kind].write_text(text)
    return paths


def run(configs: dict[str, Path], kind: str, page: str | None, mp: pytest.MonkeyPatch) -> AppTest:
    mp.setenv("SCI_AGENT_CONFIG", str(configs[kind]))
    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    if page is not None:
        at.switch_page(page).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def markdown_sources(at: AppTest) -> str:
    """Every Markdown string the page sent (warnings, captions, infos, Markdown, labels)."""
    parts = [str(e.value) for e in (*at.warning, *at.caption, *at.info, *at.markdown, *at.error)]
    parts += [str(m.label) for m in at.metric]
    return "\n".join(parts)


def figures(at: AppTest) -> list[str]:
    """Every string of every Plotly figure on the page (titles, names, values, templates)."""
    out: list[str] = []

    def walk(x: object) -> None:
        if isinstance(x, str):
            out.append(x)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    for e in at.get("plotly_chart"):
        spec = json.loads(e.proto.spec)
        walk({"data": spec["data"], "layout": spec["layout"]})  # not the template's
    return out


def assert_no_raw_markup(text: str) -> None:
    """No name as typed in Markdown sources (every name here is Markdown)."""
    for raw in (HOST, *PROCESSES, *APPS[1:], ZONE):
        assert raw not in text, raw


def assert_no_raw_html(strings: list[str]) -> None:
    """No name carrying HTML as typed in Plotly's strings (only ``<``, ``&`` matter there)."""
    text = "\n".join(strings)
    for raw in (HOST, *PROCESSES, *APPS, ZONE):
        if "<" in raw or "&" in raw:
            assert raw not in text, raw


@pytest.mark.parametrize("kind", ["store", "influxdb"])
def test_fleet_and_host_escape_every_name(
    configs: dict[str, Path], kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = run(configs, kind, None, monkeypatch)
    text = markdown_sources(at)
    assert f"**{md(HOST)} stopped reporting**" in text  # bold from the page, not the name
    assert f"{md(HOST)}: cpu, dram" in text  # the model note
    assert_no_raw_markup(text)
    fleet = figures(at)
    for app in APPS:
        assert plotly(app) in fleet, app  # the rankings' y values
    assert_no_raw_html(fleet)
    assert plotly(HOST) in fleet  # the power chart's legend

    at.switch_page("views/host.py").run()
    assert not at.exception
    assert at.selectbox(key="host_pick").value == HOST  # a plain-text widget: the raw name
    assert_no_raw_markup(markdown_sources(at))
    shown = figures(at)
    for p, a in zip(PROCESSES, APPS, strict=True):
        assert plotly(f"{p} ({a})") in shown  # the top processes' bars
    assert_no_raw_html(shown)
    table = at.dataframe[0].value  # a plain-text grid: the raw names
    assert set(table["process"]) == set(PROCESSES)


def test_grid_application_and_report_escape_every_name(
    configs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    at = run(configs, "store", "views/grid.py", monkeypatch)
    assert_no_raw_html(figures(at))
    assert plotly(ZONE) + " · electricitymaps" in figures(at)
    at.switch_page("views/application.py").run()
    at.selectbox(key="app_pick").set_value(APPS[2]).run()
    assert not at.exception
    assert_no_raw_markup(markdown_sources(at))
    assert_no_raw_html(figures(at))
    at.switch_page("views/report.py").run()
    at.selectbox(key="report_app").set_value(APPS[1]).run()
    assert not at.exception
    shown = markdown_sources(at)
    assert f"# SCI report: {md(APPS[1])}" in shown and f"- Hosts: {md(HOST)}" in shown
    assert_no_raw_markup(shown)


def test_md_leaves_no_markup() -> None:
    assert md("[x](//e) **b** <i>") == r"\[x\]\(\/\/e\) \*\*b\*\* \<i\>"
    assert md("a:smile:b\nc") == f"a\\:{WORD_JOINER}smile\\:{WORD_JOINER}b\ufffdc"
    wj = WORD_JOINER
    assert md("WWW.e.x a@e.x") == f"WWW{wj}\\.e\\.x a\\@{wj}e\\.x"  # GFM autolink literals
    assert plotly("<a href='//e'>&amp;</a>") == "&lt;a href='//e'&gt;&amp;amp;&lt;/a&gt;"


# -- headless Chromium on the real server -------------------------------------------------


@pytest.fixture(scope="module")
def server(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    need_chromium()
    work = tmp_path_factory.mktemp("markup-e2e")
    config = work / "config.toml"
    config.write_text(data.config_toml(store))
    with serve_dashboard(config, work) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    need_chromium()
    with headless_chromium(tmp_path_factory.mktemp("markup-profile")) as driver:
        yield driver


#: every link's target, HTML or SVG (Plotly draws its links as SVG ``<a xlink:href>``)
LINKS_JS = """return [...document.querySelectorAll('a')].map(a =>
    a.getAttribute('href') || a.getAttributeNS('http://www.w3.org/1999/xlink', 'href') || '')"""
#: the text of the page: HTML and the charts' SVG
TEXT_JS = """return document.body.innerText + '\\n' +
    [...document.querySelectorAll('.js-plotly-plot')].map(p => p.textContent).join('\\n')"""


@pytest.mark.parametrize(
    ("page", "charts", "shown"),
    [
        ("", 3, [f"{HOST} stopped reporting", *APPS]),
        ("host", 3, [f"{HOST} stopped reporting", *PROCESSES]),
        ("grid", 1, [ZONE]),
    ],
    ids=["fleet", "host", "grid"],
)
def test_chromium_draws_names_as_text(
    server: str, browser: object, page: str, charts: int, shown: list[str]
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    driver.get(f"{server}/{page}")  # type: ignore[attr-defined]

    def ready(d: object) -> bool:
        plots = d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .main-svg")  # type: ignore[attr-defined]
        text = d.execute_script(TEXT_JS).replace(WORD_JOINER, "")  # type: ignore[attr-defined]
        return len(plots) >= charts and all(s in text for s in shown)

    WebDriverWait(  # a cold server imports for a while; a redrawn chart leaves stale elements
        driver, 90, poll_frequency=0.25, ignored_exceptions=(StaleElementReferenceException,)
    ).until(ready)
    time.sleep(1.0)  # let Plotly finish drawing
    assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')  # type: ignore[attr-defined]
    found = driver.find_elements(By.CSS_SELECTOR, FORBIDDEN)  # type: ignore[attr-defined]
    assert not found, [e.get_attribute("outerHTML")[:300] for e in found]
    links = driver.execute_script(LINKS_JS)  # type: ignore[attr-defined]
    assert not [h for h in links if "evil" in h], links
    bold = driver.find_elements(By.CSS_SELECTOR, "[data-testid='stAlert'] strong")  # type: ignore[attr-defined]
    assert all(b.text.replace(WORD_JOINER, "").startswith(HOST) for b in bold)  # only the page's
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"markup-{page or 'fleet'}.png"))  # type: ignore[attr-defined]
