"""The running agent: sampler, scorer, intensity chain, unit counters and local API.

``Agent.measure()`` is one whole cycle: measure and attribute, then score with the
latest grid intensity (never waiting on a grid API) and the units counted since the
previous cycle.

``Agent.reload(config)`` applies a new config between cycles: the keys in
``LIVE_KEYS`` take effect at once; a change anywhere else needs a restart and the
running value is kept (``Reload.needs_restart`` names each such key).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from agent.alerts.baseline import SciBaseline
from agent.alerts.delivery import Deliverer
from agent.alerts.engine import OUTBOX_FILE, AlertEngine, Health
from agent.alerts.outbox import Outbox
from agent.apps import AppNamer
from agent.config import Config
from agent.embodied import host_embodied
from agent.grid import build_chain
from agent.loop import Loop
from agent.method import build_method
from agent.records import IntervalResult, Method, SensorHealth
from agent.remote import CallLedger, EcoLogitsEstimator
from agent.sampler import Sampler
from agent.scoring import Scorer, share_policy
from agent.units import LocalApi, PrometheusScraper, UnitCounter, app_units
from exporters.base import Sink
from exporters.prometheus import (
    METRICS_PATH,
    AlertStats,
    MetricsSink,
    metrics_route,
)
from exporters.runner import SpoolRunner
from exporters.sinks import SINKS
from exporters.spooled import SpooledSink

log = logging.getLogger("sci_agent")

#: On stop, delivery goes on this long for notifications already due; the rest waits.
ALERT_FLUSH_S = 3.0

#: Where /metrics sits among the registered sinks' ``order`` (after the store's 10).
METRICS_ORDER = 20

#: Top-level config keys a reload applies live; every other key needs a restart.
LIVE_KEYS = frozenset(
    {"interval_s", "log", "apps", "grid", "embodied", "sci", "scrape", "dashboard", "alerts"}
)


@dataclass(frozen=True)
class Reload:
    """What a reload did: the config now in force, keys applied, keys left for a restart."""

    config: Config
    applied: tuple[str, ...]
    needs_restart: tuple[str, ...]


def plan_reload(old: Config, new: Config) -> Reload:
    """``new`` with every key outside ``LIVE_KEYS`` kept from ``old``, and the changes."""
    changed = list(changed_keys(old, new))
    applied = tuple(k for k in changed if _top(k) in LIVE_KEYS)
    restart = tuple(k for k in changed if _top(k) not in LIVE_KEYS)
    kept = {f.name: getattr(old, f.name) for f in fields(Config) if f.name not in LIVE_KEYS}
    return Reload(replace(new, **kept), applied, restart)


def changed_keys(old: Any, new: Any, prefix: str = "") -> Iterator[str]:
    """Dotted keys whose values differ (a list such as ``apps`` counts as one key)."""
    if is_dataclass(old) and type(old) is type(new):
        for f in fields(old):
            key = f"{prefix}.{f.name}" if prefix else f.name
            yield from changed_keys(getattr(old, f.name), getattr(new, f.name), key)
    elif old != new:
        yield prefix


def _top(key: str) -> str:
    return key.split(".", 1)[0]


class Agent:
    """Builds every long-lived part from the config; ``start``/``stop`` own their threads."""

    def __init__(self, config: Config, serve_http: bool = True) -> None:
        self.config = config
        units = app_units(config)
        # Every app is known to the counter, so a report for one with no unit says so.
        self.counter = UnitCounter({rule.name: rule.unit for rule in config.apps})
        self.chain = build_chain(config.grid)
        self.sampler = Sampler(config)
        # TE charged to this host: configured, else per instance type / VM share / server
        self.embodied = host_embodied(config, self.sampler.scanner.cpu_count)
        self.scorer = Scorer(
            units,
            self.embodied.kgco2e,
            config.embodied.lifespan_years,
            config.sci.idle_policy,
            config.sci.pue,
            cpu_count=self.sampler.scanner.cpu_count,
        )
        # remote AI calls (POST /v1/calls), priced with EcoLogits only once some arrive
        self.calls = CallLedger(rule.name for rule in config.apps)
        self.estimator = EcoLogitsEstimator()
        self.api = (
            LocalApi(config.http, self.counter, self.calls)
            if serve_http and config.http.enabled
            else None
        )
        self.metrics: MetricsSink | None = None
        if self.api is not None:
            self.metrics = MetricsSink(sensor_health=self._sensor_health)
            self.api.add_route("GET", METRICS_PATH, metrics_route(self.metrics), auth=False)
        self.runners: list[SpoolRunner] = []
        self.alerts: AlertEngine | None = None
        self.deliverer: Deliverer | None = None
        self.scrapers = [
            PrometheusScraper(s, self.counter, units[s.app], timeout_s=config.grid.timeout_s)
            for s in config.scrape
        ]

    def build_sinks(self) -> list[Sink]:
        """Every configured sink, unopened, in the order the loop writes to them: each
        registered sink its section turns on (``SINKS``: store, InfluxDB behind its
        spool, JSON lines) with /metrics in its place after the store, then alerts.

        Raises ``ConfigError`` for a sink that cannot be built (e.g. a missing package).
        """
        cfg = self.config
        built: list[tuple[int, Sink]] = []
        if self.metrics is not None:
            built.append((METRICS_ORDER, self.metrics))
        for plugin in SINKS:
            sink = plugin.factory(cfg)
            if sink is not None:
                built.append((plugin.order, sink))
        sinks = [sink for _, sink in sorted(built, key=lambda pair: pair[0])]
        self.runners.extend(s.runner for s in sinks if isinstance(s, SpooledSink))
        if cfg.alerts.rules:
            sinks.append(self._build_alerts())
            if self.metrics is not None:
                self.metrics.alert_stats = self._alert_stats
        if self.metrics is not None and self.runners:
            runners = list(self.runners)
            self.metrics.export_stats = lambda: [r.stats() for r in runners]
        return sinks

    def _build_alerts(self) -> AlertEngine:
        """The alert engine (a sink), its outbox and the delivery threads (started by ``start``)."""
        cfg = self.config
        outbox = Outbox(Path(cfg.alerts.state_dir) / OUTBOX_FILE)
        self.deliverer = Deliverer(outbox, cfg.alerts.webhooks, cfg.alerts.max_age_s)
        baseline = SciBaseline(cfg.store.path, cfg.host) if cfg.store.enabled else None
        spools = list(self.runners)
        self.alerts = AlertEngine(
            cfg.alerts,
            cfg.host,
            outbox=outbox,
            wake_delivery=self.deliverer.wake,
            baseline=baseline,
            health=Health(spool_bytes=lambda: float(sum(r.spool.pending_bytes() for r in spools))),
            interval_s=cfg.interval_s,
        )
        return self.alerts

    def _alert_stats(self) -> AlertStats:
        assert self.alerts is not None and self.deliverer is not None
        hooks = [
            (w.name, w.sent, w.failed_attempts, w.dropped, w.pending)
            for w in self.deliverer.stats()
        ]
        return AlertStats(self.alerts.state_counts(), hooks)

    def watch_loop(self, loop: Loop) -> None:
        """Let the alert engine see when each part last worked (``staleness_s``)."""
        if self.alerts is not None:
            self.alerts.health.last_worked = lambda: self.last_worked(loop)

    def last_worked(self, loop: Loop) -> dict[str, float | None]:
        """Unix time the sampling cycle, each sensor and each sink last worked.

        A spooled sink works when the server settled its last batch, or has nothing to
        send; the others when the loop's last write to them succeeded. A sensor that
        never opened (no RAPL on a VM, NVML disabled) is left out: doctor explains it.
        """
        parts: dict[str, float | None] = {"cycle": loop.last_success_unix}
        for name, health in self._sensor_health().items():
            if health.ok or health.last_success is not None:  # not one that never opened
                parts[f"sensor:{name}"] = health.last_success
        runners = {r.name: r for r in self.runners}
        for sink in loop.sinks:
            if sink is self.alerts:
                continue
            runner = runners.get(sink.name)
            if runner is None:
                parts[f"sink:{sink.name}"] = loop.sink_last_success.get(sink.name)
            elif runner.backlog_lines == 0:
                parts[f"sink:{sink.name}"] = time.time()
            else:
                parts[f"sink:{sink.name}"] = runner.last_success
        return parts

    def _sensor_health(self) -> Mapping[str, SensorHealth]:
        sensors = self.sampler.sensors
        return sensors.health if sensors is not None else {}

    def start(self) -> None:
        """Open the sensors, take the baseline, start background fetchers and the API."""
        self.sampler.open()
        self.chain.start()
        if self.api is not None:
            self.api.start()
        for scraper in self.scrapers:
            scraper.start()
        if self.deliverer is not None:
            self.deliverer.start()

    def measure(self) -> IntervalResult:
        """One cycle: measure, attribute and score the interval since the previous one."""
        result = self.sampler.sample()
        units = self.counter.take()
        calls = self.calls.take()
        try:
            intensity = self.chain.current()
            if calls:  # the apps' remote AI calls, estimated, join their SCI
                remote = self.estimator.estimate(calls)
                scored = self.scorer.score(result, intensity, units, remote)
            else:
                scored = self.scorer.score(result, intensity, units)
            return replace(scored, method=self.method_of(scored))
        except Exception:
            self.counter.give_back(units)  # a failed cycle loses no unit: the next counts them
            self.calls.give_back(calls)
            raise

    def method_of(self, result: IntervalResult) -> Method:
        """The method in force for ``result``, recorded with it."""
        cfg = self.config
        return build_method(
            result,
            embodied=self.embodied,
            lifespan_years=cfg.embodied.lifespan_years,
            share_policy=share_policy(cfg.sci.idle_policy),
            pue=cfg.sci.pue,
            zone=self.chain.zone,
            providers=cfg.grid.providers,
        )

    def reload(self, new: Config) -> Reload:
        """Apply ``new``'s live keys; counters, totals, sinks and the sampler's state stay.

        Everything new is built before anything is swapped, so a ``ConfigError`` (an
        unknown zone, an instance type not in the table) leaves the agent as it was.
        """
        plan = self._alerts_reload(plan_reload(self.config, new))
        cfg, changed = plan.config, {_top(k) for k in plan.applied}
        cpu_count = self.sampler.scanner.cpu_count
        chain = build_chain(cfg.grid) if "grid" in changed else self.chain
        embodied = host_embodied(cfg, cpu_count) if "embodied" in changed else self.embodied
        units = app_units(cfg)
        self.scorer = Scorer(
            units,
            embodied.kgco2e,
            cfg.embodied.lifespan_years,
            cfg.sci.idle_policy,
            cfg.sci.pue,
            cpu_count=cpu_count,
        )
        self.embodied = embodied
        if "apps" in changed:
            self.sampler.scanner.set_namer(AppNamer(cfg.apps))
            self.counter.set_apps({rule.name: rule.unit for rule in cfg.apps})
            self.calls.set_apps(rule.name for rule in cfg.apps)
        if chain is not self.chain:
            self.chain.stop()
            chain.start()
            self.chain = chain
        if changed & {"scrape", "apps", "grid"}:  # a scraper holds its unit and timeout
            self._restart_scrapers(cfg, units)
        if "alerts" in changed and self.alerts is not None:
            self._reload_alerts(cfg)
        self.config = cfg
        return plan

    def _alerts_reload(self, plan: Reload) -> Reload:
        """Rules and webhooks reload live, unless alerts were off at start or
        ``state_dir`` moved: those need a restart (the running alerts are kept)."""
        keys = [k for k in plan.applied if _top(k) == "alerts"]
        if not keys:
            return plan
        old = self.config.alerts
        new = plan.config.alerts
        starting = self.alerts is None and bool(new.rules)
        if not starting and new.state_dir == old.state_dir:
            return plan
        applied = tuple(k for k in plan.applied if _top(k) != "alerts")
        restart = (*plan.needs_restart, *keys)
        return Reload(replace(plan.config, alerts=old), applied, restart)

    def _reload_alerts(self, cfg: Config) -> None:
        """New rules and webhooks: states of kept rules stay; delivery threads restart."""
        assert self.alerts is not None
        deliverer = self.deliverer
        if deliverer is not None and cfg.alerts.webhooks != self.config.alerts.webhooks:
            deliverer.stop(0.0)  # what is queued stays in the outbox for the new threads
            self.deliverer = deliverer = Deliverer(
                deliverer.outbox, cfg.alerts.webhooks, cfg.alerts.max_age_s
            )
            deliverer.start()
        self.alerts.reload(cfg.alerts, deliverer.wake if deliverer is not None else None)

    def _restart_scrapers(self, cfg: Config, units: Mapping[str, str]) -> None:
        """Restart the scrapers whose target, unit or timeout changed; keep the others.

        A kept scraper keeps its last reading, so no increase is lost across a reload.
        """
        timeout_s = cfg.grid.timeout_s
        running = list(self.scrapers)
        scrapers = []
        for target in cfg.scrape:
            unit = units[target.app]
            same = [
                s for s in running if (s.config, s.unit, s.timeout_s) == (target, unit, timeout_s)
            ]
            if same:
                running.remove(same[0])
                scrapers.append(same[0])
            else:
                scraper = PrometheusScraper(target, self.counter, unit, timeout_s)
                scraper.start()
                scrapers.append(scraper)
        for gone in running:
            gone.stop()
        self.scrapers = scrapers

    def stop(self) -> None:
        for scraper in self.scrapers:
            scraper.stop()
        if self.api is not None:
            self.api.stop()
        self.chain.stop()
        self.sampler.close()
        if self.deliverer is not None:
            self.deliverer.stop(ALERT_FLUSH_S)  # what is left is delivered after the restart
