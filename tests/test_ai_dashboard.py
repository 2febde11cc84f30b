"""The Application page's block on remote AI calls, under Streamlit's AppTest."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from agent import report
from agent.attribution import attribute
from agent.config import Config
from agent.records import (
    ComponentReading,
    CpuActivity,
    IntensityValue,
    IntervalResult,
    ProcessActivity,
    RemoteInference,
    SciRecord,
)
from agent.scoring import with_remote
from dashboard import ui
from exporters.sqlite_store import SqliteStore
from tests import dashboard_data as data

APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"


def interval(end: datetime, i: int) -> IntervalResult:
    """One measured minute of host ``host-01`` running ``web`` (requests), scored as the
    agent scores it: 10 AI calls, 4 of them cache hits, 0.5 g of remote carbon, in
    ``web``'s ``sci`` row as ``remote_g`` and in its score."""
    procs = [ProcessActivity(100 + k, 1, f"gunicorn{k}", "web", 600 + 10 * k + i % 5, 1 << 24)
             for k in range(3)]  # fmt: skip
    busy = sum(p.cpu_ticks for p in procs) + 30
    readings = [ComponentReading("cpu0", "cpu", "rapl", 1800.0 + i, None, 600.0, "learned")]
    r = attribute("host-01", end - timedelta(seconds=60), end, readings,
                  CpuActivity(busy, 4 * busy, 4), procs, 1 << 34)  # fmt: skip
    local = SciRecord("web", "request", 50.0 + i % 7, 1.2e-4, 50.0, 6e-3, 1e-3,
                      7e-3 / (50.0 + i % 7))  # fmt: skip
    remote = (
        RemoteInference("web", "openai", "gpt-4o-mini", 10, 4, 400, 1200, 0, 1e-3, 9e-4,
                        1.1e-3, 0.4, 0.1, "USA", 384.4, "EcoLogits 0.11.3 llm_impacts"),
    )  # fmt: skip
    intensity = IntensityValue("FR", 50.0, "static", "average", end)
    return replace(
        r, intensity=intensity, sci=tuple(with_remote([local], remote)), remote=remote
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An hour of one host and app ``web``, AI calls in every interval, written by the
    agent's store sink (see ``interval``)."""
    path = tmp_path_factory.mktemp("ai-store") / "store.db"
    end = datetime.fromtimestamp(data.end_ms() / 1000, UTC)
    sink = SqliteStore(str(path), retention_days=36500)
    sink.open()
    sink.write([interval(end - timedelta(minutes=59 - i), i) for i in range(60)])
    sink.close()
    return path


@pytest.fixture
def page(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AppTest]:
    config = tmp_path / "config.toml"
    config.write_text(data.config_toml(store))
    monkeypatch.setenv("SCI_AGENT_CONFIG", str(config))
    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    at.switch_page("views/application.py").run()
    yield at


def metric(at: AppTest, label: str) -> str:
    found = [m for m in at.metric if m.label == label]
    assert found, f"no metric {label!r} in {[m.label for m in at.metric]}"
    return str(found[0].value)


def test_application_shows_remote_calls_beside_the_local_sci(page: AppTest, store: Path) -> None:
    at = page
    assert not at.exception, [e.message for e in at.exception]
    at.selectbox(key="app_pick").set_value("web").run()
    assert not at.exception and not at.error
    rng = at.session_state["last_range"]
    units = data.sci_sum(store, "units", rng, app="web")
    local = data.sci_sum(store, "operational_g + embodied_g", rng, app="web")
    db = sqlite3.connect(store)
    (remote,) = db.execute(
        "SELECT sum(usage_g + embodied_g) FROM remote_inference WHERE ts_ms > ? AND ts_ms <= ?",
        (rng.start_ms, rng.end_ms),
    ).fetchone()
    db.close()
    assert remote == pytest.approx(0.5 * 60) and units > 0
    assert metric(at, "Local SCI per request") == ui.fmt_sci(local / units)
    assert metric(at, "Remote per request") == ui.fmt_sci(remote / units)
    assert metric(at, "SCI with remote calls per request") == ui.fmt_sci((local + remote) / units)
    # the headline SCI is the app's whole SCI, its calls included (as the report's)
    assert metric(at, "SCI per request") == ui.fmt_sci((local + remote) / units)
    assert ui.fmt_sci((local + remote) / units) != ui.fmt_sci(local / units)
    start = datetime.fromtimestamp(rng.start_ms / 1000, UTC)
    end = datetime.fromtimestamp(rng.end_ms / 1000, UTC)
    built = report.build(Config(), "web", start, end, str(store))
    assert built.sci_g_per_unit is not None
    assert metric(at, "SCI per request") == ui.fmt_sci(built.sci_g_per_unit)
    assert metric(at, "Cache hits") == "40 %"
    text = "\n".join(str(c.value) for c in at.caption)
    assert "range" in text and "never part of the host's energy" in text
    keys = [c.proto.id for c in at.get("plotly_chart")]
    assert any("app_remote_calls" in k for k in keys) and any("app_remote_grams" in k for k in keys)
