"""The scheduling commands' options and dispatch: greenest-window, greenest-region,
run-when-green (their logic lives in ``agent.grid.schedule``, ``agent.grid.regions`` and
``agent.greenrun``)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

from agent.config import Config, ConfigError

COMMANDS = ("greenest-window", "greenest-region", "run-when-green")
EXIT_USAGE = 2


def add_parsers(add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add the three commands with ``add`` (``subparsers.add_parser`` with shared parents)."""
    window = add("greenest-window", help="when to start a job so that it emits the least")
    where = window.add_mutually_exclusive_group()
    where.add_argument("--zone", help="a grid zone such as FR, DE, GB (default: [grid])")
    where.add_argument("--region", help="a cloud region such as aws:eu-west-3")
    _window_options(window, duration="2h")
    window.add_argument("--json", action="store_true", help="print one JSON object")
    region = add("greenest-region", help="cloud regions ranked by grid intensity")
    region.add_argument(
        "--regions", required=True, metavar="LIST", help="aws:eu-west-3,gcp:europe-west1,..."
    )
    _window_options(region, duration=None)
    region.add_argument("--json", action="store_true", help="print one JSON object")
    green = add("run-when-green", help="wait for a greener grid (up to a deadline), then run")
    _window_options(green, duration="1h")
    green.add_argument(
        "--max-intensity", type=float, metavar="G", help="start as soon as the intensity is <= G"
    )
    green.add_argument(
        "--check-every", type=float, default=300.0, metavar="S", help="seconds (default 300)"
    )
    green.add_argument("--app", help="the application name the run is recorded under")
    green.add_argument("--json", action="store_true", help="the measurement as JSON")
    green.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD ARGS...")


def _window_options(parser: argparse.ArgumentParser, duration: str | None) -> None:
    hint = f"default {duration}" if duration else "ranks by the greenest window when given"
    parser.add_argument("--duration", default=duration, help=f"the job's length: 90m, 2h ({hint})")
    parser.add_argument(
        "--within", default="24h", help="the job ends within this from now (default 24h)"
    )


def run(cfg: Config, args: argparse.Namespace) -> int:
    """Run the command ``args.command``; bad options exit 2 with one line naming them."""
    # provider failures are part of the greenest-* answers: the warnings would repeat them
    grid_log = logging.getLogger("sci_agent.grid")
    level = grid_log.level
    if args.command != "run-when-green":
        grid_log.setLevel(logging.ERROR)
    try:
        text, status = _dispatch(cfg, args)
    except ConfigError as exc:
        print(f"sci-agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        grid_log.setLevel(level)
    if text:
        print(text, file=sys.stdout if status == 0 else sys.stderr)
    return status


def _dispatch(cfg: Config, args: Any) -> tuple[str, int]:
    from agent.grid.schedule import parse_duration

    within = parse_duration(args.within, "--within")
    duration = parse_duration(args.duration, "--duration") if args.duration else None
    if args.command == "greenest-window":
        from agent.grid.schedule import greenest_window_command

        assert duration is not None
        return greenest_window_command(
            cfg.grid, args.zone, args.region, duration, within, args.json
        )
    if args.command == "greenest-region":
        from agent.grid.regions import greenest_region_command

        window = (duration, within) if duration is not None else None
        return greenest_region_command(cfg.grid, args.regions, window, args.json)
    from agent.greenrun import Options, run_when_green

    assert duration is not None
    argv = args.argv[1:] if args.argv[:1] == ["--"] else list(args.argv)
    opts = Options(within, duration, args.max_intensity, args.check_every)
    return "", run_when_green(cfg, argv, opts, app=args.app, as_json=args.json)
