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
    estimated = v.data.estimated_components(v.filter, v.rng)
    totals = v.data.app_totals(v.filter, v.rng)
    before = v.data.app_totals(v.filter, v.rng.previous())
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
        help="Operational (E × I) + embodied (M) + the apps' remote AI calls (estimated),"
        " g CO2e, vs the previous period",
    )
    cols[3].caption(
        ui.carbon_split(float(totals["operational_g"].sum()), float(totals["embodied_g"].sum()))
    )
    remote_g = float(totals["remote_g"].sum())
    if remote_g > 0:
        cols[3].caption(f"+ remote AI calls {ui.fmt_grams(remote_g)} (estimated)")

    power = v.data.power_by_component(v.filter, v.rng)
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
    energy_unit, per_kwh = ui.scale_for(apps["energy_kwh"], ui.ENERGY_SCALES)
    mass, per_g = ui.scale_for(apps["carbon_g"], ui.MASS_SCALES)
    with left:
        st.plotly_chart(
            charts.ranking(
                apps.assign(energy=apps["energy_kwh"] / per_kwh),
                "energy",
                "app",
                "Energy by application",
                f"Energy ({energy_unit})",
                fmt=lambda x: ui.fmt_energy(x * per_kwh),
            ),
            key="fleet_energy_rank",
        )
    with right:
        st.plotly_chart(
            charts.ranking(
                apps.assign(carbon=apps["carbon_g"] / per_g),
                "carbon",
                "app",
                "Carbon by application",
                f"Carbon ({mass} CO2e)",
                fmt=lambda x: ui.fmt_grams(x * per_g),
                color="#8E6C8A",
            ),
            key="fleet_carbon_rank",
        )
    ui.model_note(estimated)

    st.subheader("SCI per application")
    table = sci_table(apps, before)
    if table.empty:
        st.info("No application in this choice counts functional units, so none has an SCI.")
    else:
        st.dataframe(
            table,
            hide_index=True,
            column_config={
                "change": st.column_config.TextColumn(help="SCI versus the previous period"),
                "units": st.column_config.NumberColumn(format="localized"),
            },
            key="fleet_sci",
        )
    unitless = sorted(str(a) for a in apps[~(apps["units"] > 0)]["app"])
    note = (
        f" Not shown, no functional unit counted: {', '.join(md(a) for a in unitless)} "
        "(give the app's `[[apps]]` rule a `unit` and push counts)."
        if unitless
        else ""
    )
    st.caption(
        "SCI = (E × I + M) per R: the period's carbon summed over its units, never a mean of "
        "interval ratios. ↑ is worse (more carbon per unit)." + note
    )


def sci_table(apps: pd.DataFrame, before: pd.DataFrame) -> pd.DataFrame:
    """One row per app that counted units: its unit, SCI now and before, the change, its
    carbon and units; every figure written as ``ui`` writes it (``12.3 mg``, ``–``)."""
    prev = before.set_index("app")["sci"] if not before.empty else pd.Series(dtype=float)
    rows = []
    counted = apps[apps["units"] > 0]
    for r in counted.sort_values("carbon_g", ascending=False).itertuples():
        old = float(prev.get(r.app, float("nan")))
        delta = ui.change(r.sci, old)
        arrow = "" if delta is None else ("↑ " if r.sci > old else "↓ ")
        rows.append(
            {
                "app": r.app,
                "unit": r.unit if isinstance(r.unit, str) and r.unit else "–",
                "SCI per unit": ui.fmt_sci(r.sci),
                "previous": ui.fmt_sci(old),
                "change": f"{arrow}{delta}" if delta else "–",
                "carbon": ui.fmt_grams(r.carbon_g),
                "units": r.units,
            }
        )
    columns = ["app", "unit", "SCI per unit", "previous", "change", "carbon", "units"]
    return pd.DataFrame(rows, columns=columns)


fleet()
