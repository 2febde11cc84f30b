"""Alert rules: state machine, window aggregation, the engine's notifications and state file."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.alerts.baseline import SciBaseline
from agent.alerts.config import AlertRuleConfig, AlertsConfig, WebhookConfig
from agent.alerts.engine import REPOST_S, AlertEngine, Health
from agent.alerts.formats import human
from agent.alerts.model import Notification
from agent.alerts.state import (
    FIRING,
    OK,
    PENDING,
    REMINDER,
    RESOLVED,
    AlertStatus,
    load_states,
    step,
)
from agent.alerts.window import BUCKETS, AppTotals, IntervalSummary, MetricWindow, summarize
from agent.attribution import attribute
from agent.config import ConfigError, loads
from agent.records import (
    ComponentReading,
    CpuActivity,
    IntensityValue,
    IntervalResult,
    ProcessActivity,
)
from agent.scoring import Scorer
from exporters.sqlite_store import SqliteStore

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
GRID = IntensityValue("FR", 50.0, "builtin", "average", NOW)


def interval(
    end: datetime,
    cpu_j: float,
    units: dict[str, float],
    ticks: dict[str, int] | None = None,
    seconds: float = 10.0,
    grid: IntensityValue = GRID,
) -> IntervalResult:
    """A real attributed and scored interval ending at ``end``."""
    ticks = ticks or {"web": 300, "db": 100}
    procs = [
        ProcessActivity(i + 1, 1, a, a, t, 100_000_000) for i, (a, t) in enumerate(ticks.items())
    ]
    busy = sum(ticks.values()) + 5
    start = end - timedelta(seconds=seconds)
    readings = [ComponentReading("cpu", "cpu", "model", cpu_j, static_joules=cpu_j / 4)]
    result = attribute(
        "h1", start, end, readings, CpuActivity(busy, busy * 2, 2), procs, 4_000_000_000
    )
    scorer = Scorer({"web": "request", "db": "query"}, 1000.0, 4.0, "capacity", 1.0, cpu_count=2)
    return scorer.score(result, grid, units)


def rule(**kw: object) -> AlertRuleConfig:
    base: dict[str, object] = {"name": "r", "metric": "host_watts", "threshold": 100.0}
    base.update(kw)
    return AlertRuleConfig(**base)  # type: ignore[arg-type]


class ListOutbox:
    """Collects what the engine queues (the real outbox is tested in test_alert_outbox)."""

    def __init__(self) -> None:
        self.items: list[tuple[Notification, bool]] = []

    def put(self, n: Notification, supersede: bool = False) -> None:
        self.items.append((n, supersede))


# -- the state machine ---------------------------------------------------------------------


def run_steps(
    r: AlertRuleConfig, values: list[float | None], every: float = 10.0
) -> list[tuple[str, str | None]]:
    status = AlertStatus("r", "r")
    out = []
    for i, v in enumerate(values):
        event = step(r, status, v, 1000.0 + i * every)
        out.append((status.state, event))
    return out


def test_for_s_holds_pending_until_the_condition_lasted_that_long() -> None:
    r = rule(for_s=30.0)
    got = run_steps(r, [150, 150, 150, 150, 150])
    assert [s for s, _ in got] == [PENDING, PENDING, PENDING, FIRING, FIRING]
    assert [e for _, e in got].count(FIRING) == 1


def test_pending_goes_back_to_ok_when_the_condition_breaks() -> None:
    got = run_steps(rule(for_s=30.0), [150, 150, 50, 150, 150, 150, 150])
    assert [s for s, _ in got][:3] == [PENDING, PENDING, OK]
    assert got[-1] == (FIRING, FIRING)  # 30 s after the second start, not the first


def test_a_value_flapping_around_the_threshold_sends_one_firing_not_a_storm() -> None:
    r = rule(keep_firing_for_s=60.0)
    values: list[float | None] = [150, 90, 150, 95, 160, 80, 150, 99] * 5
    got = run_steps(r, values)
    events = [e for _, e in got if e]
    assert events == [FIRING]
    # clear for 60 s without a break: one resolve
    got = run_steps(r, [150, 90, 90, 90, 90, 90, 90, 90])
    assert [e for _, e in got if e] == [FIRING, RESOLVED]
    assert got[7] == (RESOLVED, RESOLVED)  # cleared at t=10, resolved at t=70 (60 s later)


def test_clear_threshold_is_hysteresis_a_value_just_below_the_threshold_keeps_firing() -> None:
    r = rule(clear_threshold=80.0, keep_firing_for_s=0.0)
    assert [e for _, e in run_steps(r, [150, 95, 90, 85, 81]) if e] == [FIRING]
    assert [e for _, e in run_steps(r, [150, 95, 79]) if e] == [FIRING, RESOLVED]
    below = rule(op="<", threshold=10.0, clear_threshold=20.0, keep_firing_for_s=0.0)
    assert [e for _, e in run_steps(below, [5, 15, 21]) if e] == [FIRING, RESOLVED]


def test_repeat_s_reminds_while_firing() -> None:
    got = run_steps(rule(repeat_s=30.0), [150] * 8)
    assert [e for _, e in got if e] == [FIRING, REMINDER, REMINDER]  # t=0, 30, 60


def test_no_data_resolves_a_firing_alert_only_after_its_window() -> None:
    r = rule(window_s=60.0, keep_firing_for_s=0.0)
    got = run_steps(r, [150, None, None, None, None, None, None, None])
    assert [s for s, _ in got][:6] == [FIRING] * 6
    assert got[6] == (RESOLVED, RESOLVED)  # 60 s after the last value that held
    assert run_steps(rule(for_s=60.0), [150, None])[-1] == (OK, None)


# -- windows -------------------------------------------------------------------------------


def test_window_sci_is_sum_of_carbon_over_sum_of_units_not_a_mean_of_ratios() -> None:
    ends = [NOW - timedelta(seconds=s) for s in (20, 10, 0)]
    results = [
        interval(ends[0], 400.0, {"web": 40}),
        interval(ends[1], 300.0, {"web": 1}),
        interval(ends[2], 250.0, {"web": 25}),
    ]
    window = MetricWindow([60, 15], interval_s=10.0)
    window.add(summarize(r) for r in results)
    totals = window.totals(60, NOW.timestamp())
    web = [next(s for s in r.sci if s.app == "web") for r in results]
    expected = sum(s.carbon_g for s in web) / sum(s.units for s in web)
    mean_of_ratios = sum(s.carbon_g / s.units for s in web) / 3
    assert totals.sci("web") == pytest.approx(expected, rel=1e-12)
    assert abs(mean_of_ratios - expected) / expected > 0.5  # the wrong way is far off
    host_j = sum(c.joules for r in results for c in r.components)
    assert totals.host_watts == pytest.approx(host_j / 30.0)
    assert totals.sci("db") is None  # no unit counted
    # only the intervals that ended in the window
    assert window.totals(15, NOW.timestamp()).intervals == 2


def test_a_day_long_window_is_held_in_at_most_121_buckets_and_sums_within_one_bucket() -> None:
    day, step = 86_400.0, 5.0
    window = MetricWindow([day, 60.0], interval_s=step)
    t0 = NOW.timestamp()
    n = int(2 * day / step)  # two days: the first one must leave the day window
    window.add(
        IntervalSummary(
            t0 + k * step,
            step,
            10.0 * step,
            100.0 + k % 7,
            {"web": AppTotals(2.0 * step, 0.1, 1.0)},
        )
        for k in range(n)
    )
    assert window.buckets() <= (BUCKETS + 1) + 13  # the day's ring, and 12-13 intervals of 60 s
    now = t0 + (n - 1) * step
    totals = window.totals(day, now)
    exact = day / step
    assert abs(totals.intervals - exact) <= exact / BUCKETS  # within one bucket at the old end
    assert totals.host_watts == pytest.approx(10.0)  # a ratio of sums: exact whatever the edge
    assert totals.app_watts("web") == pytest.approx(2.0)
    assert totals.sci("web") == pytest.approx(0.1)
    minute = window.totals(60.0, now)
    assert minute.intervals == 12  # short windows stay exact: ends in (now − 60, now]
    assert minute.gco2_per_kwh == pytest.approx(sum(100.0 + k % 7 for k in range(n - 12, n)) / 12)


# -- the engine ----------------------------------------------------------------------------


def engine_for(
    tmp_path: Path, rules: list[AlertRuleConfig], **kw: object
) -> tuple[AlertEngine, ListOutbox]:
    hooks = (
        WebhookConfig("team", "http://127.0.0.1:9/x"),
        WebhookConfig("am", "http://127.0.0.1:9/", format="alertmanager"),
    )
    cfg = AlertsConfig(state_dir=str(tmp_path / "alerts"), rules=tuple(rules), webhooks=hooks)
    outbox = ListOutbox()
    engine = AlertEngine(cfg, "h1", outbox=outbox, interval_s=10.0, **kw)  # type: ignore[arg-type]
    return engine, outbox


def test_engine_fires_per_app_notifies_each_webhook_and_a_restart_does_not_repeat_it(
    tmp_path: Path,
) -> None:
    r = rule(name="web-sci", metric="sci", threshold=0.0, window_s=60.0, webhooks=("team",))
    engine, _ = engine_for(tmp_path, [r])
    engine.write([interval(NOW, 400.0, {"web": 40, "db": 4})])
    made = engine.evaluate(NOW.timestamp())
    assert sorted(n.app or "" for n in made) == ["db", "web"]
    web = next(n for n in made if n.app == "web")
    sci = next(s for s in interval(NOW, 400.0, {"web": 40, "db": 4}).sci if s.app == "web")
    assert web.value == pytest.approx(sci.carbon_g / 40)
    assert (web.state, web.webhook, web.key, web.host) == (FIRING, "team", "web-sci/app=web", "h1")
    assert "SCI of web" in web.summary and "gCO2e/request" in web.summary
    saved = load_states(tmp_path / "alerts" / "alerts-state.json")
    assert saved["web-sci/app=web"].state == FIRING

    engine.close()
    again, _ = engine_for(tmp_path, [r])
    again.open()
    try:
        again.write([interval(NOW + timedelta(seconds=10), 400.0, {"web": 40, "db": 4})])
        assert again.evaluate((NOW + timedelta(seconds=10)).timestamp()) == []
        assert again.statuses["web-sci/app=web"].state == FIRING
    finally:
        again.close()


def test_engine_resolves_with_an_ended_at_and_alertmanager_gets_reposts(tmp_path: Path) -> None:
    r = rule(
        name="power", threshold=20.0, window_s=10.0, keep_firing_for_s=0.0, webhooks=("team", "am")
    )
    engine, outbox = engine_for(tmp_path, [r])
    t = NOW
    engine.write([interval(t, 400.0, {})])  # 40 W
    first = engine.evaluate(t.timestamp())
    assert [(n.webhook, n.state) for n in first] == [("team", FIRING), ("am", FIRING)]
    assert [s for _, s in outbox.items] == [False, True]  # alertmanager posts supersede
    t2 = t + timedelta(seconds=REPOST_S)
    engine.write([interval(t2, 400.0, {})])
    again = engine.evaluate(t2.timestamp())
    assert [(n.webhook, n.reminder) for n in again] == [("am", True)]
    t3 = t2 + timedelta(seconds=10)
    engine.write([interval(t3, 100.0, {})])  # 10 W
    done = engine.evaluate(t3.timestamp())
    assert [(n.webhook, n.state) for n in done] == [("team", RESOLVED), ("am", RESOLVED)]
    assert done[0].ended_at == t3.timestamp() and done[0].started_at == t.timestamp()
    assert done[0].value == pytest.approx(10.0)
    assert len({n.id for n, _ in outbox.items}) == len(outbox.items)  # every message its own id


def test_staleness_is_per_part_and_fires_for_the_part_that_stopped(tmp_path: Path) -> None:
    now = NOW.timestamp()
    worked = {"cycle": now - 5, "sink:influxdb": now - 900, "sensor:rapl": None}
    r = rule(name="stale", metric="staleness_s", threshold=300.0, webhooks=("team",))
    engine, _ = engine_for(tmp_path, [r], health=Health(last_worked=lambda: worked))
    engine.started = now - 100  # rapl never worked: stale since the agent started
    made = engine.evaluate(now)
    assert [(n.part, n.value) for n in made] == [("sink:influxdb", 900.0)]
    assert engine.statuses["stale/part=sensor:rapl"].value == 100.0


def test_sci_change_pct_compares_the_window_with_the_last_seven_days_in_the_store(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "store.db", 30, 5)
    store.open()
    old = [interval(NOW - timedelta(days=d), 300.0, {"web": 100}) for d in (6, 4, 2, 1)]
    store.write(old)
    store.close()
    baseline = SciBaseline(tmp_path / "store.db", "h1")
    r = rule(
        name="regress",
        metric="sci_change_pct",
        threshold=20.0,
        window_s=600.0,
        app="web",
        webhooks=("team",),
    )
    engine, _ = engine_for(tmp_path, [r], baseline=baseline)
    now_results = [interval(NOW - timedelta(seconds=s), 300.0, {"web": 50}) for s in (20, 10, 0)]
    engine.write(now_results)
    made = engine.evaluate(NOW.timestamp())
    ref = sum(next(s for s in x.sci if s.app == "web").carbon_g for x in old) / 400
    cur = sum(next(s for s in x.sci if s.app == "web").carbon_g for x in now_results) / 150
    assert [n.app for n in made] == ["web"]
    assert made[0].value == pytest.approx((cur / ref - 1) * 100, rel=1e-9)
    assert made[0].value > 90  # half the requests for the same energy: about +100 %
    assert human("sci_change_pct", made[0].value).startswith("+")


def test_a_rule_for_another_host_is_inert_and_pseudo_apps_are_left_out(tmp_path: Path) -> None:
    elsewhere = rule(name="x", host="db-*")
    watts = rule(name="w", metric="app_watts", threshold=0.0)
    engine, _ = engine_for(tmp_path, [elsewhere, watts])
    engine.write([interval(NOW, 400.0, {})])
    assert engine.evaluate(NOW.timestamp()) == []  # no webhooks: states and the log only
    assert sorted(engine.statuses) == ["w/app=db", "w/app=web"]
    assert {s.state for s in engine.statuses.values()} == {FIRING}


def test_a_bad_state_file_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "alerts-state.json"
    path.write_text("{not json")
    assert load_states(path) == {}
    assert "ignoring the state file" in caplog.text
    path.write_text(
        json.dumps({"version": 1, "alerts": [{"key": "a", "rule": "a", "state": "firing"}]})
    )
    assert load_states(path)["a"].state == FIRING


# -- config --------------------------------------------------------------------------------

GOOD = """
[[alerts.webhooks]]
name = "team"
url = "https://hooks.example.com/services/T0/B0/secretpath"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
[[alerts.rules]]
name = "r"
metric = "sci"
threshold = 0.5
webhooks = ["team"]
"""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ('metric = "sci"', 'metric = "carbon"'),
            "alerts.rules[0].metric: unknown metric 'carbon'",
        ),
        (("threshold = 0.5\n", ""), "alerts.rules[0].threshold: required"),
        (
            ('webhooks = ["team"]', 'webhooks = ["ops"]'),
            "alerts.rules[0].webhooks: unknown webhook 'ops'",
        ),
        (('metric = "sci"', 'metric = "sci"\nop = "=>"'), "alerts.rules[0].op: must be one of"),
        (
            ("whsec_MfKQ", "whsec_!!KQ"),
            "alerts.webhooks[0].secret: the part after whsec_ is not base64",
        ),
        (
            ('url = "https', 'url = "ftp'),
            "alerts.webhooks[0].url: expected an http:// or https:// URL",
        ),
        (
            ('metric = "sci"', 'metric = "host_watts"\napp = "web"'),
            "alerts.rules[0].app: metric host_watts",
        ),
    ],
)
def test_config_errors_name_the_key(change: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        loads(GOOD.replace(*change))
    assert message in str(err.value)
    assert "secretpath" not in str(err.value) and "MfKQ9r8" not in str(err.value)


def test_sci_change_pct_needs_the_store() -> None:
    text = (
        GOOD.replace('metric = "sci"', 'metric = "sci_change_pct"') + "[store]\nenabled = false\n"
    )
    with pytest.raises(
        ConfigError, match=r"alerts.rules\[0\].metric: sci_change_pct .* store.enabled"
    ):
        loads(text)
    assert replace(loads(GOOD)).alerts.rules[0].threshold == 0.5


class FullOutbox(ListOutbox):
    """Refuses ``refusals`` puts (a full disk), then takes them."""

    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.refusals = refusals

    def put(self, n: Notification, supersede: bool = False) -> None:
        if self.refusals > 0:
            self.refusals -= 1
            raise OSError(28, "No space left on device")
        super().put(n, supersede)


def test_a_notification_the_outbox_refuses_is_held_and_queued_next_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sci_agent.alerts")
    r = rule(name="power", threshold=20.0, window_s=10.0, webhooks=("team",))
    hooks = (WebhookConfig("team", "http://127.0.0.1:9/x"),)
    cfg = AlertsConfig(state_dir=str(tmp_path), rules=(r,), webhooks=hooks)
    outbox = FullOutbox(refusals=1)
    woken: list[bool] = []
    engine = AlertEngine(cfg, "h1", outbox=outbox, wake_delivery=lambda: woken.append(True))
    engine.write([interval(NOW, 400.0, {})])
    engine.evaluate(NOW.timestamp())
    assert outbox.items == [] and "holding them in memory" in caplog.text
    assert engine.statuses["power"].state == FIRING  # the state moved on regardless
    engine.evaluate((NOW + timedelta(seconds=5)).timestamp())
    assert [(n.alert, n.state) for n, _ in outbox.items] == [("power", FIRING)]
    assert woken and "takes notifications again" in caplog.text


def test_staleness_parts_of_a_real_agent_leave_out_sensors_that_never_opened(
    tmp_path: Path,
) -> None:
    from agent.loop import Loop
    from agent.runtime import Agent

    text = (
        f'[store]\npath = "{tmp_path}/s.db"\n[sensors.rapl]\nroot = "{tmp_path}/none"\n'
        f'[sensors.nvml]\nenabled = false\n[alerts]\nstate_dir = "{tmp_path}/alerts"\n'
        '[[alerts.rules]]\nname = "stale"\nmetric = "staleness_s"\nthreshold = 30\n'
    )
    agent = Agent(loads(text), serve_http=False)
    sinks = agent.build_sinks()
    agent.sampler.open()
    try:
        loop = Loop(agent.measure, sinks, 0.1)
        agent.watch_loop(loop)
        before = loop.last_success_unix
        loop.run_cycle()
        parts = agent.last_worked(loop)
    finally:
        agent.sampler.close()
    assert before is None and parts["cycle"] == loop.last_success_unix
    assert set(parts) == {"cycle", "sensor:model", "sink:store"}  # no rapl, no nvml
    assert parts["sink:store"] is not None and parts["sensor:model"] is not None
    assert agent.alerts is not None and agent.alerts.health.last_worked().keys() == parts.keys()


def test_a_restart_longer_than_the_window_does_not_resolve_a_firing_alert(tmp_path: Path) -> None:
    r = rule(name="power", threshold=20.0, window_s=10.0, keep_firing_for_s=0.0, webhooks=("team",))
    engine, _ = engine_for(tmp_path, [r])
    engine.write([interval(NOW, 400.0, {})])
    assert [n.state for n in engine.evaluate(NOW.timestamp())] == [FIRING]
    engine.close()
    later = NOW + timedelta(seconds=60)  # down for six windows
    again, _ = engine_for(tmp_path, [r], wall_clock=lambda: later.timestamp())
    again.open()
    try:
        assert again.evaluate(later.timestamp()) == []  # an empty window is not "clear"
        again.write([interval(later + timedelta(seconds=5), 400.0, {})])
        assert again.evaluate((later + timedelta(seconds=5)).timestamp()) == []
        assert again.statuses["power"].state == FIRING
    finally:
        again.close()
