"""The running agent: sampler, scorer, intensity chain, unit counters and local API.

``Agent.measure()`` is one whole cycle: measure and attribute, then score with the
latest grid intensity (never waiting on a grid API) and the units counted since the
previous cycle.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

from agent.config import Config
from agent.embodied import host_embodied
from agent.grid import build_chain
from agent.method import build_method
from agent.records import IntervalResult, Method
from agent.sampler import Sampler
from agent.scoring import Scorer, share_policy
from agent.sensors.base import SensorHealth
from agent.units import LocalApi, PrometheusScraper, UnitCounter, app_units
from exporters.base import Sink
from exporters.influx_sink import build_influx_sink
from exporters.jsonl import JsonlSink
from exporters.prometheus import METRICS_PATH, ExportStats, MetricsSink, metrics_route
from exporters.runner import SpoolRunner
from exporters.sqlite_store import SqliteStore

log = logging.getLogger("sci_agent")


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
        self.api = (
            LocalApi(config.http, self.counter) if serve_http and config.http.enabled else None
        )
        self.metrics: MetricsSink | None = None
        if self.api is not None:
            self.metrics = MetricsSink(sensor_health=self._sensor_health)
            self.api.add_route("GET", METRICS_PATH, metrics_route(self.metrics), auth=False)
        self.runners: list[SpoolRunner] = []
        self.scrapers = [
            PrometheusScraper(s, self.counter, units[s.app], timeout_s=config.grid.timeout_s)
            for s in config.scrape
        ]

    def build_sinks(self) -> list[Sink]:
        """Every configured sink, unopened: store, /metrics, InfluxDB (spooled), JSON lines.

        Raises ``ConfigError`` for a sink that cannot be built (e.g. a missing package).
        """
        cfg = self.config
        sinks: list[Sink] = []
        if cfg.store.enabled:
            sinks.append(
                SqliteStore(
                    cfg.store.path,
                    cfg.store.retention_days,
                    cfg.store.top_processes,
                    cfg.max_process_names_per_day,
                )
            )
        if self.metrics is not None:
            sinks.append(self.metrics)
        if cfg.influxdb.enabled:
            spooled = build_influx_sink(cfg.influxdb, cfg.spool, cfg.max_process_names_per_day)
            self.runners.append(spooled.runner)
            sinks.append(spooled)
        if cfg.jsonl.path:
            sinks.append(JsonlSink(cfg.jsonl.path))
        if self.metrics is not None and self.runners:
            runners = list(self.runners)
            self.metrics.export_stats = lambda: [ExportStats(*r.stats()) for r in runners]
        return sinks

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

    def measure(self) -> IntervalResult:
        """One cycle: measure, attribute and score the interval since the previous one."""
        result = self.sampler.sample()
        units = self.counter.take()
        try:
            scored = self.scorer.score(result, self.chain.current(), units)
            return replace(scored, method=self.method_of(scored))
        except Exception:
            self.counter.give_back(units)  # a failed cycle loses no unit: the next counts them
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

    def stop(self) -> None:
        for scraper in self.scrapers:
            scraper.stop()
        if self.api is not None:
            self.api.stop()
        self.chain.stop()
        self.sampler.close()
