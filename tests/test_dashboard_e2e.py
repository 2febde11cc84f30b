"""End to end: the real dashboard server (``dashboard.launch.command``) on a generated
store, driven by a real headless Chromium through Selenium. Each page must draw its
Plotly charts and show no exception; screenshots go to ``test-artifacts/dashboard/``."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dashboard.sample_data import SampleSpec, fill_store
from devtools.servers import free_port
from tests.dashboard_browser import (
    ARTIFACTS,
    ROOT,
    headless_chromium,
    need_chromium,
    serve_dashboard,
)

#: What a number must never look like on a page: "None", "nan", "1.77e-05".
BAD_NUMBER = re.compile(r"\bNone\b|\bnan\b|(?<![\w/.-])\d+(\.\d+)?[eE][-+]?\d+\b")

#: page → (url path, Plotly charts it draws, text it must show)
PAGES = {
    "fleet": ("", 3, "host-03 stopped reporting"),
    "host": ("host", 3, "estimated by the power model (source=model)"),
    "application": ("application", 4, "SCI per request"),
    "grid": ("grid", 2, "Greenest 2 h window"),
    "report": ("report", 0, "SCI report: "),  # the app with the most carbon: varies by hour
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The dashboard on a free port, reading one day of 10-second data."""
    need_chromium()
    work = tmp_path_factory.mktemp("e2e")
    store = work / "store.db"
    fill_store(store, SampleSpec(hosts=3, apps=4, days=1.0, interval_s=10.0))
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    forecast = work / "forecast.csv"
    rows = [(now + timedelta(hours=h), 120 + 80 * ((h * 7) % 5)) for h in range(-1, 30)]
    forecast.write_text(
        "time,gco2_per_kwh\n"
        + "".join(f"{t.isoformat()},{v - 60 * (t.hour in (9, 10))}\n" for t, v in rows)
    )
    config = work / "config.toml"
    config.write_text(
        f'[store]\npath = "{store}"\n'
        f'[grid]\nzone = "FR"\nproviders = ["csv"]\n[grid.csv]\npath = "{forecast}"\n'
    )
    with serve_dashboard(config, work) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    need_chromium()
    with headless_chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


@pytest.mark.parametrize("page", list(PAGES))
def test_page_draws_its_charts(server: str, browser: object, page: str) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    path, expected, text = PAGES[page]
    driver = browser
    driver.get(f"{server}/{path}")  # type: ignore[attr-defined]

    def ready(d: object) -> bool:
        body = d.find_element(By.TAG_NAME, "body").text  # type: ignore[attr-defined]
        plots = d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .main-svg")  # type: ignore[attr-defined]
        charts = len(
            {
                p.find_element(By.XPATH, "./ancestor::div[contains(@class,'js-plotly-plot')]").id
                for p in plots
            }
        )
        return charts >= expected and text in body

    # a chart redrawn between two lookups leaves a stale element: look again
    WebDriverWait(
        driver, 30, poll_frequency=0.25, ignored_exceptions=(StaleElementReferenceException,)
    ).until(ready)
    time.sleep(1.0)  # let Plotly finish its transitions before the screenshot
    errors = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')  # type: ignore[attr-defined]
    assert not errors, [e.text for e in errors]
    plots = driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")  # type: ignore[attr-defined]
    assert len(plots) == expected
    body = driver.find_element(By.TAG_NAME, "body").text  # type: ignore[attr-defined]
    assert not BAD_NUMBER.search(body), BAD_NUMBER.search(body)
    # the launcher's --client.toolbarMode viewer: no "Deploy" button, no developer menu
    assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stAppDeployButton"]')  # type: ignore[attr-defined]
    assert "Deploy" not in body
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{page}.png"))  # type: ignore[attr-defined]


def test_pages_ask_nothing_of_the_internet(server: str, browser: object) -> None:
    """Offline: every request a page makes goes to the dashboard itself (or is a data:
    URL), the favicon included (a ``:material/…:`` page icon is fetched from a font CDN)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    driver.get_log("performance")  # type: ignore[attr-defined]  # forget earlier tests' requests
    for path in ("", "host", "application"):
        driver.get(f"{server}/{path}")  # type: ignore[attr-defined]
        WebDriverWait(driver, 30, poll_frequency=0.25).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .main-svg")  # type: ignore[attr-defined]
        )
        time.sleep(1.0)
        icons = driver.find_elements(By.CSS_SELECTOR, 'link[rel~="icon"]')  # type: ignore[attr-defined]
        hrefs = [i.get_attribute("href") for i in icons]
        assert hrefs and all(h.startswith(("data:", server)) for h in hrefs), hrefs
    urls = []
    for entry in driver.get_log("performance"):  # type: ignore[attr-defined]
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    assert urls, "no request recorded"
    outside = [u for u in urls if not u.startswith((server, "data:", "blob:", "ws://127.0.0.1"))]
    assert not outside, outside


def test_grid_over_a_day_marks_fallback_values(server: str, browser: object) -> None:
    """Pick "Last 24 hours" in the sidebar like a person would; fallbacks get marked."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    driver.get(f"{server}/grid")  # type: ignore[attr-defined]
    wait = WebDriverWait(driver, 30, poll_frequency=0.25)
    box = wait.until(
        lambda d: d.find_element(  # type: ignore[attr-defined]
            By.CSS_SELECTOR, '[data-testid="stSidebar"] [data-testid="stSelectbox"]'
        )
    )
    box.click()
    option = wait.until(
        lambda d: next(
            (
                o
                for o in d.find_elements(By.CSS_SELECTOR, '[role="option"]')  # type: ignore[attr-defined]
                if o.text.strip() == "Last 24 hours"
            ),
            None,
        )
    )
    option.click()
    wait.until(
        lambda d: (
            "fallback values (" in d.find_element(By.TAG_NAME, "body").text  # type: ignore[attr-defined]
            and len(d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .main-svg")) >= 2
        )  # type: ignore[attr-defined]
    )
    time.sleep(1.0)
    assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')  # type: ignore[attr-defined]
    legend = " ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, ".legendtext"))  # type: ignore[attr-defined]
    assert "fallback value" in legend
    driver.save_screenshot(str(ARTIFACTS / "grid-24h.png"))  # type: ignore[attr-defined]


def test_launcher_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    """``dashboard.launch.main`` (what ``sci-agent dashboard`` calls) serves the app on
    loopback and passes SIGTERM on to streamlit, returning its status."""
    import signal
    import sys

    config = tmp_path / "c.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "none.db"}"\n')
    port = free_port()
    code = (
        "import sys; from dashboard.launch import main; "
        f"sys.exit(main({str(config)!r}, {port}, None))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                    break
            except OSError:
                assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "the dashboard did not answer"
                time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
        out = process.stdout.read().decode()  # type: ignore[union-attr]
        assert f"http://127.0.0.1:{port}" in out
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
