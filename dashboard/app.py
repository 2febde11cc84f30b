"""The dashboard's entry point: ``python -m streamlit run dashboard/app.py -- --config PATH``.

The sidebar (time range, host filter) is rendered here, once for every page, so its
choices persist when the page changes; each page reads them from session state.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, "") and str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import streamlit as st

from dashboard import ui

VIEWS = Path(__file__).resolve().parent / "views"
#: The favicon, inline: Streamlit turns SVG markup into a data: URL. A ``:material/…:``
#: or emoji icon would be fetched from a font CDN (a request leaked, and none offline).
ICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    '<path d="M2 14C2 6 7 2 14 2c0 7-4 12-12 12z" fill="#2E8B57"/>'
    '<path d="M3 13 10 6" stroke="#fff" stroke-width="1.2"/></svg>'
)

st.set_page_config(page_title="sci-agent", page_icon=ICON, layout="wide")
settings = ui.settings()
ui.sidebar(settings, ui.source(settings))
page = st.navigation(
    [
        st.Page(VIEWS / "fleet.py", title="Fleet", icon=":material/public:", default=True),
        st.Page(VIEWS / "host.py", title="Host", icon=":material/dns:"),
        st.Page(VIEWS / "application.py", title="Application", icon=":material/apps:"),
        st.Page(VIEWS / "grid.py", title="Grid", icon=":material/bolt:"),
        st.Page(VIEWS / "report.py", title="Report", icon=":material/description:"),
    ]
)
page.run()
