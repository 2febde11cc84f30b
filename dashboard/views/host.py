"""Host: power by component, idle versus active, top processes."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, ui
from dashboard.escape import md

settings = ui.settings()
st.title("Host")


@st.fragment(run_every=settings.dashboard.refresh_s)
def host_page() -> None:
    v = ui.view(settings)
    if v is None:
        return
    names = v.host_names
    if not names:
        st.info("No host matches the sidebar's filter.")
        return
    remembered = st.session_state.get("host_choice")
    host = st.selectbox(
        "Host", names, index=names.index(remembered) if remembered in names else 0, key="host_pick"
    )
    st.session_state["host_choice"] = host
    st.caption(f"{v.rng.label()} · {md(v.src.describe())}")
    ui.stale_warnings(v, [host])
    row = v.hosts[v.hosts["host"] == host].iloc[0]
    estimated = v.data.estimated_components([host], v.rng)
    split = v.data.idle_vs_active(host, v.rng)
    total_j = float(split[["active_j", "idle_j", "unattributed_j"]].sum().sum())
    idle_share = float(split["idle_j"].sum()) / total_j if total_j else float("nan")
    sources = (
        ", ".join(f"{md(r.component)} ({md(r.source)})" for r in estimated.itertuples()) or "–"
    )

    cols = st.columns(4)
    cols[0].metric(
        "Power now" if not row["stale"] else "Power (last data)", ui.fmt_power(row["watts"])
    )
    cols[1].metric(
        energy_label(list(estimated["source"])),
        ui.fmt_energy(total_j / 3.6e6),
        help=f"Components: {sources}",
    )
    cols[2].metric("Idle share", f"{idle_share:.1%}" if idle_share == idle_share else "–")
    cols[3].metric("Interval", ui.fmt_seconds(float(row["interval_s"])))
    st.caption(f"Components: {sources}")

    power = v.data.power_by_component([host], v.rng)
    if power.empty:
        st.info("No power readings for this host in the period.")
    else:
        st.plotly_chart(
            charts.stacked_area(
                power,
                "watts",
                "component",
                f"Power by component (mean per {ui.bucket_label(v.rng)})",
                "Power (W)",
            ),
            key="host_power",
        )
        ui.model_note(estimated, [host])

    if not split.empty:
        watts = v.per_second(split, ["active_j", "idle_j", "unattributed_j"], [host])
        long = watts.melt("time", var_name="part", value_name="watts")
        long["part"] = long["part"].map(
            {"active_j": "active (processes)", "idle_j": "idle", "unattributed_j": "unattributed"}
        )
        st.plotly_chart(
            charts.stacked_area(
                long,
                "watts",
                "part",
                f"Active versus idle (mean per {ui.bucket_label(v.rng)})",
                "Power (W)",
                colors={
                    "active (processes)": charts.PART_COLORS["active"],
                    "idle": charts.PART_COLORS["idle"],
                    "unattributed": charts.PART_COLORS["unattributed"],
                },
            ),
            key="host_idle",
        )
        st.caption(
            "Active: energy attributed to processes. Idle: the host's baseline. Unattributed: "
            "busy time no live process accounts for (processes that started and ended within "
            "an interval, interrupts)."
        )
        ui.model_note(estimated, [host])

    top = v.data.top_processes(host, v.rng, 10)
    if top.empty:
        st.info("No per-process rows for this host in the period.")
        return
    kwh = top["joules"] / 3.6e6
    energy_unit, per_kwh = ui.scale_for(kwh, ui.ENERGY_SCALES)
    top = top.assign(
        label=[f"{p} ({a})" for p, a in zip(top["process"], top["app"], strict=True)],
        energy=kwh / per_kwh,
        shown=[ui.fmt_energy(x) for x in kwh],
    )
    st.plotly_chart(
        charts.ranking(
            top,
            "energy",
            "label",
            "Top processes by energy",
            f"Energy ({energy_unit})",
            fmt=lambda x: ui.fmt_energy(x * per_kwh),
        ),
        key="host_top",
    )
    ui.model_note(estimated, [host])
    st.dataframe(
        top[["process", "app", "shown", "cpu_s"]].rename(
            columns={"shown": "energy", "cpu_s": "CPU time (s)"}
        ),
        hide_index=True,
        column_config={"CPU time (s)": st.column_config.NumberColumn(format="%.1f")},
        key="host_top_table",
    )


def energy_label(sources: list[str]) -> str:
    """``Energy measured`` only when no component is estimated by the power model."""
    modelled = [s for s in sources if s == "model"]
    if sources and len(modelled) == len(sources):
        return "Energy (estimated)"
    return "Energy (partly estimated)" if modelled else "Energy measured"


host_page()
