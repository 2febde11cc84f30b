"""A ``/metrics`` endpoint for Prometheus, served by the agent's local HTTP API.

``MetricsSink`` is a sink like any other: each ``write`` folds the batch's intervals
into running totals under a lock. A scrape copies that state under the same lock
and builds the metric families from the copy, so it is cheap (no measuring happens
on a scrape) and consistent (it sees whole batches, never half of one).

Energy, CPU time, carbon and functional units are counters, monotonic since the
agent started: increments are clamped at zero and non-finite values are skipped, so
a counter never decreases, and an app that stops running keeps its last value.
Power, grid intensity, SCI and interval timing are gauges holding the last interval.
The sampling loop's own health (cycles ok and failed, the last success) comes from
the ``cycle_stats`` hook, as the sensors' and network sinks' health from theirs.

Labels are low-cardinality by design: host, app, component, source, unit, zone,
provider, signal, sensor, sink, kind, result, never a pid. Apps are named by the ``[[apps]]``
rules, systemd units and containers, so they are few; as a safety net for container
churn, apps beyond ``max_apps`` are counted under the ``_overflow`` app (logged once).

The registry is private to the sink (never the process-global default) and holds,
besides the agent's metrics, prometheus_client's ``ProcessCollector``: the agent's
own CPU time and memory are part of its carbon.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from agent.httpserver import Handler, Request, Response
from agent.records import IDLE_APP, UNATTRIBUTED_APP, IntervalResult, SensorHealth
from exporters.runner import RunnerStats

log = logging.getLogger("sci_agent.prometheus")

#: The Prometheus text format 0.0.4 (prometheus_client ≥ 0.22 calls 1.0.0 "latest").
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METRICS_PATH = "/metrics"
OVERFLOW_APP = "_overflow"
DEFAULT_MAX_APPS = 500

_APP_KINDS = ("cpu", "dram", "gpu")  # AppEnergy's parts; psys energy is counted under cpu

K = TypeVar("K")
T = TypeVar("T")
LabelValues = TypeVar("LabelValues", bound=tuple[str, ...])


SensorHealthSource = Callable[[], Mapping[str, SensorHealth]]
ExportStatsSource = Callable[[], Iterable[RunnerStats]]
#: (successful cycles, failed cycles, unix time the last successful cycle ended or None)
CycleStatsSource = Callable[[], tuple[int, int, float | None]]
#: (sink, up, failed writes, backlog intervals, dropped intervals) per sink
SinkHealthSource = Callable[[], Sequence[tuple[str, bool, int, int, int]]]


class AlertStats(NamedTuple):
    """The alert engine and its delivery now, for ``/metrics``."""

    alerts: Mapping[tuple[str, str], int]  # (rule, state) → alerts (scopes) in that state
    #: (webhook, notifications sent, failed attempts, dropped, waiting in the outbox)
    webhooks: Sequence[tuple[str, int, int, int, int]]


AlertStatsSource = Callable[[], AlertStats]


@dataclass
class _State:
    """Everything a scrape shows about the intervals; copied under the lock."""

    component_joules: dict[tuple[str, str, str], float] = field(default_factory=dict)
    component_watts: dict[tuple[str, str, str], float] = field(default_factory=dict)
    app_joules: dict[tuple[str, str, str], float] = field(default_factory=dict)
    app_cpu_s: dict[tuple[str, str], float] = field(default_factory=dict)
    app_carbon_g: dict[tuple[str, str, str], float] = field(default_factory=dict)
    app_units: dict[tuple[str, str, str], float] = field(default_factory=dict)
    app_sci: dict[tuple[str, str, str], float] = field(default_factory=dict)
    intervals: dict[str, float] = field(default_factory=dict)
    interval_s: dict[str, float] = field(default_factory=dict)
    last_end: dict[str, float] = field(default_factory=dict)
    intensity: dict[str, tuple[str, str, float, bool]] = field(default_factory=dict)
    clamped_ticks: dict[tuple[str], float] = field(default_factory=dict)

    def copy(self) -> _State:
        return _State(**{name: dict(value) for name, value in vars(self).items()})


class MetricsSink:
    """Accumulates intervals for ``/metrics``; ``registry`` is what a scrape renders."""

    name = "prometheus"

    def __init__(
        self,
        *,
        sensor_health: SensorHealthSource | None = None,
        export_stats: ExportStatsSource | None = None,
        max_apps: int = DEFAULT_MAX_APPS,
        process_metrics: bool = True,
        cycle_stats: CycleStatsSource | None = None,
        sink_health: SinkHealthSource | None = None,
        alert_stats: AlertStatsSource | None = None,
    ) -> None:
        self.sensor_health = sensor_health
        self.alert_stats = alert_stats
        self.export_stats = export_stats
        self.cycle_stats = cycle_stats
        self.sink_health = sink_health
        self.max_apps = max_apps
        self._state = _State()
        self._apps: set[str] = set()
        self._lock = threading.Lock()
        self._hook_errors: dict[str, str] = {}
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self))
        if process_metrics:
            ProcessCollector(registry=self.registry)

    # -- Sink -------------------------------------------------------------------

    def open(self) -> None:
        """Nothing to open; counters run from the sink's creation, not from ``open``."""

    def write(self, batch: Sequence[IntervalResult]) -> None:
        """Fold a batch into the totals; a scrape sees all of it or none of it."""
        with self._lock:
            for result in batch:
                self._add(result)

    def close(self) -> None:
        """Nothing to release; the last values stay scrapeable until the API stops."""

    # -- scrape -----------------------------------------------------------------

    def snapshot(self) -> _State:
        """A consistent copy of the totals, taken under the lock."""
        with self._lock:
            return self._state.copy()

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)

    def sensor_rows(self) -> list[SensorHealth]:
        """The sensors' health now; empty when there is no hook or it failed."""
        source = self.sensor_health
        if source is None:
            return []
        return self._guard("sensor_health", lambda: list(source().values())) or []

    def export_rows(self) -> list[RunnerStats]:
        """The network sinks' totals now; empty when there is no hook or it failed."""
        source = self.export_stats
        if source is None:
            return []

        def rows() -> list[RunnerStats]:
            found = list(source())
            for row in found:
                if not isinstance(row, RunnerStats):
                    raise TypeError(f"expected RunnerStats, got {type(row).__name__}")
            return found

        return self._guard("export_stats", rows) or []

    def sink_rows(self) -> list[tuple[str, bool, int, int, int]]:
        """Each sink's health now; empty with no hook or a failing one."""
        source = self.sink_health
        if source is None:
            return []

        def rows() -> list[tuple[str, bool, int, int, int]]:
            return [(str(n), bool(u), int(f), int(b), int(d)) for n, u, f, b, d in source()]

        return self._guard("sink_health", rows) or []

    def cycle_row(self) -> tuple[int, int, float | None] | None:
        """The sampling loop's cycle outcomes now; ``None`` with no hook or a failing one."""
        source = self.cycle_stats
        if source is None:
            return None

        def row() -> tuple[int, int, float | None]:
            ok, failed, last = source()
            return int(ok), int(failed), None if last is None else float(last)

        return self._guard("cycle_stats", row)

    def alert_row(self) -> AlertStats | None:
        """The alerts' states and deliveries now; ``None`` with no hook or a failing one."""
        source = self.alert_stats
        return None if source is None else self._guard("alert_stats", source)

    # -- internals --------------------------------------------------------------

    def _guard(self, hook: str, source: Callable[[], T]) -> T | None:
        """Run a hook; a failing one drops its metrics, never the scrape (logged once)."""
        try:
            return source()
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            if self._hook_errors.get(hook) != message:
                log.warning("/metrics: %s failed, its metrics are left out: %s", hook, message)
            self._hook_errors[hook] = message
            return None

    def _app(self, app: str) -> str:
        """The app's label, or ``_overflow`` once ``max_apps`` apps are known."""
        if app in self._apps or app in (IDLE_APP, UNATTRIBUTED_APP):
            return app
        if len(self._apps) < self.max_apps:
            self._apps.add(app)
            return app
        if OVERFLOW_APP not in self._apps:
            self._apps.add(OVERFLOW_APP)
            log.warning(
                "/metrics: more than %d apps; counting app %r and later new ones as %r",
                self.max_apps,
                app,
                OVERFLOW_APP,
            )
        return OVERFLOW_APP

    def _add(self, r: IntervalResult) -> None:
        s, host = self._state, r.host
        seconds = r.interval_s
        kinds = {"cpu" if c.kind == "psys" else c.kind for c in r.components}
        watts = {k: v for k, v in s.component_watts.items() if k[0] != host}
        for c in r.components:
            key = (host, c.component, c.source)
            _inc(s.component_joules, key, c.joules)
            if seconds > 0 and math.isfinite(c.joules):
                watts[key] = watts.get(key, 0.0) + max(0.0, c.joules) / seconds
        s.component_watts = watts

        for a in (*r.apps, r.idle, r.unattributed):
            app = self._app(a.app)
            parts = {"cpu": a.cpu_joules, "dram": a.dram_joules, "gpu": a.gpu_joules}
            for kind in _APP_KINDS:
                if kind in kinds or parts[kind] > 0:
                    _inc(s.app_joules, (host, app, kind), parts[kind])
            if a is not r.idle and a is not r.unattributed:
                _inc(s.app_cpu_s, (host, app), a.cpu_s)

        _inc(s.clamped_ticks, (host,), float(r.clamped_ticks))
        sci = {k: v for k, v in s.app_sci.items() if k[0] != host}
        for rec in r.sci:
            app = self._app(rec.app)
            _inc(s.app_carbon_g, (host, app, "operational"), rec.operational_g)
            _inc(s.app_carbon_g, (host, app, "embodied"), rec.embodied_g)
            if rec.unit:
                _inc(s.app_units, (host, app, rec.unit), rec.units)
                if rec.sci is not None and math.isfinite(rec.sci) and app == rec.app:
                    sci[(host, app, rec.unit)] = rec.sci
        s.app_sci = sci

        _inc(s.intervals, host, 1.0)
        s.interval_s[host] = seconds
        s.last_end[host] = r.end.timestamp()
        i = r.intensity
        if i is not None and math.isfinite(i.gco2_per_kwh):
            s.intensity[i.zone] = (i.provider, i.signal, i.gco2_per_kwh, i.fallback)


def _inc(counters: dict[K, float], key: K, amount: float) -> None:
    """Add a non-negative finite amount; the series appears even when it is 0."""
    step = amount if math.isfinite(amount) and amount > 0 else 0.0
    counters[key] = counters.get(key, 0.0) + step


class _Collector:
    """Builds the metric families of one scrape from a snapshot of the sink."""

    def __init__(self, sink: MetricsSink) -> None:
        self.sink = sink

    def collect(self) -> Iterator[Metric]:
        s = self.sink.snapshot()
        yield _counter(
            "sci_agent_component_energy_joules",
            "Energy each measured component used since the agent started.",
            ("host", "component", "source"),
            s.component_joules,
        )
        yield _gauge(
            "sci_agent_component_power_watts",
            "Mean power of each component over the last interval.",
            ("host", "component", "source"),
            s.component_watts,
        )
        yield _counter(
            "sci_agent_app_energy_joules",
            "Energy attributed to each app (and the _idle/_unattributed pseudo-apps)"
            " per component kind (cpu includes psys), since the agent started.",
            ("host", "app", "component"),
            s.app_joules,
        )
        yield _counter(
            "sci_agent_clamped_cpu_ticks",
            "Reaped children's CPU ticks not charged to their parent because /proc/stat had"
            " already counted them in an earlier interval (charged once), since start.",
            ("host",),
            s.clamped_ticks,
        )
        yield _counter(
            "sci_agent_app_cpu_seconds",
            "CPU time of each app's processes since the agent started.",
            ("host", "app"),
            s.app_cpu_s,
        )
        yield _counter(
            "sci_agent_app_carbon_grams",
            "Carbon of each app's SCI rows (gCO2e), operational or embodied, since start.",
            ("host", "app", "kind"),
            s.app_carbon_g,
        )
        yield _counter(
            "sci_agent_app_functional_units",
            "Functional units (R) each app counted since the agent started.",
            ("host", "app", "unit"),
            s.app_units,
        )
        yield _gauge(
            "sci_agent_app_sci_grams_per_unit",
            "SCI of the last interval, gCO2e per functional unit; absent when no units.",
            ("host", "app", "unit"),
            s.app_sci,
        )
        yield _gauge(
            "sci_agent_grid_intensity_gco2_per_kwh",
            "Last grid carbon intensity per zone, with the provider that gave it.",
            ("zone", "provider", "signal"),
            {(z, p, sig): v for z, (p, sig, v, _) in s.intensity.items()},
        )
        yield _gauge(
            "sci_agent_grid_intensity_fallback",
            "1 when the last intensity of the zone is a fallback or stale value, else 0.",
            ("zone",),
            {(z,): float(fb) for z, (_, _, _, fb) in s.intensity.items()},
        )
        yield _counter(
            "sci_agent_intervals",
            "Sampling intervals measured since the agent started.",
            ("host",),
            {(h,): v for h, v in s.intervals.items()},
        )
        yield _gauge(
            "sci_agent_interval_seconds",
            "Length of the last sampling interval.",
            ("host",),
            {(h,): v for h, v in s.interval_s.items()},
        )
        yield _gauge(
            "sci_agent_last_interval_timestamp_seconds",
            "Unix time the last sampling interval ended.",
            ("host",),
            {(h,): v for h, v in s.last_end.items()},
        )
        yield from self._cycles()
        yield from self._sensors()
        yield from self._exports()
        yield from self._alerts()

    def _alerts(self) -> Iterator[Metric]:
        row = self.sink.alert_row()
        if row is None:
            return
        yield _gauge(
            "sci_agent_alerts",
            "Alerts (one per rule and scope: host, app or part) in each state: pending, firing.",
            ("rule", "state"),
            {key: float(n) for key, n in row.alerts.items()},
        )
        hooks = row.webhooks
        yield _counter(
            "sci_agent_alert_notifications",
            "Notifications per webhook since the agent started: sent (answered 2xx), or"
            " dropped (too old, or 410 Gone).",
            ("webhook", "result"),
            {
                **{(h[0], "sent"): float(h[1]) for h in hooks},
                **{(h[0], "dropped"): float(h[3]) for h in hooks},
            },
        )
        yield _counter(
            "sci_agent_alert_failed_attempts",
            "Delivery attempts that failed (timeout, refused, non-2xx) and will be retried.",
            ("webhook",),
            {(h[0],): float(h[2]) for h in hooks},
        )
        yield _gauge(
            "sci_agent_alert_outbox_notifications",
            "Notifications waiting in the persistent outbox for delivery.",
            ("webhook",),
            {(h[0],): float(h[4]) for h in hooks},
        )

    def _cycles(self) -> Iterator[Metric]:
        sinks = self.sink.sink_rows()
        if sinks:
            yield _gauge(
                "sci_agent_sink_up",
                "1 when the sink's last write succeeded, else 0 (the loop goes on; see the log).",
                ("sink",),
                {(name,): float(up) for name, up, *_ in sinks},
            )
            yield _counter(
                "sci_agent_sink_failed_writes",
                "Writes of an interval batch that failed, per sink, since the agent started.",
                ("sink",),
                {(name,): float(failed) for name, _, failed, *_ in sinks},
            )
            yield _gauge(
                "sci_agent_sink_backlog_intervals",
                "Intervals a sink accepted and holds in memory until it can write them.",
                ("sink",),
                {(r[0],): float(r[3]) for r in sinks},
            )
            yield _counter(
                "sci_agent_sink_dropped_intervals",
                "Intervals a sink dropped beyond its in-memory backlog's bound.",
                ("sink",),
                {(r[0],): float(r[4]) for r in sinks},
            )
        row = self.sink.cycle_row()
        if row is None:
            return
        ok, failed, last_success = row
        yield _counter(
            "sci_agent_cycles",
            "Sampling cycles since the agent started, by result: ok, or failed (an error"
            " in measuring or scoring; the loop went on).",
            ("result",),
            {("ok",): float(ok), ("failed",): float(failed)},
        )
        yield _gauge(
            "sci_agent_last_successful_cycle_timestamp_seconds",
            "Unix time the last successful sampling cycle ended (absent before the first).",
            (),
            {(): last_success} if last_success is not None else {},
        )

    def _sensors(self) -> Iterator[Metric]:
        rows = self.sink.sensor_rows()
        yield _gauge(
            "sci_agent_sensor_up",
            "1 when the sensor's last open or read succeeded, else 0.",
            ("sensor",),
            {(h.name,): float(h.ok) for h in rows},
        )
        yield _gauge(
            "sci_agent_sensor_read_duration_seconds",
            "Duration of the sensor's last read.",
            ("sensor",),
            {(h.name,): h.last_duration_s for h in rows},
        )
        yield _counter(
            "sci_agent_sensor_errors",
            "Failed reads of the sensor since the agent started.",
            ("sensor",),
            {(h.name,): float(h.errors) for h in rows},
        )

    def _exports(self) -> Iterator[Metric]:
        rows = self.sink.export_rows()
        yield _counter(
            "sci_agent_export_sent_lines",
            "Lines the network sink delivered since the agent started.",
            ("sink",),
            {(r.sink,): float(r.sent_lines) for r in rows},
        )
        yield _counter(
            "sci_agent_export_rejected_lines",
            "Lines the network sink's server refused (dropped) since the agent started.",
            ("sink",),
            {(r.sink,): float(r.rejected_lines) for r in rows},
        )
        yield _gauge(
            "sci_agent_export_backlog_lines",
            "Lines waiting in the network sink's spool.",
            ("sink",),
            {(r.sink,): float(r.backlog_lines) for r in rows},
        )
        yield _counter(
            "sci_agent_export_dropped_lines",
            "Lines the network sink's spool dropped (its size bound, or a full disk beyond its"
            " in-memory queue) since the agent started.",
            ("sink",),
            {(r.sink,): float(r.dropped_lines) for r in rows},
        )
        yield _counter(
            "sci_agent_export_retries",
            "Retried deliveries of the network sink since the agent started.",
            ("sink",),
            {(r.sink,): float(r.retries) for r in rows},
        )


def _counter(
    name: str, help_text: str, labels: Sequence[str], values: Mapping[LabelValues, float]
) -> Metric:
    family = CounterMetricFamily(name, help_text, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(key, value)
    return family


def _gauge(
    name: str, help_text: str, labels: Sequence[str], values: Mapping[LabelValues, float]
) -> Metric:
    family = GaugeMetricFamily(name, help_text, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(key, value)
    return family


def metrics_route(sink: MetricsSink) -> Handler:
    """An ``agent.httpserver`` handler answering the sink's metrics in the text format 0.0.4.

    Register it with ``auth=False``: Prometheus scrapes without the bearer token, and
    the metrics hold no secret (the API listens on loopback unless configured not to).
    """

    def handler(request: Request) -> Response:
        return Response(200, sink.exposition(), CONTENT_TYPE)

    return handler
