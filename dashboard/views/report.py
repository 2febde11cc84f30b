"""Report: an app's SCI report (``agent.report``) for the period, as Markdown, JSON and CSV."""

from __future__ import annotations

import streamlit as st

from agent.embodied import HOW_TO_SET
from agent.report import ReportError, SciReport
from dashboard import ui
from dashboard.escape import md, report_markdown
from dashboard.export import report_csv

settings = ui.settings()
st.title("Report")


def report_page() -> None:
    v = ui.view(settings, align=False)
    if v is None:
        return
    names = ui.real_apps(list(v.data.apps(None)["app"]))
    if not names:
        st.info("No application has SCI rows yet.")
        return
    remembered = st.session_state.get("app_choice")
    if remembered not in names:
        remembered = ui.first_app(names, v.data.app_totals(None, v.rng))
    app = st.selectbox(
        "Application",
        names,
        index=names.index(remembered),
        key="report_app",
    )
    st.session_state["app_choice"] = app
    st.caption(f"{v.rng.label()} · every host · {md(v.src.describe())}")
    try:
        report = v.data.sci_report(settings.config, app, v.rng.start_ms, v.rng.end_ms)
    except ReportError as exc:
        st.info(md(exc))
        return
    stem = f"sci-report-{app}-{report.period_start[:10]}"
    cols = st.columns(3)
    cols[0].download_button(
        "Download Markdown",
        report.to_markdown(),
        f"{stem}.md",
        "text/markdown",
        key="dl_md",
        icon=":material/download:",
    )
    cols[1].download_button(
        "Download JSON",
        report.to_json(),
        f"{stem}.json",
        "application/json",
        key="dl_json",
        icon=":material/download:",
    )
    cols[2].download_button(
        "Download CSV",
        report_csv(report),
        f"{stem}.csv",
        "text/csv",
        key="dl_csv",
        icon=":material/download:",
    )
    if report.modelled:
        st.caption(
            f":material/warning: Partly {ui.MODEL_NOTE}: {', '.join(map(md, report.modelled))}."
        )
    st.caption(method_note(report))
    st.markdown(report_markdown(report))


def method_note(report: SciReport) -> str:
    """Which method the figures were recorded with, and whether TE is a default."""
    if not report.methods:
        return (
            ":material/info: No method recorded with these data (the embedded store records"
            " it; InfluxDB does not): the methodology below is today's config."
        )
    changes = len(report.methods) - len({m["host"] for m in report.methods})
    note = f":material/info: Method recorded with the data; {changes} change(s) in the period."
    if report.embodied_is_default:
        basis = report.methods[-1]["method"]["embodied_basis"]
        note += f" Embodied carbon uses a default estimate ({md(basis)}): {md(HOW_TO_SET)}."
    return note


report_page()
