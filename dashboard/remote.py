"""Remote AI calls on the Application page: calls per unit, cache hits, remote grams per unit.

The calls' carbon is EcoLogits' estimate (``remote_inference``), never the host's
measured energy: the page shows it beside the local SCI, and the two added up (the
headline SCI, as the ``sci`` rows and the report, already includes it). Read through
the data source's ``remote_over_time``, so the store and InfluxDB show the same block.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, ui
from dashboard.data.base import REMOTE_SUMS as SUMS


def per_unit(remote: pd.DataFrame, sci: pd.DataFrame) -> pd.DataFrame:
    """Each bucket's calls and remote grams per unit, and its cache hit ratio."""
    df = remote.merge(sci[["time", "units"]], on="time", how="left")
    units = df["units"].where(df["units"] > 0)
    df["carbon_g"] = df["usage_g"] + df["embodied_g"]
    df["calls_per_unit"] = df["calls"] / units
    df["remote_g_per_unit"] = df["carbon_g"] / units
    df["cache_hit_ratio"] = df["cached_calls"] / df["calls"].where(df["calls"] > 0)
    return df


def section(v: ui.View, app: str, series: pd.DataFrame, unit: str | None) -> None:
    """The page's block on remote AI calls; nothing when the app made none."""
    remote = v.data.remote_over_time(v.filter, app, v.rng)
    if remote.empty:
        return
    df = per_unit(remote, series)
    totals = df[list(SUMS)].sum()
    units = float(series["units"].sum()) if not series.empty else 0.0
    local_g = float(series["operational_g"].sum() + series["embodied_g"].sum())
    remote_g = float(totals["usage_g"] + totals["embodied_g"])
    st.subheader("Remote AI calls (estimated with EcoLogits)")
    cols = st.columns(4)
    per = f" per {unit}" if unit else ""
    scale = 1 / units if unit and units > 0 else float("nan")
    cols[0].metric(f"Local SCI{per}", ui.fmt_sci(local_g * scale), help="Measured on the host")
    cols[1].metric(
        f"Remote{per}",
        ui.fmt_sci(remote_g * scale),
        help="EcoLogits' estimate of the calls: usage E × I with the provider's mix + embodied",
    )
    cols[2].metric(f"SCI with remote calls{per}", ui.fmt_sci((local_g + remote_g) * scale))
    calls = float(totals["calls"])
    cols[3].metric(
        "Cache hits", f"{100 * totals['cached_calls'] / calls:.0f} %" if calls else "n/a"
    )
    st.caption(
        f"Remote energy {ui.fmt_energy(float(totals['energy_kwh']))} (range"
        f" {ui.fmt_energy(float(totals['energy_kwh_min']))} to"
        f" {ui.fmt_energy(float(totals['energy_kwh_max']))}), never part of the host's energy;"
        f" {ui.fmt_number(calls * scale)} calls,"
        f" {ui.fmt_number(float(totals['input_tokens']) * scale)} input and"
        f" {ui.fmt_number(float(totals['output_tokens']) * scale)} output tokens{per}"
        + (
            f"; {ui.fmt_number(float(totals['unestimated_calls']))} calls unestimated"
            " (a model EcoLogits does not know)"
            if totals["unestimated_calls"]
            else ""
        )
    )
    long = df.melt(
        "time",
        ["calls_per_unit", "cache_hit_ratio"],
        var_name="series",
        value_name="value",
    )
    left, right = st.columns(2)
    left.plotly_chart(
        charts.lines(
            long,
            "value",
            "series",
            f"Calls{per} and cache hit ratio (per {ui.bucket_label(v.rng)})",
            "calls / ratio",
            bucket_ms=v.rng.bucket_ms,
        ),
        key="app_remote_calls",
    )
    mass, factor = ui.scale_for(df["remote_g_per_unit"].dropna(), ui.MASS_SCALES)
    right.plotly_chart(
        charts.lines(
            df.assign(remote=df["remote_g_per_unit"] / factor),
            "remote",
            None,
            f"Remote carbon{per} (per {ui.bucket_label(v.rng)})",
            f"{mass} CO2e{per}",
            bucket_ms=v.rng.bucket_ms,
        ),
        key="app_remote_grams",
    )
