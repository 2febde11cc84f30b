"""The real dashboard server on a free port and a headless Chromium, for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dashboard import launch
from devtools.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def need_chromium() -> None:
    """Skip without Chromium and its driver (fail under ``CI=true``), saying what to install."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if missing:
        reason = f"{', '.join(missing)} missing: apt-get install chromium chromium-driver"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@contextlib.contextmanager
def serve_dashboard(config: Path, work: Path) -> Iterator[str]:
    """``dashboard.launch.command`` on a free port, run from ``work`` (not the checkout:
    the app must find its package by itself); yields its URL once it answers."""
    port = free_port()
    log_path = work / "streamlit.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        launch.command(str(config), port, launch.DEFAULT_HOST),
        cwd=work,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r,
            ):
                if r.read() == b"ok":
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                log.close()
                pytest.fail("the dashboard did not start:\n" + log_path.read_text())
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@contextlib.contextmanager
def headless_chromium(profile: Path) -> Iterator[Any]:
    """Debian's Chromium driven by Selenium (driver path given, nothing downloaded)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1440,2300",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    # every request the page makes, for the offline test (Network.requestWillBeSent)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
