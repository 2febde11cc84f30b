"""What every page shares: settings, the data source and its cached queries
(``View.data``), the sidebar's choices, honest states (no data, stale hosts, model
estimates) and number formats."""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd
import streamlit as st

from agent.config import ConfigError
from dashboard import config as dash_config
from dashboard.data.base import DataSource, DataSourceError
from dashboard.data.influx_source import InfluxClient, InfluxSource
from dashboard.data.sqlite_source import SqliteSource
from dashboard.escape import md
from dashboard.queries import Queries
from dashboard.timerange import (
    CUSTOM,
    DEFAULT_PRESET,
    PRESETS,
    TimeRange,
    bucket_s_for,
    fmt_ago,
    fmt_ms,
    now_ms,
)
from sci import humanize

#: A host is flagged as stopped after this many of its intervals with no data (and 30 s).
STALE_INTERVALS = 3
STALE_MIN_S = 30.0
#: Ranges end on a multiple of this (ranges over a day: on a whole bucket).
NOW_STEP_S = 5.0
MODEL_NOTE = "estimated by the power model (source=model)"
PSEUDO_PREFIX = "_"

# -- settings and source --------------------------------------------------------------------


def cli_config_path() -> str | None:
    """``--config PATH`` after streamlit's ``--``, else None ($SCI_AGENT_CONFIG applies)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--config")
    args, _ = parser.parse_known_args(sys.argv[1:])
    path: str | None = args.config
    return path


@st.cache_resource(show_spinner=False)
def _load(path: str | None, mtime: float) -> dash_config.Settings:
    del mtime  # part of the cache key: a changed file is read again
    return dash_config.load(path)


def settings() -> dash_config.Settings:
    """The config, read once per change of the file; a bad one stops the page with its error."""
    path = dash_config.config_path(cli_config_path())
    try:
        mtime = os.stat(path).st_mtime if path else 0.0
        return _load(path, mtime)
    except (ConfigError, OSError) as exc:
        st.error(f"sci-agent dashboard: config error: {md(exc)}")
        st.stop()
        raise  # unreachable: st.stop raises


@st.cache_resource(show_spinner=False)
def _source(
    kind: str,
    path: str,
    url: str,
    database: str,
    user: str,
    fingerprint: str,
    _secret: tuple[str | None, str | None],
) -> DataSource:
    del fingerprint  # in the key only: changed credentials make a new client
    if kind == "influxdb":
        password, token = _secret
        client = InfluxClient(url, database, username=user or None, password=password, token=token)
        return InfluxSource(client)
    return SqliteSource(path)


def source(s: dash_config.Settings) -> DataSource:
    """The configured source (one per process; credentials are not part of any key shown)."""
    d = s.dashboard
    return _source(
        d.source,
        s.config.store.path,
        d.influx_url,
        d.influx_database,
        d.influx_username or "",
        hashlib.sha256(f"{d.influx_password}\0{d.influx_token}".encode()).hexdigest()[:16],
        (d.influx_password, d.influx_token),
    )


# -- the sidebar (rendered by app.py, read by the pages) ----------------------------------


@dataclass(frozen=True)
class Choice:
    """The sidebar's choices: a preset (or custom bounds) and the host filter."""

    preset: str
    custom: tuple[datetime, datetime] | None
    hosts: tuple[str, ...] | None  # None: every host

    def time_range(self, end_ms: int, min_bucket_s: float = 0, align: bool = True) -> TimeRange:
        if self.preset == CUSTOM and self.custom is not None:
            return TimeRange.between(*self.custom, min_bucket_s=min_bucket_s, align=align)
        return TimeRange.ending(end_ms, PRESETS[self.preset], min_bucket_s, align)


def sidebar(s: dash_config.Settings, src: DataSource) -> None:
    """Time range, host filter and where the data comes from; choices go to session state."""
    with st.sidebar:
        st.caption(f"Data: {md(src.describe())}")
        options = [*PRESETS, CUSTOM]
        preset = st.selectbox(
            "Time range", options, index=options.index(DEFAULT_PRESET), key="range_preset"
        )
        custom = None
        if preset == CUSTOM:
            now = datetime.now(UTC).replace(tzinfo=None, second=0, microsecond=0)
            start = st.datetime_input(
                "From (UTC)", value=now - timedelta(days=1), key="range_from", step=300
            )
            end = st.datetime_input("To (UTC)", value=now, key="range_to", step=300)
            if start is not None and end is not None and end > start:
                custom = (start, end)
            else:
                st.error("The range's end must be after its start.")
        try:
            known = list(Queries(src).hosts(round_now(s))["host"])
        except DataSourceError:
            known = []
        chosen = st.multiselect(
            "Hosts", known, key="host_filter", placeholder="All hosts", help="Empty: every host"
        )
        st.caption(
            f"Times in UTC · refreshes every {s.dashboard.refresh_s:g} s · "
            f"{len(known)} host{'s' if len(known) != 1 else ''} known"
        )
    st.session_state["choice"] = Choice(
        preset if custom is not None or preset != CUSTOM else DEFAULT_PRESET,
        custom,
        tuple(chosen) if chosen else None,
    )


def choice() -> Choice:
    found = st.session_state.get("choice")
    return found if isinstance(found, Choice) else Choice(DEFAULT_PRESET, None, None)


def round_now(s: dash_config.Settings, step_s: float | None = None) -> int:
    """Now, rounded down to ``step_s`` (default: 5 s, or the refresh period if shorter),
    so the queries of reruns in between (widget changes) repeat and hit the cache."""
    step_s = step_s if step_s is not None else min(NOW_STEP_S, s.dashboard.refresh_s)
    step = max(1, round(step_s * 1000))
    return (now_ms() // step) * step


# -- one page run ----------------------------------------------------------------------------


@dataclass
class View:
    """What a page run reads first: the range, the hosts and their state."""

    settings: dash_config.Settings
    src: DataSource
    rng: TimeRange
    now_ms: int
    hosts: pd.DataFrame  # host, last_ms, interval_s, watts, stale
    selected: tuple[str, ...] | None

    @property
    def host_names(self) -> list[str]:
        return list(self.hosts["host"])

    @property
    def filter(self) -> tuple[str, ...] | None:
        """The host filter passed to queries (None: all)."""
        return self.selected

    @property
    def data(self) -> Queries:
        """The source's queries, typed and cached."""
        return Queries(self.src)

    def bucket_seconds(
        self, df: pd.DataFrame, hosts: Sequence[str] | None = None, rng: TimeRange | None = None
    ) -> pd.Series:
        """The seconds of each row's bucket that have data: inside the range (``rng``,
        default the page's), and not after the newest data of ``hosts``; NaN for none."""
        rng = rng or self.rng
        known = self.hosts if hosts is None else self.hosts[self.hosts["host"].isin(hosts)]
        newest = int(known["last_ms"].max()) if not known.empty else rng.end_ms
        start = df["time"].astype("datetime64[ms]").astype("int64")
        lo = start.clip(lower=rng.start_ms)
        hi = (start + rng.bucket_ms).clip(upper=min(rng.end_ms, newest))
        return ((hi - lo) / 1000).where(hi > lo)

    def per_second(
        self, df: pd.DataFrame, columns: Sequence[str], hosts: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Sums per bucket → rates: each divided by the seconds of its bucket that have data
        (``bucket_seconds``), so the first and the still-filling last bucket read true
        instead of dipping."""
        seconds = self.bucket_seconds(df, hosts)
        out = df.copy()
        for column in columns:
            out[column] = df[column] / seconds
        return out.dropna(subset=list(columns))

    def rate(
        self, df: pd.DataFrame, column: str, rng: TimeRange | None = None
    ) -> float:
        """Σ ``column`` over the seconds that have data (the buckets holding rows), not
        over the whole range: the mean of what ``per_second`` charts, weighted by time."""
        if df.empty:
            return math.nan
        seconds = self.bucket_seconds(df, None, rng)
        kept = seconds.notna()
        total = float(seconds[kept].sum())
        return float(df.loc[kept, column].sum()) / total if total > 0 else math.nan


def view(s: dash_config.Settings, align: bool = True) -> View | None:
    """The page's view, or None after saying why there is nothing to show."""
    src = source(s)
    ch = choice()
    try:
        hosts = hosts_frame(src, now_ms())
        # buckets of at least two intervals: a jittered interval end never leaves a bucket
        # empty, which would make rates (units per second, mean watts) jump
        longest = float(hosts["interval_s"].max()) if not hosts.empty else 0.0
        min_bucket_s = 2 * longest if longest == longest else 0.0
        end = round_now(s)
        if ch.preset in PRESETS and PRESETS[ch.preset] > 86400:
            # a week or a month ends on its last whole bucket: re-queried once per bucket
            end = round_now(s, bucket_s_for(PRESETS[ch.preset], min_s=min_bucket_s))
        rng = ch.time_range(end, min_bucket_s=min_bucket_s, align=align)
    except DataSourceError as exc:
        st.error(f"Cannot read the data: {md(exc)}")
        return None
    except ValueError as exc:
        st.error(md(exc))
        return None
    if hosts.empty:
        no_data(s, src)
        return None
    if ch.hosts is not None:
        hosts = hosts[hosts["host"].isin(ch.hosts)].reset_index(drop=True)
    st.session_state["last_range"] = rng  # for tests and debugging
    return View(s, src, rng, end, hosts, ch.hosts)


def hosts_frame(src: DataSource, now: int) -> pd.DataFrame:
    """``src.hosts`` plus ``stale``: no data for > 3 intervals (at least 30 s). Not cached."""
    df = src.hosts(now)
    if df.empty:
        return df.assign(stale=pd.Series(dtype=bool))
    limit_s = (df["interval_s"].fillna(0) * STALE_INTERVALS).clip(lower=STALE_MIN_S)
    df = df.copy()
    df["stale"] = (now - df["last_ms"]) / 1000 > limit_s
    return df


def no_data(s: dash_config.Settings, src: DataSource) -> None:
    """Say that there is no data yet, and how to get some."""
    if src.kind == "store":
        st.info(
            f"**No data yet** in {md(src.describe())}.\n\n"
            "Start the agent: `make run` (or `sci-agent run`). It writes one interval every "
            f"{s.config.interval_s:g} s; this page shows it within a minute."
        )
    else:
        st.info(
            f"**No data yet** in {md(src.describe())}.\n\n"
            "Start agents with an `[influxdb]` section writing to this database "
            '(`sci-agent run`, see docs/fleet.md), or set `[dashboard] source = "store"` to '
            "read this host's embedded store."
        )


def stale_warnings(v: View, hosts: Sequence[str] | None = None) -> list[str]:
    """One warning per host that stopped reporting; returns their names."""
    df = v.hosts if hosts is None else v.hosts[v.hosts["host"].isin(hosts)]
    names = []
    for row in df[df["stale"]].itertuples():
        age = (v.now_ms - row.last_ms) / 1000
        every = (
            f"; it reported every {fmt_seconds(row.interval_s)}"
            if row.interval_s == row.interval_s
            else ""
        )
        st.warning(
            f"**{md(row.host)} stopped reporting**: last data {fmt_ms(row.last_ms)} UTC "
            f"({fmt_ago(max(age, 0))} ago{every}).",
            icon=":material/warning:",
        )
        names.append(row.host)
    return names


def model_note(estimated: pd.DataFrame, hosts: Sequence[str] | None = None) -> bool:
    """A caption under a chart whose data is partly estimated by the power model."""
    df = estimated[estimated["source"] == "model"]
    if hosts is not None:
        df = df[df["host"].isin(list(hosts))]
    if df.empty:
        return False
    parts = "; ".join(
        f"{md(host)}: {', '.join(md(c) for c in g['component'])}"
        for host, g in df.groupby("host", sort=True)
    )
    st.caption(f":material/warning: Partly {MODEL_NOTE}, not measured: {parts}.")
    return True


def totals(series: pd.DataFrame) -> pd.Series:
    """One app's period from its buckets: sums, and SCI = Σ carbon / Σ units (carbon:
    local plus the app's remote AI calls, ``remote_g``)."""
    columns = ["energy_kwh", "operational_g", "embodied_g", "remote_g", "units", "carbon_g"]
    sums = series[[c for c in columns if c in series.columns]].sum()
    units = [u for u in series["unit"] if isinstance(u, str) and u]
    return pd.concat(
        [
            sums,
            pd.Series(
                {
                    "sci": sums["carbon_g"] / sums["units"] if sums["units"] > 0 else math.nan,
                    "unit": max(units) if units else None,
                }
            ),
        ]
    )


def first_app(names: list[str], totals: pd.DataFrame) -> str:
    """The app a first visit opens on: the one with units and the most carbon, else the
    one with the most energy, else the first name (never an app without an SCI when
    one has it)."""
    rows = totals[totals["app"].isin(names)]
    counted = rows[rows["units"] > 0]
    if not counted.empty:
        return str(counted.sort_values(["carbon_g", "app"], ascending=[False, True]).iloc[0]["app"])
    if not rows.empty:
        return str(rows.sort_values(["energy_kwh", "app"], ascending=[False, True]).iloc[0]["app"])
    return names[0]


def real_apps(names: Sequence[str]) -> list[str]:
    """App names without the pseudo-apps (``_idle``, ``_unattributed``)."""
    return [a for a in names if not str(a).startswith(PSEUDO_PREFIX)]


# -- number formats -------------------------------------------------------------------------


def _missing(value: float | None) -> bool:
    return value is None or value != value or not math.isfinite(value)


def fmt_energy(kwh: float | None) -> str:
    """``635 µWh``, ``812.4 Wh``, ``12.35 kWh`` (``sci.humanize``, as the CLI writes it)."""
    return "–" if kwh is None or _missing(kwh) else humanize.kwh(kwh)


def fmt_grams(g: float | None) -> str:
    """``458.4 µg``, ``812.4 g``, ``12.35 kg``, ``3.21 t`` (CO2e)."""
    return "–" if g is None or _missing(g) else humanize.grams(g)


def fmt_power(watts: float | None) -> str:
    """``350 mW``, ``84.2 W``, ``1.2 kW``."""
    return "–" if watts is None or _missing(watts) else humanize.watts(watts)


def fmt_sci(value: float | None) -> str:
    """Grams of CO2e per unit: ``12.3 mg``, ``405 µg``; ``–`` when there is no SCI."""
    return fmt_grams(value)


def fmt_number(value: float | None) -> str:
    """A plain number, four significant digits, never ``1e-05``; ``–`` when missing."""
    return "–" if value is None or _missing(value) else humanize.number(value)


def fmt_seconds(value: float | None) -> str:
    """An interval for people: ``5 s`` (not ``4.99998 s``), ``2 min 5 s``."""
    if value is None or _missing(value):
        return "–"
    return humanize.seconds(round(value) if value >= 1 else value)


#: Mass prefixes an axis may use: (label, grams per label unit).
MASS_SCALES = (("µg", 1e-6), ("mg", 1e-3), ("g", 1.0), ("kg", 1e3), ("t", 1e6))
#: Energy prefixes an axis may use: (label, kWh per label unit).
ENERGY_SCALES = (("µWh", 1e-9), ("mWh", 1e-6), ("Wh", 1e-3), ("kWh", 1.0), ("MWh", 1e3))


def scale_for(
    values: Sequence[float] | pd.Series, scales: Sequence[tuple[str, float]]
) -> tuple[str, float]:
    """The prefix that puts the biggest value between 1 and 1,000 (as the headline's
    formatter does), so a chart's axis and its headline say the same unit."""
    finite = [abs(float(x)) for x in values if x == x and math.isfinite(float(x))]
    biggest = max(finite, default=0.0)
    chosen = next((s for s in scales if s[1] == 1.0), scales[0])
    if biggest <= 0:
        return chosen
    for label, factor in scales:
        if biggest >= factor * 0.9999:
            chosen = (label, factor)
    if biggest < scales[0][1]:
        chosen = scales[0]
    return chosen


def carbon_split(operational_g: float, embodied_g: float) -> str:
    """``Operational 2.359 g (21%) · embodied 8.849 g (79%)``."""
    total = operational_g + embodied_g
    if not total or total != total:
        return f"Operational {fmt_grams(operational_g)} · embodied {fmt_grams(embodied_g)}"
    return (
        f"Operational {fmt_grams(operational_g)} ({operational_g / total:.0%}) · "
        f"embodied {fmt_grams(embodied_g)} ({embodied_g / total:.0%})"
    )


def plural(unit: str) -> str:
    """``request`` → ``requests`` (a unit already ending in s stays)."""
    return unit if unit.endswith("s") else unit + "s"


def change(now: float, before: float) -> str | None:
    """``+12.3%`` versus the previous period; None when it cannot be said."""
    if before != before or now != now or before == 0:
        return None
    return f"{(now - before) / abs(before) * 100:+.1f}%"


def bucket_label(rng: TimeRange) -> str:
    """``5 min``: the charts' bucket, for axis titles."""
    s = rng.bucket_s
    if s < 60:
        return f"{s:g} s"
    if s < 3600:
        return f"{s / 60:g} min"
    if s < 86400:
        return f"{s / 3600:g} h"
    return f"{s / 86400:g} d"
