"""Build the spooled InfluxDB sink from the ``[influxdb]`` and ``[spool]`` sections."""

from __future__ import annotations

from pathlib import Path

from agent.config import InfluxConfig, SpoolConfig
from exporters.delivery import NetworkSink
from exporters.process_rows import DEFAULT_MAX_NAMES_PER_DAY
from exporters.runner import SpoolRunner
from exporters.spool import Spool
from exporters.spooled import SpooledSink

MIB = 1 << 20


def build_network_sink(cfg: InfluxConfig) -> NetworkSink:
    """The v1 (line protocol to ``/write``) or v2 (``/api/v2/write``) sink."""
    if cfg.api == "v1":
        from exporters.influxdb_v1 import InfluxV1Sink

        return InfluxV1Sink(cfg)
    from exporters.influxdb_v2 import InfluxV2Sink

    return InfluxV2Sink(cfg)


def build_influx_sink(
    cfg: InfluxConfig,
    spool_cfg: SpoolConfig,
    max_process_names_per_day: int = DEFAULT_MAX_NAMES_PER_DAY,
) -> SpooledSink:
    """The network sink behind a durable spool in ``<spool.dir>/influxdb``."""
    max_bytes = int(spool_cfg.max_mb * MIB)
    spool = Spool(
        Path(spool_cfg.dir) / "influxdb", max_bytes, segment_bytes=min(MIB, max_bytes // 4)
    )
    runner = SpoolRunner(build_network_sink(cfg), spool, cfg.batch_size, cfg.flush_interval_s)
    return SpooledSink(
        "influxdb",
        spool,
        runner,
        cfg.top_processes,
        spool_cfg.flush_deadline_s,
        max_process_names_per_day,
    )
