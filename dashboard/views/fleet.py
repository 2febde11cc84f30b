"""Fleet: who reports, power now, energy and carbon, apps ranked, SCI per app and its trend."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import charts, ui
from dashboard.escape import md

settings = ui.settings()
st.title("Fleet")


@st.fragment(run_every=settings.dashboard.refresh_s)
def fleet() -> None:
    v = ui.view(settings)
    if v is None:
        return
    st.caption(f"{v.rng.label()} · {md(v.src.describe())}")
    ui.stale_warnings(v)
    estimated = v.q("estimated_components", v.filter, v.rng)
    totals = v.q("app_totals", v.filter, v.rng)
    before = v.q("app_totals", v.filter, v.rng.previous())
    live = v.hosts[~v.hosts["stale"]]

    energy = float(totals["energy_kwh"].sum())
    carbon = float(totals["carbon_g"].sum())
    energy_before = float(before["energy_kwh"].sum()) if not before.empty else float("nan")
    carbon_before = float(before["carbon_g"].sum()) if not before.empty else float("nan")
    cols = st.columns(4)
    cols[0].metric(
        "Hosts reporting",
        f"{len(live)} of {len(v.hosts)}",
        help="A host that sent nothing for 3 of its intervals is flagged as stopped.",
    )
    cols[1].metric("Power now", ui.fmt_power(float(live["watts"].sum())))
    cols[2].metric(
        "Energy",
        ui.fmt_energy(energy),
        ui.change(energy, energy_before),
        delta_color="inverse",
        help="Σ E of every app (idle share included, × PUE) vs the previous period",
    )
    cols[3].metric(
        "Carbon",
        ui.fmt_grams(carbon),
        ui.change(carbon, carbon_before),
        delta_color="inverse",
        help="Operational (E × I) + embodied (M), g CO2e, vs the previous period",
    )

    power = v.q("power_by_component", v.filter, v.rng)
    if not power.empty:
        per_host = power.groupby(["time", "host"], as_index=False)["watts"].sum()
        st.plotly_chart(
            charts.stacked_area(
                per_host,
                "watts",
                "host",
                f"Power by host (mean per {ui.bucket_label(v.rng)})",
                "Power (W)",
            ),
            key="fleet_power",
        )
        ui.model_note(estimated)

    names = ui.real_apps(list(totals["app"]))
    if not names:
        st.info("No application has SCI rows in this period.")
        return
    picked = st.multiselect("Applications", names, key="fleet_apps", placeholder="All applications")
    apps = totals[totals["app"].isin(picked or names)]
    left, right = st.columns(2)
    with left:
        st.plotly_chart(
            charts.ranking(
                apps.assign(wh=apps["energy_kwh"] * 1000),
                "wh",
                "app",
                "Energy by application",
                "Energy (Wh)",
                fmt=lambda wh: ui.fmt_energy(wh / 1000),
            ),
            key="fleet_energy_rank",
        )
    with right:
        st.plotly_chart(
            charts.ranking(
                apps,
                "carbon_g",
                "app",
                "Carbon by application",
                "Carbon (g CO2e)",
                fmt=ui.fmt_grams,
                color="#8E6C8A",
            ),
            key="fleet_carbon_rank",
        )
    ui.model_note(estimated)

    st.subheader("SCI per application")
    table, scale = sci_table(apps, before)
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            f"SCI ({scale}/unit)": st.column_config.NumberColumn(format="%.4g"),
            f"previous ({scale}/unit)": st.column_config.NumberColumn(format="%.4g"),
            "change": st.column_config.TextColumn(help="SCI versus the previous period"),
            "carbon (g)": st.column_config.NumberColumn(format="%.4g"),
            "units": st.column_config.NumberColumn(format="%d"),
        },
        key="fleet_sci",
    )
    st.caption(
        "SCI = (E × I + M) per R: the period's carbon summed over its units, never a mean of "
        "interval ratios. ↑ is worse (more carbon per unit)."
    )


def sci_table(apps: pd.DataFrame, before: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """One row per app: its unit, SCI now and before (in g, or mg when all are below
    10 mg), and the change; returns the table and the mass unit it uses."""
    prev = before.set_index("app")["sci"] if not before.empty else pd.Series(dtype=float)
    biggest = apps["sci"].abs().max()
    scale, factor = ("mg", 1000.0) if biggest == biggest and biggest < 0.01 else ("g", 1.0)
    rows = []
    for r in apps.sort_values("carbon_g", ascending=False).itertuples():
        old = float(prev.get(r.app, float("nan")))
        delta = ui.change(r.sci, old)
        arrow = "" if delta is None else ("↑ " if r.sci > old else "↓ ")
        rows.append(
            {
                "app": r.app,
                "unit": r.unit or "(none configured)",
                f"SCI ({scale}/unit)": r.sci * factor,
                f"previous ({scale}/unit)": old * factor,
                "change": f"{arrow}{delta}" if delta else "–",
                "carbon (g)": r.carbon_g,
                "units": r.units,
            }
        )
    return pd.DataFrame(rows), scale


fleet()
