"""The ``sci-agent`` command: run, once, doctor, intensity, report, alerts, measure, compare,
dashboard."""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
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
from agent import plan
from agent.config import Config, ConfigError
from agent.fdreserve import FdReserve, raise_soft_limit
from agent.journal import setup_logging, under_journald
from agent.loop import Loop
from agent.records import IntervalResult
from agent.records_json import to_json
from agent.render import summary_line, to_table
from agent.runtime import Agent
from agent.sdnotify import Notifier, watchdog_period_s
from exporters.base import Sink

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
    parser.add_argument("--version", action="version", version=f"sci-agent {_version()}")
    # --config and --log-level are accepted after the command too (`sci-agent doctor --config X`)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", dest="sub_config", metavar="PATH", help="as before COMMAND")
    common.add_argument(
        "--log-level", dest="sub_log_level", choices=["debug", "info", "warning", "error"]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add = functools.partial(sub.add_parser, parents=[common])
    run = add("run", help="sample every interval and keep the results in the store")
    run.add_argument(
        "--print",
        dest="print_each",
        action="store_true",
        help="print one line per interval on stdout (components, top apps)",
    )
    once = add("once", help="measure one interval and print it")
    once.add_argument("--interval", type=float, metavar="S", help="seconds to measure")
    once.add_argument("--json", action="store_true", help="print one JSON object")
    add("doctor", help="say which sensors work here, and how to fix the others")
    intensity = add("intensity", help="print the grid's carbon intensity now")
    where = intensity.add_mutually_exclusive_group()
    where.add_argument("--zone", help="a grid zone such as FR, DE, GB, US-CAL-CISO")
    where.add_argument("--region", help="a cloud region such as aws:eu-west-3")
    intensity.add_argument("--json", action="store_true", help="print one JSON object")
    plan.add_parsers(add)  # greenest-window, greenest-region, run-when-green
    report = add("report", help="the SCI report of an app over a period")
    report.add_argument("--app", required=True, help="the application's name")
    period = report.add_mutually_exclusive_group()
    period.add_argument("--since", default=None, help="a duration back from now: 15m, 24h, 7d")
    period.add_argument("--from", dest="start", metavar="T", help="ISO 8601 start time")
    report.add_argument("--to", dest="end", metavar="T", help="ISO 8601 end time (default now)")
    report.add_argument("--format", choices=["md", "json"], default="md")
    report.add_argument("--store", metavar="PATH", help="the store (default: [store] path)")
    alerts = add("alerts", help="list the alert rules and their states; `alerts test` sends one")
    alerts.add_argument(
        "action", nargs="?", choices=["list", "test"], default="list", help="default: list"
    )
    alerts.add_argument("--webhook", metavar="NAME", help="test only this webhook")
    _measure_arguments(add("measure", help="run a command and measure its whole process tree"))
    compare = add("compare", help="two measured runs side by side (ids or measure --json files)")
    compare.add_argument("run_a", metavar="RUN_A", help="a run id (or unique prefix), or a file")
    compare.add_argument("run_b", metavar="RUN_B", help="the run compared with RUN_A (B/A)")
    compare.add_argument("--json", action="store_true", help="print one JSON object")
    compare.add_argument("--store", metavar="PATH", help="the store (default: [store] path)")
    dash = sub.add_parser("dashboard", help="start the Streamlit dashboard (127.0.0.1:8501)")
    dash.add_argument(
        "--config",
        dest="dashboard_config",
        metavar="PATH",
        help="TOML config file (default: the global --config, $SCI_AGENT_CONFIG)",
    )
    dash.add_argument("--port", type=int, metavar="N", help="default: [dashboard] port (8501)")
    dash.add_argument("--host", metavar="ADDR", help="address to bind (default 127.0.0.1)")
    from agent.install import add_arguments as install_arguments

    install = sub.add_parser(
        "install-service",
        help="install the agent as a systemd service (as root; --uninstall reverses it)",
    )
    install_arguments(install)
    return parser


def _measure_arguments(measure: argparse.ArgumentParser) -> None:
    measure.add_argument("--json", action="store_true", help="print one JSON object")
    measure.add_argument("--units", type=float, metavar="N", help="functional units produced")
    measure.add_argument("--unit", metavar="NAME", help="what one unit is (default: unit)")
    measure.add_argument("--interval", type=float, metavar="S", help="seconds per sample (1)")
    measure.add_argument("--app", metavar="NAME", help="app name (default: the command's)")
    measure.add_argument(
        "--progress", action="store_true", default=None, help="a progress line every 10 s"
    )
    measure.add_argument(
        "--grace", type=float, default=5.0, metavar="S", help="wait for orphans (5 s)"
    )
    measure.add_argument("-o", "--output", metavar="PATH", help="write the result to PATH")
    measure.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARGS...")
    measure.set_defaults(measure_usage=measure.format_usage())


def _version() -> str:
    try:
        return importlib.metadata.version("sci-agent")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.config = getattr(args, "sub_config", None) or args.config
    args.log_level = getattr(args, "sub_log_level", None) or args.log_level
    if args.command == "dashboard":  # streamlit runs in its own process and reads the config
        from dashboard.launch import main as dashboard_main

        return dashboard_main(args.dashboard_config or args.config, args.port, args.host)
    if args.command == "install-service":  # needs no config: it installs one
        from agent import install

        return install.run(args)
    # Logging first, so what loading the config warns about (a secret others can read)
    # is a proper log line; the config's own level applies once it is read.
    setup_logging(args.log_level or "info")
    try:
        cfg = config_mod.load(args.config)
    except ConfigError as exc:
        _fatal(f"config error: {exc}")
        return EXIT_CONFIG
    logging.getLogger().setLevel((args.log_level or cfg.log.level).upper())
    if args.command in ("measure", "compare") and args.log_level is None:
        logging.getLogger().setLevel(logging.WARNING)  # the result says what the sensors did
    if args.command == "once":
        return _once(cfg, cfg.interval_s if args.interval is None else args.interval, args.json)
    if args.command == "doctor":
        source = args.config or os.environ.get(config_mod.ENV_CONFIG)
        return _doctor(cfg, os.path.abspath(source) if source else None)
    if args.command == "intensity":
        return _intensity(cfg, args.zone, args.region, args.json)
    if args.command in plan.COMMANDS:
        return plan.run(cfg, args)
    if args.command == "report":
        return _report(cfg, args)
    if args.command == "alerts":
        return _alerts(cfg, args.action, args.webhook)
    if args.command == "measure":
        return _measure(cfg, args)
    if args.command == "compare":
        return _compare(cfg, args)
    return _run(cfg, args.print_each, args.config, args.log_level)


def _once(cfg: Config, interval_s: float, as_json: bool) -> int:
    if not interval_s > 0:
        print("sci-agent: --interval must be greater than 0", file=sys.stderr)
        return EXIT_CONFIG
    try:
        agent = Agent(cfg, serve_http=False)
    except ConfigError as exc:
        print(f"sci-agent: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    agent.start()
    try:
        time.sleep(interval_s)
        result = agent.measure()
    finally:
        agent.stop()
    print(json.dumps(to_json(result), indent=2) if as_json else to_table(result))
    return 0


def _intensity(cfg: Config, zone: str | None, region: str | None, as_json: bool) -> int:
    from agent.grid.command import intensity_command

    try:
        text, status = intensity_command(cfg.grid, zone, region, as_json)
    except ValueError as exc:
        print(f"sci-agent: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(text)
    return status


def _report(cfg: Config, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from agent import report

    try:
        end = report.parse_time(args.end, "--to") if args.end else datetime.now(UTC)
        if args.start:
            start = report.parse_time(args.start, "--from")
        else:
            start = end - report.parse_since(args.since or "24h")
        if start >= end:
            raise report.ReportError("--from must be before --to")
        built = report.build(cfg, args.app, start, end, args.store)
    except report.ReportError as exc:
        print(f"sci-agent: {exc}", file=sys.stderr)
        return 1
    print(built.to_json() if args.format == "json" else built.to_markdown(), end="")
    return 0


def _alerts(cfg: Config, action: str, webhook: str | None) -> int:
    from agent.alerts.commands import list_alerts, test_webhooks

    if action == "test":
        text, status = test_webhooks(cfg.alerts, cfg.host, webhook)
        print(text, end="", file=sys.stdout if status != 2 else sys.stderr)
        return status
    print(list_alerts(cfg.alerts, cfg.host), end="")
    return 0


def _measure(cfg: Config, args: argparse.Namespace) -> int:
    from agent.jobs.measure import EXIT_USAGE, run_measured

    argv = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not argv:
        print(args.measure_usage, end="", file=sys.stderr)
        print("sci-agent measure: no command given after --", file=sys.stderr)
        return EXIT_USAGE
    return run_measured(
        cfg,
        argv,
        app=args.app,
        as_json=args.json,
        units=args.units,
        unit=args.unit,
        interval_s=args.interval,
        progress=args.progress,
        grace_s=args.grace,
        output=args.output,
    )


def _compare(cfg: Config, args: argparse.Namespace) -> int:
    from agent.jobs.compare import CompareError, compare_command

    try:
        text = compare_command(cfg, args.run_a, args.run_b, args.json, args.store)
    except CompareError as exc:
        print(f"sci-agent compare: {exc}", file=sys.stderr)
        return 1
    print(text)
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


def _run(
    cfg: Config,
    print_each: bool = False,
    source: str | None = None,
    cli_log_level: str | None = None,
) -> int:
    """Sample until SIGTERM/SIGINT; SIGHUP reloads ``source`` (else $SCI_AGENT_CONFIG)."""
    stop = threading.Event()
    notifier = Notifier()
    loops: list[Loop] = []  # the loop, once built: SIGHUP before then is kept for it
    early_reload = False

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info(
            "received %s: measuring the interval under way, then stopping",
            signal.Signals(signum).name,
        )
        stop.set()

    def _on_hup(_signum: int, _frame: FrameType | None) -> None:
        nonlocal early_reload
        if loops:
            loops[0].request_reload()  # applied on the loop's thread, between cycles
        else:
            early_reload = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGHUP, _on_hup)
    before, after = raise_soft_limit()
    if after != before:
        log.debug("open-file limit raised from %d to %d", before, after)

    try:
        agent = Agent(cfg)
        sinks = agent.build_sinks()
    except ConfigError as exc:
        _fatal(f"config error: {exc}")
        return EXIT_CONFIG
    except OSError as exc:  # e.g. a spool folder that cannot be created or is locked
        _fatal(f"cannot start: {exc}")
        return 1
    opened: list[Sink] = []
    try:
        for sink in sinks:
            sink.open()
            opened.append(sink)
        agent.start()
    except Exception as exc:  # a store that cannot open, the local API's port taken…
        _fatal(f"cannot start: {exc}")
        _close_all(opened)
        agent.stop()
        return 1
    sensors = agent.sampler.sensors
    covering = sensors.covering() if sensors else {}
    log.info(
        "sampling every %gs on %s: %s; sinks %s; grid zone %s; local API %s",
        cfg.interval_s,
        cfg.host,
        ", ".join(f"{k}←{v}" for k, v in covering.items()) or "no sensors",
        ", ".join(sink_label(cfg, s.name) for s in sinks) or "none",
        agent.chain.zone,
        agent.api.url if agent.api is not None else "disabled",
    )
    last: list[IntervalResult] = []

    def _summary(result: IntervalResult) -> None:
        last[:] = [result]
        if print_each:
            print(summary_line(result), flush=True)
        log.debug(
            "interval: %.2f J over %.2fs, %.2f J idle, %.2f J unattributed",
            result.total_joules,
            result.interval_s,
            result.idle_joules,
            result.unattributed_joules,
        )

    def _stop_intake() -> None:
        """Accept no more units: what was accepted is in the last interval's counts."""
        notifier.stopping()
        for scraper in agent.scrapers:
            scraper.stop()
        if agent.api is not None:
            agent.api.stop()

    def _status() -> None:
        if notifier.enabled:
            notifier.status(status_line(loop, agent, last[0] if last else None))

    def _reload() -> None:
        notifier.reloading()
        try:
            _apply_reload(agent, loop, source, cli_log_level)
        finally:  # systemd waits for READY=1 after RELOADING=1, whatever happened
            notifier.ready(status_line(loop, agent, last[0] if last else None))

    reserve = FdReserve()
    reserve.take()
    loop = Loop(
        agent.measure,
        sinks,
        cfg.interval_s,
        stop,
        on_result=_summary,
        on_stop=_stop_intake,
        reserve=reserve,
        watchdog=notifier.watchdog,
        watchdog_s=watchdog_period_s() if notifier.enabled else None,
        after_cycle=_status,
        on_reload=_reload,
    )
    loops.append(loop)
    agent.watch_loop(loop)
    if early_reload:
        loop.request_reload()
    if agent.metrics is not None:
        agent.metrics.cycle_stats = loop.stats
        agent.metrics.sink_health = loop.sink_health
    notifier.ready(f"sampling every {cfg.interval_s:g}s")  # sinks open, baseline taken
    try:
        loop.run()
    finally:
        _close_all(sinks)
        agent.stop()
        reserve.close()
        notifier.close()
    log.info("stopped after %d cycles (%d failed)", loop.cycles, loop.failed_cycles)
    return 0


def _apply_reload(agent: Agent, loop: Loop, source: str | None, cli_log_level: str | None) -> None:
    """Re-read the config and apply what can be applied live; a bad one changes nothing."""
    try:
        new = config_mod.load(source)
        done = agent.reload(new)
    except ConfigError as exc:
        log.error("reload rejected, the running config is kept: %s", exc)
        return
    for key in done.needs_restart:
        log.warning("reload: %s needs a restart; the running value is kept", key)
    loop.interval_s = done.config.interval_s
    if cli_log_level is None:  # --log-level on the command line wins over the file
        logging.getLogger().setLevel(done.config.log.level.upper())
    log.info("reloaded the config: %s", ", ".join(done.applied) or "nothing changed")


def sink_label(cfg: Config, name: str) -> str:
    """A sink's name and where it writes (paths absolute), for the start log line."""
    if name == "store":
        return f"store ({os.path.abspath(cfg.store.path)})"
    if name == "influxdb":
        return f"influxdb ({config_mod._redact_url(cfg.influxdb.url)})"
    if name == "jsonl" and cfg.jsonl.path not in (None, "-"):
        return f"jsonl ({os.path.abspath(str(cfg.jsonl.path))})"
    return name


def status_line(loop: Loop, agent: Agent, result: IntervalResult | None) -> str:
    """One line for systemd's STATUS=: power, apps, each sink's state, failures."""
    parts = []
    if result is not None and result.interval_s > 0:
        watts = result.total_joules / result.interval_s
        parts.append(f"{watts:.1f} W, {len(result.apps)} apps")
    backlog = {r.name: r.backlog_lines for r in agent.runners}
    for health in loop.sink_health():
        state = "ok" if health.up else "failing"
        if health.sink in backlog:
            state += f", backlog {backlog[health.sink]} lines"
        parts.append(f"{health.sink} {state}")
    if loop.failed_cycles:
        parts.append(f"{loop.failed_cycles} failed cycles")
    return "; ".join(parts)


def _fatal(text: str) -> None:
    """Why the agent cannot run, on stderr; an error-level journal entry under systemd."""
    prefix = "<3>" if under_journald(sys.stderr) else ""
    print(f"{prefix}sci-agent: {text}", file=sys.stderr)


def _close_all(sinks: Sequence[Sink]) -> None:
    """Close every sink (flushing what each can); one failing never stops the others."""
    for sink in sinks:
        try:
            sink.close()
        except Exception as exc:
            log.error("closing sink %s failed: %s", sink.name, exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
