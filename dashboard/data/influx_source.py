"""InfluxDB through InfluxQL over HTTP ``/query``: 1.x natively, 2.x and 3.x through their
v1 compatibility API (a database/retention-policy mapping to the bucket).

Series are bucketed with ``GROUP BY time(<bucket>)`` sized to the chart, so the server
returns a few hundred points per series. Host, app and zone names reach InfluxQL only
through ``influxql.literal``. Credentials travel in the ``Authorization`` header (Basic
for 1.x users, ``Token`` for the v1-compatible APIs), never in the URL, and no message
or ``repr`` shows them.
"""

from __future__ import annotations

import base64
import math
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from agent.config import Config
from agent.httpclient import HttpError, Response, explanation, redact_url, request
from agent.report import ReportError, SciReport, assemble, remote_summary
from dashboard.data.base import (
    LOOKBACK_MS,
    REMOTE_SUMS,
    DataSourceError,
    Derived,
    Hosts,
    empty,
    finish,
    with_rates,
    with_sci,
)
from dashboard.data.influxql import by_time, equals_any, ident, time_range, where
from dashboard.timerange import TimeRange

FUTURE_MS = 3600 * 1000  # tolerate hosts whose clocks run a little ahead
MAX_ANSWER_BYTES = 256 << 20  # bucketed queries answer far less; this bounds a mistake


@dataclass(frozen=True)
class Series:
    """One series of one statement's result."""

    name: str
    tags: dict[str, str]
    columns: list[str]
    values: list[list[Any]]

    def rows(self) -> list[dict[str, Any]]:
        return [{**self.tags, **dict(zip(self.columns, v, strict=True))} for v in self.values]


class InfluxClient:
    """``GET /query`` with ``epoch=ms``; one request may carry several statements."""

    def __init__(
        self,
        url: str,
        database: str,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout_s: float = 15.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self.timeout_s = timeout_s
        self._headers = {"Accept": "application/json"}
        self._secrets: tuple[str | None, ...] = (token, password)
        if token:
            self._headers["Authorization"] = f"Token {token}"
        elif username:
            pair = f"{username}:{password or ''}".encode()
            credentials = base64.b64encode(pair).decode()
            self._headers["Authorization"] = f"Basic {credentials}"
            self._secrets += (credentials,)

    def __repr__(self) -> str:
        return f"InfluxClient({redact_url(self.url)!r}, {self.database!r})"

    def query(self, *statements: str) -> list[list[Series]]:
        """Each statement's series; ``DataSourceError`` names what went wrong."""
        params = urllib.parse.urlencode(
            {"db": self.database, "epoch": "ms", "q": ";\n".join(statements)}
        )
        where_ = f"InfluxDB at {redact_url(self.url)}"
        try:
            response = request(
                "GET",
                f"{self.url}/query?{params}",
                headers=self._headers,
                timeout_s=self.timeout_s,
                max_response_bytes=MAX_ANSWER_BYTES,
                raise_for_status=False,
                secrets=self._secrets,
            )
        except HttpError as exc:
            raise DataSourceError(f"{where_}: {exc.message}") from None
        if response.status in (401, 403):
            raise DataSourceError(
                f"{where_}: HTTP {response.status}, not authorised: check"
                " dashboard.influx_username and influx_password, or influx_token"
                " (read access to the database)"
            )
        if not response.ok:
            raise DataSourceError(f"{where_}: HTTP {response.status}: {_error_of(response)}")
        try:
            body = response.json()
        except HttpError as exc:
            raise DataSourceError(f"{where_}: not an InfluxDB answer: {exc.message}") from None
        if "error" in body:
            raise DataSourceError(f"{where_}: {body['error']}")
        results = body.get("results", [])
        out: list[list[Series]] = []
        for result in results:
            message = result.get("error")
            if message and "database not found" in message:
                out.append([])  # nothing written yet
                continue
            if message:
                raise DataSourceError(f"{where_}: {message}")
            out.append(
                [
                    Series(s.get("name", ""), s.get("tags") or {}, s["columns"], s["values"])
                    for s in result.get("series", [])
                ]
            )
        return out + [[] for _ in range(len(statements) - len(out))]


def _error_of(response: Response) -> str:
    return explanation(response) or response.reason


def _frame(series: list[Series], bucketed: bool = False) -> pd.DataFrame:
    """Rows of every series (tags as columns); ``bucketed`` undoes ``by_time``'s 1 ms shift."""
    df = pd.DataFrame([row for s in series for row in s.rows()])
    if bucketed and not df.empty:
        df["time"] = df["time"].astype("int64") - 1
    return df


def _num(value: Any) -> float:
    return float(value) if value is not None else 0.0


class InfluxSource(Derived):
    """Reads the measurements of ``exporters/points.py`` from one database."""

    kind = "influxdb"

    def __init__(self, client: InfluxClient) -> None:
        self.client = client

    def describe(self) -> str:
        return f"InfluxDB {redact_url(self.client.url)}, database {self.client.database}"

    def cache_key(self) -> str:
        return f"influxdb:{redact_url(self.client.url)}:{self.client.database}"

    def _one(self, statement: str) -> list[Series]:
        return self.client.query(statement)[0]

    @staticmethod
    def _hosts_cond(hosts: Hosts) -> str | None:
        return None if hosts is None else equals_any("host", hosts)

    def hosts(self, now_ms: int) -> pd.DataFrame:
        rng = f"time > {now_ms - LOOKBACK_MS}ms AND time <= {now_ms + FUTURE_MS}ms"
        series = self._one(
            f'SELECT "joules", "watts" FROM "host_energy" WHERE {rng}'
            ' GROUP BY "host", "component" ORDER BY time DESC LIMIT 1'
        )
        df = _frame(series)
        if df.empty:
            return empty("hosts")
        rows = []
        for host, part in df.groupby("host"):
            last = int(part["time"].max())
            now = part[part["time"] == last]
            watts = float(now["watts"].sum())
            measured = now[now["watts"] > 0]
            seconds = (
                float((measured["joules"] / measured["watts"]).median())
                if not measured.empty
                else math.nan
            )
            rows.append((host, last, seconds, watts))
        return finish(
            "hosts", pd.DataFrame(rows, columns=["host", "last_ms", "interval_s", "watts"])
        )

    def _tag_values(self, measurement: str, key: str, cond: str | None = None) -> list[str]:
        clause = f" WHERE {cond}" if cond else ""
        series = self._one(
            f"SHOW TAG VALUES FROM {ident(measurement)} WITH KEY = {ident(key)}{clause}"
        )
        return sorted({row["value"] for s in series for row in s.rows()})

    def apps(self, hosts: Hosts = None) -> pd.DataFrame:
        if hosts is not None and not hosts:
            return empty("apps")
        names = self._tag_values("sci", "app", self._hosts_cond(hosts))
        return finish("apps", pd.DataFrame({"app": names}))

    def zones(self) -> pd.DataFrame:
        return finish("zones", pd.DataFrame({"zone": self._tag_values("grid_intensity", "zone")}))

    def power_by_component(self, hosts: Hosts, rng: TimeRange) -> pd.DataFrame:
        series = self._one(
            'SELECT mean("watts") AS "watts" FROM "host_energy"'
            f" WHERE {where(time_range(rng), self._hosts_cond(hosts))}"
            f' GROUP BY {by_time(rng)}, "host", "component" fill(none)'
        )
        return finish("power_by_component", _frame(series, bucketed=True))

    def _sci(
        self, hosts: Hosts, apps: Sequence[str] | None, rng: TimeRange, bucketed: bool
    ) -> pd.DataFrame:
        apps_cond = None if apps is None else equals_any("app", apps)
        group = f'{by_time(rng)}, "app", "unit" fill(none)' if bucketed else '"app", "unit"'
        series = self._one(
            'SELECT sum("energy_kwh") AS "energy_kwh", sum("operational_g") AS "operational_g",'
            ' sum("embodied_g") AS "embodied_g", sum("units") AS "units",'
            ' sum("remote_g") AS "remote_g" FROM "sci"'
            f" WHERE {where(time_range(rng), self._hosts_cond(hosts), apps_cond)}"
            f" GROUP BY {group}"
        )
        df = _frame(series, bucketed)
        if df.empty:
            return df
        df["unit"] = df["unit"].replace("", None)
        keys = ["time", "app"] if bucketed else ["app"]
        sums = ["energy_kwh", "operational_g", "embodied_g", "units", "remote_g"]
        if "remote_g" not in df.columns:  # the field is absent without AI calls
            df["remote_g"] = 0.0
        df[sums] = df[sums].astype(float).fillna({"remote_g": 0.0})
        # one row per key, as the store gives: sum across units, keep the (max) unit name
        out = df.groupby(keys, as_index=False).agg(
            unit=("unit", lambda u: max((x for x in u if x), default=None)),
            **{c: (c, "sum") for c in sums},
        )
        return out.sort_values(keys)

    def app_totals(self, hosts: Hosts, rng: TimeRange) -> pd.DataFrame:
        df = self._sci(hosts, None, rng, bucketed=False)
        return finish("app_totals", df if df.empty else with_sci(df))

    def sci_over_time(
        self, hosts: Hosts, apps: Sequence[str] | None, rng: TimeRange
    ) -> pd.DataFrame:
        if apps is not None and not apps:
            return empty("sci_over_time")
        df = self._sci(hosts, apps, rng, bucketed=True)
        return finish("sci_over_time", df if df.empty else with_rates(with_sci(df), rng))

    def remote_over_time(self, hosts: Hosts, app: str, rng: TimeRange) -> pd.DataFrame:
        if hosts is not None and not hosts:
            return empty("remote_over_time")
        sums = ", ".join(f"sum({ident(c)}) AS {ident(c)}" for c in REMOTE_SUMS)
        series = self._one(
            f'SELECT {sums} FROM "remote_inference"'
            f" WHERE {where(time_range(rng), self._hosts_cond(hosts), equals_any('app', [app]))}"
            f" GROUP BY {by_time(rng)} fill(none)"
        )
        df = _frame(series, bucketed=True)
        if df.empty:
            return empty("remote_over_time")
        df[list(REMOTE_SUMS)] = df[list(REMOTE_SUMS)].astype(float).fillna(0.0)
        return finish("remote_over_time", df.sort_values("time"))

    def energy_by_component(self, hosts: Hosts, app: str, rng: TimeRange) -> pd.DataFrame:
        series = self._one(
            'SELECT sum("cpu_j") AS "cpu", sum("dram_j") AS "dram", sum("gpu_j") AS "gpu"'
            ' FROM "app_energy"'
            f" WHERE {where(time_range(rng), self._hosts_cond(hosts), equals_any('app', [app]))}"
            f" GROUP BY {by_time(rng)} fill(none)"
        )
        wide = _frame(series, bucketed=True)
        if wide.empty:
            return empty("energy_by_component")
        long = wide.melt("time", var_name="component", value_name="joules")
        return finish("energy_by_component", long)

    def intensity_over_time(self, zones: Sequence[str] | None, rng: TimeRange) -> pd.DataFrame:
        if zones is not None and not zones:
            return empty("intensity_over_time")
        cond = where(time_range(rng), None if zones is None else equals_any("zone", zones))
        group = f'GROUP BY {by_time(rng)}, "zone", "provider" fill(none)'
        values, fallbacks = self.client.query(
            'SELECT mean("gco2_per_kwh") AS "gco2_per_kwh", count("gco2_per_kwh") AS "intervals"'
            f' FROM "grid_intensity" WHERE {cond} {group}',
            'SELECT count("gco2_per_kwh") AS "fallbacks" FROM "grid_intensity"'
            f' WHERE {cond} AND "fallback" = true {group}',
        )
        df = _frame(values, bucketed=True)
        if df.empty:
            return empty("intensity_over_time")
        fb = _frame(fallbacks, bucketed=True)
        if fb.empty:
            df["fallbacks"] = 0
        else:
            df = df.merge(fb, on=["time", "zone", "provider"], how="left")
            df["fallbacks"] = df["fallbacks"].fillna(0)
        df["fallback_share"] = df["fallbacks"] / df["intervals"]
        return finish("intensity_over_time", df.sort_values("time"))

    def top_processes(self, host: str, rng: TimeRange, n: int = 10) -> pd.DataFrame:
        series = self._one(
            'SELECT sum("joules") AS "joules", sum("cpu_s") AS "cpu_s" FROM "process_energy"'
            f" WHERE {where(time_range(rng), equals_any('host', [host]))}"
            ' GROUP BY "app", "process"'
        )
        df = _frame(series)
        if df.empty:
            return empty("top_processes")
        df = df.sort_values("joules", ascending=False).head(n)
        return finish("top_processes", df)

    def idle_vs_active(self, host: str, rng: TimeRange) -> pd.DataFrame:
        """Active (processes' dynamic), idle (all static) and unattributed energy.

        An app's ``idle_j`` is the static energy its share policy gave it, and
        ``_idle`` holds the static energy no app was given: idle is their sum, the same
        figure as the store's ``intervals.idle_j``, whatever the policy.
        """
        series = self._one(
            'SELECT sum("total_j") AS "joules", sum("idle_j") AS "static" FROM "app_energy"'
            f" WHERE {where(time_range(rng), equals_any('host', [host]))}"
            f' GROUP BY {by_time(rng)}, "app" fill(none)'
        )
        df = _frame(series, bucketed=True)
        if df.empty:
            return empty("idle_vs_active")
        static = df["static"].fillna(0.0) if "static" in df.columns else df["joules"] * 0.0
        df["joules"] = df["joules"].fillna(0.0)
        pseudo = df["app"].isin(("_idle", "_unattributed"))
        df["active_j"] = (df["joules"] - static).where(~pseudo, 0.0)
        df["idle_j"] = static.where(~pseudo, 0.0) + df["joules"].where(df["app"] == "_idle", 0.0)
        df["unattributed_j"] = df["joules"].where(df["app"] == "_unattributed", 0.0)
        wide = df.groupby("time")[["active_j", "idle_j", "unattributed_j"]].sum()
        return finish("idle_vs_active", wide.reset_index())

    def estimated_components(self, hosts: Hosts, rng: TimeRange) -> pd.DataFrame:
        series = self._one(
            'SELECT last("joules") FROM "host_energy"'
            f" WHERE {where(time_range(rng), self._hosts_cond(hosts))}"
            ' GROUP BY "host", "component", "source"'
        )
        rows = sorted({(s.tags["host"], s.tags["component"], s.tags["source"]) for s in series})
        return finish(
            "estimated_components", pd.DataFrame(rows, columns=["host", "component", "source"])
        )

    def sci_report(self, config: Config, app: str, start_ms: int, end_ms: int) -> SciReport:
        """The figures ``agent.report.build`` gives from the store, summed by InfluxQL.

        I is the mean of the intervals' intensities: the store's time-weighted mean when
        intervals have the same length (the agent's fixed rate).
        """
        rng = TimeRange(start_ms, end_ms, max(1, end_ms - start_ms))
        span = time_range(rng)
        app_cond = where(span, equals_any("app", [app]))
        sums, first, last, parts, sources, fallbacks = self.client.query(
            'SELECT count("energy_kwh") AS "n", sum("energy_kwh") AS "energy_kwh",'
            ' sum("operational_g") AS "operational_g", sum("embodied_g") AS "embodied_g",'
            ' sum("units") AS "units", mean("intensity") AS "intensity"'
            f' FROM "sci" WHERE {app_cond} GROUP BY "host", "unit"',
            f'SELECT first("energy_kwh") FROM "sci" WHERE {app_cond}',
            f'SELECT last("energy_kwh") FROM "sci" WHERE {app_cond}',
            f'SELECT last("joules") FROM "host_energy" WHERE {span} GROUP BY "component", "source"',
            f'SELECT count("gco2_per_kwh") AS "n" FROM "grid_intensity" WHERE {span}'
            ' GROUP BY "zone", "provider", "signal"',
            f'SELECT count("gco2_per_kwh") AS "n" FROM "grid_intensity" WHERE {span}'
            ' AND "fallback" = true GROUP BY "zone", "provider", "signal"',
        )
        df = _frame(sums)
        count = int(df["n"].sum()) if not df.empty else 0
        if not count:
            known = [a for a in self.apps()["app"]]
            raise ReportError(
                f"no SCI data for app {app!r} in the period; apps in InfluxDB: "
                + (", ".join(known) or "none yet")
            )
        energy = float(df["energy_kwh"].sum())
        operational = float(df["operational_g"].sum())
        embodied = float(df["embodied_g"].sum())
        units = float(df["units"].sum())
        intensity = float((df["intensity"] * df["n"]).sum() / count)
        named = [u for u in df["unit"] if u]
        first_ms = int(first[0].values[0][0])
        last_ms = int(last[0].values[0][0])
        fallback_n = {
            (s.tags["zone"], s.tags["provider"], s.tags["signal"]): int(s.values[0][1])
            for s in fallbacks
        }
        intensity_sources = [
            {
                "zone": s.tags["zone"],
                "provider": s.tags["provider"],
                "signal": s.tags["signal"],
                "intervals": int(s.values[0][1]),
                "fallback_intervals": fallback_n.get(
                    (s.tags["zone"], s.tags["provider"], s.tags["signal"]), 0
                ),
            }
            for s in sorted(
                sources, key=lambda s: (s.tags["zone"], s.tags["provider"], s.tags["signal"])
            )
        ]
        return assemble(
            config,
            app,
            remote=self._remote_report(app_cond),
            unit=max(named) if named else None,
            first_ms=first_ms - self._interval_ms_at(first_ms),
            last_ms=last_ms,
            hosts=sorted(set(df["host"])),
            intervals=count,
            energy_kwh=energy,
            operational_g=operational,
            embodied_g=embodied,
            units=units,
            intensity=intensity,
            components=[(s.tags["component"], s.tags["source"]) for s in parts],
            intensity_sources=intensity_sources,
        )

    def _remote_report(self, cond: str) -> dict[str, Any]:
        """The report's remote AI calls of the app (``cond``); {} when it made none.

        Per (provider, model), the method, mix zone and error are the last recorded (the
        store's report takes the greatest value: the same while they do not change)."""
        sums = ", ".join(f"sum({ident(c)}) AS {ident(c)}" for c in REMOTE_SUMS)
        totals, models = self.client.query(
            f'SELECT count("calls") AS "n", {sums} FROM "remote_inference" WHERE {cond}',
            'SELECT last("method") AS "method", last("mix_zone") AS "mix_zone",'
            ' max("mix_gco2_per_kwh") AS "mix", sum("calls") AS "calls",'
            ' sum("unestimated_calls") AS "unestimated", last("error") AS "error"'
            f' FROM "remote_inference" WHERE {cond} GROUP BY "provider", "model"',
        )
        df = _frame(totals)
        if df.empty or not df["n"].sum():
            return {}
        rows = _frame(models)
        if not rows.empty:
            rows = rows.sort_values(["provider", "model"])
        cols = ["provider", "model", "method", "mix_zone", "mix", "calls", "unestimated", "error"]
        per_model = [] if rows.empty else list(rows[cols].itertuples(index=False))
        return remote_summary([df[c].iloc[0] for c in REMOTE_SUMS], per_model)

    def _interval_ms_at(self, ts_ms: int) -> float:
        """The length of the interval ending at ``ts_ms`` (host_energy: joules / watts)."""
        series = self._one(
            'SELECT "joules", "watts" FROM "host_energy"'
            f' WHERE time = {int(ts_ms)}ms AND "watts" > 0 LIMIT 1'
        )
        for s in series:
            for joules, watts in ((v[1], v[2]) for v in s.values):
                if watts:
                    return 1000.0 * _num(joules) / _num(watts)
        return 0.0
