"""Grid: carbon intensity per zone (fallback values marked), the forecast, and the
greenest window ahead."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from agent.config import GridConfig
from dashboard import charts, ui
from dashboard.escape import md
from dashboard.forecast import Forecast, fetch_forecast, greenest_window, window_mean

settings = ui.settings()
st.title("Grid")


@st.cache_data(ttl=900, show_spinner="Fetching the forecast…")
def forecast(grid: GridConfig) -> Forecast:
    """The chain's forecast, cached 15 minutes; at most a few seconds' wait."""
    return fetch_forecast(grid, timeout_s=4.0)


@st.fragment(run_every=settings.dashboard.refresh_s)
def grid_page() -> None:
    v = ui.view(settings)
    if v is None:
        return
    zones = list(v.data.zones()["zone"])
    chosen = st.multiselect("Zones", zones, default=zones, key="zone_pick")
    st.caption(f"{v.rng.label()} · {md(v.src.describe())}")
    data = v.data.intensity_over_time(tuple(chosen), v.rng)
    if data.empty:
        st.info("No grid intensity recorded in this period.")
    else:
        data = data.assign(series=data["zone"] + " · " + data["provider"])
        fig = charts.lines(
            data,
            "gco2_per_kwh",
            "series",
            f"Carbon intensity by zone and provider (mean per {ui.bucket_label(v.rng)})",
            "g CO2e/kWh",
            bucket_ms=v.rng.bucket_ms,
        )
        fig.update_traces(mode="lines")
        fallback = data[data["fallback_share"] > 0]
        if not fallback.empty:
            fig.add_trace(
                go.Scatter(
                    x=fallback["time"],
                    y=fallback["gco2_per_kwh"],
                    mode="markers",
                    name="fallback value",
                    marker={"symbol": "x", "size": 7, "color": "#C0392B"},
                    hovertemplate="fallback: %{y:.0f} g/kWh<extra></extra>",
                )
            )
        st.plotly_chart(fig, key="grid_intensity")
        share = float((data["fallback_share"] * data["intervals"]).sum() / data["intervals"].sum())
        if share > 0:
            st.caption(
                f"✕ marks buckets with fallback values ({share:.1%} of intervals): the chain's "
                "first provider had no current value, so a later one (or the yearly average) "
                "was used."
            )
        else:
            st.caption("Every value came from the chain's first provider (no fallback).")

    st.subheader("Forecast")
    fc = forecast(settings.config.grid)
    if not fc.values:
        st.info(f"No forecast for {md(fc.zone)}: {md(fc.note)}.")
        return
    frame = pd.DataFrame(
        {
            "time": [x.time.replace(tzinfo=None) for x in fc.values],  # UTC
            "gco2_per_kwh": [x.gco2_per_kwh for x in fc.values],
            "provider": [x.provider for x in fc.values],
        }
    )
    hours = st.slider("Window length (hours)", 1.0, 4.0, 2.0, 0.5, key="window_hours")
    times = [t.to_pydatetime() for t in frame["time"]]
    values = [float(x) for x in frame["gco2_per_kwh"]]
    length = timedelta(hours=hours)
    best = greenest_window(times, values, length)
    fig = charts.lines(
        frame.assign(series=f"{fc.zone} forecast ({frame['provider'].iloc[0]})"),
        "gco2_per_kwh",
        "series",
        f"Forecast carbon intensity, {fc.zone}",
        "g CO2e/kWh",
    )
    fig.update_traces(line_shape="hv")
    if best is not None:
        fig.add_vrect(
            x0=best.start,
            x1=best.end,
            fillcolor="#2E8B57",
            opacity=0.15,
            line_width=0,
            annotation_text=f"greenest {hours:g} h",
            annotation_position="top left",
        )
    st.plotly_chart(fig, key="grid_forecast")
    if best is None:
        st.info(f"The forecast is shorter than {hours:g} h.")
        return
    soonest = window_mean(times, values, times[0], length)
    versus = ui.change(best.mean_gco2_per_kwh, soonest) if soonest is not None else None
    st.metric(
        f"Greenest {hours:g} h window",
        f"{best.start:%a %d %b %H:%M}–{best.end:%H:%M} UTC",
        f"{best.mean_gco2_per_kwh:.0f} g CO2e/kWh on average"
        + (f", {versus} vs starting at {times[0]:%H:%M}" if versus else ""),
        delta_color="off",
        delta_arrow="off",
    )


grid_page()
