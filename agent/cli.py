"""The ``sci-agent`` command: run, once, doctor."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

from agent import config as config_mod
from agent.config import Config, ConfigError
from agent.loop import Loop
from agent.records import IntervalResult
from agent.render import to_json, to_table
from agent.sampler import Sampler

log = logging.getLogger("sci_agent")

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sci-agent",
        description="Measure the energy of every process and application on this host.",
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help=f"TOML config file (default: ${config_mod.ENV_CONFIG}, else built-in defaults)",
    )
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", help="sample every interval and keep the results in the store")
    once = sub.add_parser("once", help="measure one interval and print it")
    once.add_argument("--interval", type=float, metavar="S", help="seconds to measure")
    once.add_argument("--json", action="store_true", help="print one JSON object")
    sub.add_parser("doctor", help="say which sensors work here, and how to fix the others")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = config_mod.load(args.config)
    except ConfigError as exc:
        print(f"sci-agent: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    level = (args.log_level or cfg.log.level).upper()
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "once":
        return _once(cfg, args.interval or cfg.interval_s, args.json)
    if args.command == "doctor":
        return _doctor(cfg, args.config or os.environ.get(config_mod.ENV_CONFIG))
    return _run(cfg)


def _once(cfg: Config, interval_s: float, as_json: bool) -> int:
    if not interval_s > 0:
        print("sci-agent: --interval must be greater than 0", file=sys.stderr)
        return EXIT_CONFIG
    sampler = Sampler(cfg)
    sampler.open()
    try:
        time.sleep(interval_s)
        result = sampler.sample()
    finally:
        sampler.close()
    print(json.dumps(to_json(result), indent=2) if as_json else to_table(result))
    return 0


def _doctor(cfg: Config, source: str | None) -> int:
    from agent.doctor import report
    from agent.sensors import open_sensors

    logging.getLogger("sci_agent.sensors").setLevel(logging.ERROR)  # the report says it all
    sensors = open_sensors(cfg)
    try:
        text, status = report(cfg, source or "built-in defaults (no config file)", sensors)
    finally:
        sensors.close()
    print(text)
    return status


def _run(cfg: Config) -> int:
    from exporters.sqlite_store import SqliteStore

    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: finishing the cycle and stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    sinks = []
    if cfg.store.enabled:
        store = SqliteStore(cfg.store.path, cfg.store.retention_days, cfg.store.top_processes)
        try:
            store.open()
        except Exception as exc:
            print(f"sci-agent: cannot open the store {cfg.store.path}: {exc}", file=sys.stderr)
            return 1
        sinks.append(store)
    sampler = Sampler(cfg)
    sampler.open()
    covering = sampler.sensors.covering() if sampler.sensors else {}
    log.info(
        "sampling every %gs on %s: %s; store %s",
        cfg.interval_s,
        cfg.host,
        ", ".join(f"{k}←{v}" for k, v in covering.items()) or "no sensors",
        cfg.store.path if cfg.store.enabled else "disabled",
    )

    def _summary(result: IntervalResult) -> None:
        log.debug(
            "interval: %.2f J over %.2fs, %.2f J idle, %.2f J unattributed",
            result.total_joules,
            result.interval_s,
            result.idle_joules,
            result.unattributed_joules,
        )

    loop = Loop(sampler, sinks, cfg.interval_s, stop, on_result=_summary)
    try:
        loop.run()
    finally:
        for sink in sinks:
            sink.close()
        sampler.close()
    log.info("stopped after %d cycles", loop.cycles)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
