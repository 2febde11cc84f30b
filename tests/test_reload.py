"""SIGHUP: a good config is applied live without losing units; a bad one changes nothing."""

from __future__ import annotations

import json
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import pytest

from agent.config import AppRule, Config, GridConfig, StoreConfig, loads
from agent.loop import Loop
from agent.runtime import LIVE_KEYS, plan_reload
from devtools.servers import free_port
from exporters.memory import MemorySink
from tests.test_agent_run import (
    AGENT,
    APP_RULE,
    _interval_ends,
    _post_unit,
    _wait_for_intervals,
    write_config,
)
from tests.test_loop import interval

MARKER = "sci-reload-marker"


def _config_text(tmp_path: Path, port: int, grid_g: float, more: str = "") -> str:
    jsonl = tmp_path / "out.jsonl"
    return (
        f'[http]\nlisten = "127.0.0.1:{port}"\n[jsonl]\npath = "{jsonl}"\n'
        f'[grid]\nzone = "FR"\nproviders = ["static"]\nintensity_gco2_per_kwh = {grid_g}\n'
        + more
        + APP_RULE
    )


def _jsonl(tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "out.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _busy_child(seconds: float) -> subprocess.Popen[bytes]:
    """A busy process whose command line carries ``MARKER``."""
    code = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
    return subprocess.Popen([sys.executable, "-c", code, MARKER])


def test_good_config_applies_live_and_keeps_every_unit(tmp_path: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path, _config_text(tmp_path, port, 100.0), interval_s=0.5)
    agent = subprocess.Popen(
        [*AGENT, "--config", str(cfg), "run"], stderr=subprocess.PIPE, text=True
    )
    db_path = tmp_path / "store.db"
    accepted = 0
    done = threading.Event()

    def send() -> None:
        nonlocal accepted
        while not done.is_set():
            if _post_unit(port):
                accepted += 1
            time.sleep(0.01)

    sender = threading.Thread(target=send)
    try:
        assert len(_wait_for_intervals(db_path, 2, agent)) >= 2, "no interval before the reload"
        sender.start()
        time.sleep(0.7)
        before = accepted
        # New: intensity, an [[apps]] rule, the interval, the log level; store.path
        # needs a restart and must keep its running value.
        marker_rule = f'[[apps]]\nname = "marked"\ncmdline = "{MARKER}"\n'
        text = _config_text(tmp_path, port, 200.0, '[log]\nlevel = "debug"\n' + marker_rule)
        cfg.write_text(
            write_config(tmp_path, text, interval_s=0.3)
            .read_text()
            .replace(f"{tmp_path}/store.db", f"{tmp_path}/moved.db")
        )
        agent.send_signal(signal.SIGHUP)
        time.sleep(1.5)  # applied within a second, between cycles
        child = _busy_child(2.0)
        child.wait(timeout=30)
        time.sleep(1.0)  # the interval the child ended in is scored and written
        done.set()
        sender.join(timeout=30)
        time.sleep(0.5)
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=60)
    finally:
        done.set()
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode == 0, err
    assert 0 < before < accepted, (before, accepted)  # units posted before and after
    assert "reload: store.path needs a restart; the running value is kept" in err
    assert "reloaded the config: interval_s, apps, grid.intensity_gco2_per_kwh, log.level" in err
    after_reload = err[err.index("reloaded the config") :]
    assert "DEBUG sci_agent: interval:" in after_reload  # the new log level
    assert not (tmp_path / "moved.db").exists()
    db = sqlite3.connect(db_path)
    stored = db.execute("SELECT sum(units) FROM sci WHERE app = 'agent'").fetchone()[0]
    assert stored == accepted  # none lost across the reload
    rows = db.execute("SELECT ts_ms, start_ms, interval_s FROM intervals ORDER BY ts_ms").fetchall()
    for (end_a, _, _), (_, start_b, _) in pairwise(rows):
        assert end_a == start_b  # no gap and no overlap across the reload
    assert 0.2 < statistics.median(s for _, _, s in rows[-6:-1]) < 0.45  # the new interval_s
    lines = _jsonl(tmp_path)
    intensities = [d["intensity"]["gco2_per_kwh"] for d in lines]  # type: ignore[index]
    assert intensities[0] == 100.0 and intensities[-1] == 200.0
    assert intensities == sorted(intensities)  # one switch, never back
    assert any(a["app"] == "marked" for d in lines for a in d["apps"])  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("interval_s = -1\n", "interval_s: must be greater than 0"),
        ("[store\n", "invalid TOML"),
        ('[grid]\nzone = "NOWHERE"\n', "grid.zone"),
    ],
    ids=["validation", "parse", "grid-zone"],
)
def test_bad_config_is_rejected_in_one_line_and_the_old_one_kept(
    tmp_path: Path, change: str, named: str
) -> None:
    cfg = write_config(tmp_path, "[http]\nenabled = false\n", interval_s=0.5)
    good = cfg.read_text()
    agent = subprocess.Popen(
        [*AGENT, "--config", str(cfg), "run"], stderr=subprocess.PIPE, text=True
    )
    db_path = tmp_path / "store.db"
    try:
        assert len(_wait_for_intervals(db_path, 2, agent)) >= 2
        if change.startswith("interval_s"):
            cfg.write_text(good.replace("interval_s = 0.5\n", change))
        else:
            cfg.write_text(good + change)
        agent.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        at_reload = len(_interval_ends(db_path))
        ends = _wait_for_intervals(db_path, at_reload + 3, agent)
        assert agent.poll() is None, "the agent stopped on a bad config"
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=60)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode == 0, err
    assert len(ends) >= at_reload + 3  # still sampling, at the old rate
    rejected = [line for line in err.splitlines() if "reload" in line]
    assert len(rejected) == 1, err
    assert "reload rejected, the running config is kept" in rejected[0]
    assert named in rejected[0]
    assert "Traceback" not in err


# -- the parts, in process -----------------------------------------------------------------


def test_plan_keeps_keys_that_need_a_restart() -> None:
    old = Config(host="h")
    new = replace(
        old,
        interval_s=2.0,
        apps=(AppRule("web", exe="nginx"),),
        grid=GridConfig(zone="DE"),
        store=StoreConfig(path="/elsewhere.db"),
        host="renamed",
    )
    plan = plan_reload(old, new)
    assert plan.applied == ("interval_s", "apps", "grid.zone")
    assert plan.needs_restart == ("host", "store.path")
    assert plan.config.store == old.store and plan.config.host == "h"
    assert plan.config.grid.zone == "DE" and plan.config.interval_s == 2.0
    assert plan_reload(old, old).applied == () == plan_reload(old, old).needs_restart
    assert {"interval_s", "apps", "grid", "sci", "embodied", "scrape", "log"} <= LIVE_KEYS


def test_plan_names_nested_keys_from_a_file() -> None:
    old = loads('[influxdb]\nenabled = false\nurl = "http://a:8086"\n[sci]\npue = 1.2\n')
    new = loads('[influxdb]\nenabled = false\nurl = "http://b:8086"\n[sci]\npue = 1.5\n')
    plan = plan_reload(old, new)
    assert plan.needs_restart == ("influxdb.url",) and plan.applied == ("sci.pue",)
    assert plan.config.influxdb.url == "http://a:8086" and plan.config.sci.pue == 1.5


def test_loop_reloads_between_cycles_never_during_one() -> None:
    events: list[str] = []
    measured_at: list[float] = []
    reloaded_at: list[float] = []
    stop = threading.Event()
    loop: Loop

    def measure() -> object:
        events.append("measure")
        loop.request_reload()  # asked for mid-cycle
        time.sleep(0.1)
        events.append("measured")
        measured_at.append(time.monotonic())
        if events.count("reload") >= 2:
            stop.set()
        return interval(len(events))

    def reload() -> None:
        events.append("reload")
        reloaded_at.append(time.monotonic())
        loop.interval_s = 0.05

    loop = Loop(measure, [MemorySink()], 0.2, stop, on_reload=reload)  # type: ignore[arg-type]
    started = time.monotonic()
    loop.run()
    assert time.monotonic() - started < 3
    for a, b in pairwise(events):
        assert not (a == "measure" and b == "reload")
    assert events[:4] == ["measure", "measured", "reload", "measure"]
    assert reloaded_at[0] - measured_at[0] < 0.05  # right after the cycle, not a tick later


def test_loop_feeds_the_watchdog_between_long_ticks() -> None:
    pings: list[float] = []
    stop = threading.Event()
    loop = Loop(
        lambda: interval(0),
        [],
        10.0,
        stop,
        watchdog=lambda: pings.append(time.monotonic()),
        watchdog_s=0.1,
    )
    timer = threading.Timer(0.55, stop.set)
    timer.start()
    loop.run()
    assert 5 <= len(pings) <= 7, pings
    assert loop.cycles == 1  # only the final, partial interval: no tick was brought forward


def _alerts_text(tmp_path: Path, threshold: float, rules: bool = True) -> str:
    text = (
        f'[store]\npath = "{tmp_path}/s.db"\n[sensors.nvml]\nenabled = false\n'
        f'[alerts]\nstate_dir = "{tmp_path}/alerts"\n'
        '[[alerts.webhooks]]\nname = "team"\nurl = "http://127.0.0.1:9/hook"\n'
    )
    if rules:
        text += (
            f'[[alerts.rules]]\nname = "power"\nmetric = "host_watts"\nthreshold = {threshold}\n'
            '[[alerts.rules]]\nname = "gone"\nmetric = "gco2_per_kwh"\nthreshold = 1\n'
        )
    return text


def test_alert_rules_reload_live_keeping_the_state_of_rules_still_configured(
    tmp_path: Path,
) -> None:
    from agent.alerts.state import FIRING, AlertStatus
    from agent.runtime import Agent

    agent = Agent(loads(_alerts_text(tmp_path, 10.0)), serve_http=False)
    agent.build_sinks()
    engine = agent.alerts
    assert engine is not None
    engine.statuses["power"] = AlertStatus("power", "power", state=FIRING)
    engine.statuses["gone"] = AlertStatus("gone", "gone", state=FIRING)
    new = loads(_alerts_text(tmp_path, 99.0).split("[[alerts.rules]]\nname = \"gone\"")[0])
    done = agent.reload(new)
    assert done.applied == ("alerts.rules",) and done.needs_restart == ()
    assert [(r.name, r.threshold) for r in engine.rules] == [("power", 99.0)]
    assert list(engine.statuses) == ["power"]  # still firing: not notified again
    assert engine.statuses["power"].state == FIRING


def test_the_first_alert_rules_or_a_moved_state_dir_need_a_restart(tmp_path: Path) -> None:
    from agent.runtime import Agent

    agent = Agent(loads(_alerts_text(tmp_path, 10.0, rules=False)), serve_http=False)
    agent.build_sinks()
    assert agent.alerts is None
    done = agent.reload(loads(_alerts_text(tmp_path, 10.0)))
    assert done.needs_restart == ("alerts.rules",) and done.applied == ()
    assert agent.config.alerts.rules == ()
    moved = loads(_alerts_text(tmp_path, 10.0, rules=False).replace("/alerts\"", "/elsewhere\""))
    assert agent.reload(moved).needs_restart == ("alerts.state_dir",)
