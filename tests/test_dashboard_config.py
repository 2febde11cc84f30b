"""The dashboard's config errors: shown on the page and by ``sci-agent dashboard``, each
naming the key, never echoing a secret, never a traceback."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from agent.config import ConfigError
from dashboard import config as dash_config

APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"

#: (file content, what the error says, what must appear nowhere)
BAD = [
    (
        b"[http]\ntoken = 12345678\n",
        "http.token: expected a string, got an integer (value hidden)",
        "12345678",
    ),
    (
        b'[dashboard]\ninflux_password = ["hunter2"]\n',
        "dashboard.influx_password: expected a string, got an array (value hidden)",
        "hunter2",
    ),
    (
        b'[dashboard]\ninflux_url = "ftp://reader:hunter2@db:8086"\n',
        "dashboard.influx_url: must start with http:// or https://",
        "hunter2",
    ),
    (b"# caf\xe9\n", "not UTF-8 text (byte 0xe9 at offset 5)", "Traceback"),
    (b"[sci]\npue = nan\n", "sci.pue: must be a finite number, got nan", "Traceback"),
]
IDS = ["token", "password", "url", "latin-1", "nan"]


def _write(tmp_path: Path, content: bytes) -> Path:
    f = tmp_path / "dash.toml"
    f.write_bytes(content)
    f.chmod(0o600)
    return f


@pytest.mark.parametrize(("content", "said", "hidden"), BAD, ids=IDS)
def test_load_names_the_key_and_hides_secrets(
    tmp_path: Path, content: bytes, said: str, hidden: str
) -> None:
    f = _write(tmp_path, content)
    with pytest.raises(ConfigError) as err:
        dash_config.load(f)
    assert str(err.value).startswith(f"{f}: ")
    assert said in str(err.value) and hidden not in str(err.value)


def _rendered(markdown: str) -> str:
    """The text a reader sees: Markdown escapes and the invisible link breakers removed."""
    return re.sub(r"\\(.)", r"\1", markdown).replace("\u2060", "")


@pytest.mark.parametrize(("content", "said", "hidden"), BAD, ids=IDS)
def test_the_page_shows_the_error_and_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes, said: str, hidden: str
) -> None:
    monkeypatch.setenv("SCI_AGENT_CONFIG", str(_write(tmp_path, content)))
    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception, [e.message for e in at.exception]
    errors = [_rendered(str(e.value)) for e in at.error]
    assert len(errors) == 1 and said in errors[0], errors
    shown = [
        _rendered(str(e.value))
        for kind in ("markdown", "caption", "text", "warning", "info")
        for e in at.get(kind)
    ]
    assert not any(hidden in text for text in errors + shown)


def test_sci_agent_dashboard_exits_2_without_echoing_a_secret(tmp_path: Path) -> None:
    f = _write(tmp_path, b"[dashboard]\ninflux_token = 12345678\n")
    out = subprocess.run(
        [sys.executable, "-m", "agent", "dashboard", "--config", str(f), "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"sci-agent: config error: {f}: dashboard.influx_token: expected a string, "
        "got an integer (value hidden)"
    ]
