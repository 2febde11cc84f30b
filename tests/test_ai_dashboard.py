"""The Application page's block on remote AI calls, under Streamlit's AppTest."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from dashboard import ui
from dashboard.sample_data import SampleSpec, fill_store
from exporters.sqlite_store import SqliteStore
from tests import dashboard_data as data

APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An hour of one host and app ``web`` (requests), and AI calls in every interval:
    10 calls, 4 of them cache hits, 0.5 g of remote carbon."""
    path = tmp_path_factory.mktemp("ai-store") / "store.db"
    end = data.end_ms()
    spec = SampleSpec(
        hosts=1, apps=1, days=1 / 24, interval_s=60, end_ms=end, model_hosts=0, stale_hosts=0,
        app_names=("web",),
    )  # fmt: skip
    fill_store(path, spec)
    sink = SqliteStore(str(path))
    sink.open()  # creates the remote_inference table
    sink.close()
    db = sqlite3.connect(path)
    ts = [t for (t,) in db.execute("SELECT ts_ms FROM sci WHERE app = 'web' ORDER BY ts_ms")]
    db.executemany(
        "INSERT INTO remote_inference VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [
            ("host-01", "web", "openai", "gpt-4o-mini", "estimate", t, 60.0, 10, 4, 0, 400, 1200,
             1e-3, 9e-4, 1.1e-3, 0.4, 0.1, 384.4, "USA", "EcoLogits 0.11.3 llm_impacts", "")
            for t in ts
        ],
    )  # fmt: skip
    db.commit()
    db.close()
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
    assert metric(at, "Local SCI per request") == ui.fmt_sci(local / units)
    assert metric(at, "Remote per request") == ui.fmt_sci(remote / units)
    assert metric(at, "SCI with remote calls per request") == ui.fmt_sci((local + remote) / units)
    assert metric(at, "Cache hits") == "40 %"
    text = "\n".join(str(c.value) for c in at.caption)
    assert "range" in text and "never part of the host's energy" in text
    keys = [c.proto.id for c in at.get("plotly_chart")]
    assert any("app_remote_calls" in k for k in keys) and any("app_remote_grams" in k for k in keys)
