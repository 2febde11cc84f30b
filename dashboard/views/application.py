"""Application: SCI per functional unit over time, units per second, energy by component,
operational versus embodied carbon, and the change versus the previous period."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, remote, ui
from dashboard.escape import md

settings = ui.settings()
st.title("Application")


def pick_app(names: list[str], default: str, key: str = "app_pick") -> str:
    """An app selectbox that remembers its choice across pages (``default`` at first)."""
    remembered = st.session_state.get("app_choice")
    chosen = remembered if remembered in names else default
    app = st.selectbox("Application", names, index=names.index(chosen), key=key)
    st.session_state["app_choice"] = app
    return str(app)


@st.fragment(run_every=settings.dashboard.refresh_s)
def application() -> None:
    v = ui.view(settings)
    if v is None:
        return
    names = ui.real_apps(list(v.data.apps(v.filter)["app"]))
    if not names:
        st.info("No application has SCI rows yet on these hosts.")
        return
    app = pick_app(names, ui.first_app(names, v.data.app_totals(v.filter, v.rng)))
    st.caption(f"{v.rng.label()} · {md(v.src.describe())}")
    estimated = v.data.estimated_components(v.filter, v.rng)
    series = v.data.sci_over_time(v.filter, (app,), v.rng)
    old_series = v.data.sci_over_time(v.filter, (app,), v.rng.previous())
    if series.empty:
        st.info(f"{md(app)} has no SCI rows in this period.")
        return
    r = ui.totals(series)  # the buckets' sums add up to the period's
    o = ui.totals(old_series) if not old_series.empty else pd.Series(dtype=float)
    unit = r["unit"] if isinstance(r["unit"], str) and r["unit"] else None
    # units over the seconds that have data (not the whole range): the chart's mean
    rate = v.rate(series, "units")
    rate_before = v.rate(old_series, "units", v.rng.previous())
    series = v.per_second(series.assign(units_per_s=series["units"]), ["units_per_s"])

    def prev(column: str) -> float:
        return float(o[column]) if column in o else float("nan")
    cols = st.columns(4)
    cols[0].metric(
        f"SCI per {md(unit)}" if unit else "SCI",
        ui.fmt_sci(r["sci"]),
        ui.change(float(r["sci"]), prev("sci")),
        delta_color="inverse",
        help="Σ carbon / Σ units over the period, versus the previous period of the same"
        " length; carbon is the host's (E × I + M) plus the app's remote AI calls, estimated",
    )
    cols[1].metric(
        f"{md(ui.plural(unit or 'unit').capitalize())} per second",
        ui.fmt_number(rate),
        ui.change(rate, rate_before),
        delta_color="normal",
    )
    cols[2].metric(
        "Energy",
        ui.fmt_energy(float(r["energy_kwh"])),
        ui.change(float(r["energy_kwh"]), prev("energy_kwh")),
        delta_color="inverse",
    )
    cols[3].metric(
        "Carbon",
        ui.fmt_grams(float(r["carbon_g"])),
        ui.change(float(r["carbon_g"]), prev("carbon_g")),
        delta_color="inverse",
        help="Operational (E × I) + embodied (M) + remote AI calls, versus the previous period",
    )
    cols[3].caption(ui.carbon_split(float(r["operational_g"]), float(r["embodied_g"])))
    if float(r.get("remote_g", 0.0)) > 0:
        cols[3].caption(f"+ remote AI calls {ui.fmt_grams(float(r['remote_g']))} (estimated)")

    if unit is None:
        st.info(
            f"{md(app)} has no functional unit: give its `[[apps]]` rule a `unit` (request, "
            "job, …) and push counts (`sci.client.count`) to get an SCI score."
        )
    elif not series.empty:
        shift = pd.Timedelta(milliseconds=v.rng.end_ms - v.rng.start_ms)
        parts = [series.assign(period="this period")]
        if not old_series.empty:
            parts.append(
                old_series.assign(time=old_series["time"] + shift, period="previous period")
            )
        lines = pd.concat(parts)
        # the headline's unit: if it says mg, the axis says mg
        mass, factor = ui.scale_for([float(r["sci"])], ui.MASS_SCALES)
        lines = lines.assign(sci=lines["sci"] / factor)
        fig = charts.lines(
            lines,
            "sci",
            "period",
            f"SCI per {unit} (per {ui.bucket_label(v.rng)})",
            f"{mass} CO2e per {unit}",
            dash="period",
            bucket_ms=v.rng.bucket_ms,
            dash_map={"this period": "solid", "previous period": "dot"},
        )
        st.plotly_chart(fig, key="app_sci")
        st.caption(
            "Each point is the bucket's carbon (local, plus the app's remote AI calls when it"
            " made any) over its units (never a mean of ratios); the previous period is"
            " shifted onto this one."
        )
        ui.model_note(estimated)
        st.plotly_chart(
            charts.lines(
                series,
                "units_per_s",
                None,
                f"{ui.plural(unit).capitalize()} per second (mean per {ui.bucket_label(v.rng)})",
                f"{ui.plural(unit)}/s",
                bucket_ms=v.rng.bucket_ms,
            ),
            key="app_units",
        )

    remote.section(v, app, series, unit)  # the app's AI calls (estimated), beside its SCI

    energy = v.data.energy_by_component(v.filter, app, v.rng)
    left, right = st.columns(2)
    with left:
        used = energy.groupby("component")["joules"].transform("sum") > 0
        energy = energy[used]  # no empty gpu band on hosts without a GPU
        if not energy.empty:
            # energy per bucket, in the prefix its largest stacked bucket reads best in
            kwh = energy.assign(kwh=energy["joules"] / 3.6e6)
            stacked = kwh.groupby("time")["kwh"].sum()
            label, factor = ui.scale_for(stacked, ui.ENERGY_SCALES)
            st.plotly_chart(
                charts.stacked_area(
                    kwh.assign(energy=kwh["kwh"] / factor),
                    "energy",
                    "component",
                    f"Energy by component (per {ui.bucket_label(v.rng)})",
                    f"Energy ({label})",
                    colors=charts.PART_COLORS,
                ),
                key="app_components",
            )
            parts = energy.groupby("component")["joules"].sum() / 3.6e6
            st.caption(
                "Measured for the app itself (its idle share is not included): "
                + " · ".join(f"{md(k)} {ui.fmt_energy(x)}" for k, x in parts.items())
            )
            ui.model_note(estimated)
    with right:
        split = v.data.operational_vs_embodied(v.filter, app, v.rng)
        if not split.empty:
            hourly = v.per_second(split, ["operational_g", "embodied_g"])
            hourly[["operational_g", "embodied_g"]] *= 3600
            mass, factor = ui.scale_for(
                hourly["operational_g"] + hourly["embodied_g"], ui.MASS_SCALES
            )
            hourly[["operational_g", "embodied_g"]] /= factor
            long = hourly.melt("time", var_name="part", value_name="grams")
            long["part"] = long["part"].map(
                {"operational_g": "operational (E × I)", "embodied_g": "embodied (M)"}
            )
            st.plotly_chart(
                charts.stacked_area(
                    long,
                    "grams",
                    "part",
                    f"Operational versus embodied (mean per {ui.bucket_label(v.rng)})",
                    f"Carbon ({mass} CO2e per hour)",
                    colors={
                        "operational (E × I)": charts.PART_COLORS["operational"],
                        "embodied (M)": charts.PART_COLORS["embodied"],
                    },
                ),
                key="app_carbon",
            )
            st.caption(ui.carbon_split(float(r["operational_g"]), float(r["embodied_g"])))
            ui.model_note(estimated)


application()
