"""deploy/prometheus: the rules pass promtool, read only metrics the agent exports, run
in a real Prometheus scraping a real agent, and their unit tests catch a broken rule."""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from devtools.servers import ServerProcess, free_port
from tests.server_fixtures import require_binary, serve

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "deploy" / "prometheus"
RULES = RULES_DIR / "sci-agent.rules.yml"
UNIT_TESTS = sorted((RULES_DIR / "tests").glob("*.test.yml"))
MAIN_TESTS = RULES_DIR / "tests" / "sci-agent.rules.test.yml"
REGRESSION_TESTS = RULES_DIR / "tests" / "sci-regression.test.yml"

#: series Prometheus makes itself, not the agent
PROMETHEUS_SERIES = {"up"}
_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEY = re.compile(r"^(\s*)(?:- )?(record|alert|expr):\s*(.*)$")


def promtool(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run promtool (skipped when missing, failed under CI=true)."""
    binary = require_binary("promtool", "prometheus")
    return subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def rules_in(text: str) -> list[tuple[str, str, str]]:
    """(record or alert, its name, its expression) for each rule of a rules file.

    Reads the layout of this repository's file (``expr:`` inline or as an indented block)
    so the test needs no YAML package; the count is checked against promtool's.
    """
    lines = text.splitlines()
    found: list[tuple[str, str, str]] = []
    kind = name = ""
    for i, line in enumerate(lines):
        match = _KEY.match(line)
        if match is None:
            continue
        indent, key, rest = match.groups()
        if key in ("record", "alert"):
            kind, name = key, rest.strip()
            continue
        if rest.strip() in ("|", ">", "|-", ">-"):
            body = []
            for following in lines[i + 1 :]:
                if following.strip() and len(following) - len(following.lstrip()) <= len(indent):
                    break
                body.append(following)
            rest = "\n".join(body)
        found.append((kind, name, rest.strip()))
    return found


def names_in(expr: str) -> set[str]:
    """The series names an expression selects: identifiers that name agent or Prometheus series."""
    without_labels = re.sub(r"\{[^}]*\}", "", expr)
    return {
        token
        for token in _NAME.findall(without_labels)
        if "sci_agent_" in token or token in PROMETHEUS_SERIES
    }


def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    count = len(rules_in(RULES.read_text()))
    assert f"SUCCESS: {count} rules found" in done.stdout, done.stdout
    assert count >= 20


def test_the_rules_pass_their_unit_tests() -> None:
    assert {p.name for p in UNIT_TESTS} == {MAIN_TESTS.name, REGRESSION_TESTS.name}
    done = promtool("test", "rules", *map(str, UNIT_TESTS), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(UNIT_TESTS), done.stdout


def test_recording_rules_used_are_defined_before_use_in_their_group() -> None:
    rules = rules_in(RULES.read_text())
    recorded = [name for kind, name, _ in rules if kind == "record"]
    assert len(recorded) == len(set(recorded))
    for kind, name, expr in rules:
        for used in names_in(expr):
            if ":" in used:
                assert used in recorded, f"{kind} {name} reads {used}, which no rule records"
    assert all(":" in name and name.count(":") == 2 for name in recorded)  # level:metric:ops


def _listed_after(key: str, text: str) -> list[str]:
    """The ``- item`` lines of a top-level YAML list ``key:`` (this repository's layout)."""
    lines = text.splitlines()
    start = lines.index(f"{key}:") + 1
    items = []
    for line in lines[start:]:
        if not line.startswith("  - "):
            break
        items.append(line[4:].strip())
    return items


def test_unit_tests_evaluate_every_group_recordings_first() -> None:
    groups = re.findall(r"^  - name: (\S+)$", RULES.read_text(), flags=re.MULTILINE)
    assert groups[-1] == "sci-agent.alerts"
    for tests in UNIT_TESTS:
        # without a full order promtool evaluates the groups in a random order
        assert _listed_after("group_eval_order", tests.read_text()) == groups, tests.name


# -- every metric the rules read is in a real scrape of the agent ---------------------


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return str(answer.read().decode("utf-8"))


def _post_units(port: int, count: int) -> None:
    body = json.dumps({"app": "web", "unit": "request", "count": count}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/units", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.status == 202


def _scrape_names(text: str) -> dict[str, float]:
    """Each sample name of a scrape with the sum of its values."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


@contextlib.contextmanager
def running_agent(tmp_path: Path, influxdb: bool) -> Iterator[int]:
    """``sci-agent run`` (model sensor, store; InfluxDB down when asked) with an app ``web``:
    a process of its own, counting 5 requests every 0.1 s. Yields the local API's port."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = tmp_path / "agent.toml"
    config.write_text(
        f'host = "rules-host"\ninterval_s = 0.5\n[store]\npath = "{tmp_path}/store.db"\n'
        f'[sensors.rapl]\nroot = "{tmp_path}/no-powercap"\n[sensors.nvml]\nenabled = false\n'
        f'[http]\nlisten = "127.0.0.1:{port}"\n'
        + (
            f'[influxdb]\nenabled = true\napi = "v1"\ndatabase = "sci"\n'
            f'url = "http://127.0.0.1:{free_port()}"\n'  # nothing listens: the spool fills
            f'[spool]\ndir = "{tmp_path}/spool"\n'
            if influxdb
            else ""
        )
        + '[[apps]]\nname = "web"\ncmdline = "rules-test-workload"\nunit = "request"\n'
    )
    log = tmp_path / "agent.log"
    stop = threading.Event()

    def count_requests() -> None:
        while not stop.wait(0.1):
            with contextlib.suppress(OSError):  # not listening yet
                _post_units(port, 5)

    busy = "import time\nwhile True:\n    sum(range(20000))\n    time.sleep(0.01)"
    poster = threading.Thread(target=count_requests, daemon=True)
    with contextlib.ExitStack() as stack:
        workload = subprocess.Popen([sys.executable, "-c", busy, "rules-test-workload"])
        stack.callback(workload.wait)
        stack.callback(workload.kill)
        err = stack.enter_context(log.open("w"))
        agent = subprocess.Popen(
            [sys.executable, "-m", "agent", "--config", str(config), "run"], stderr=err
        )
        stack.callback(agent.wait, 30)
        stack.callback(agent.send_signal, signal.SIGTERM)
        poster.start()
        stack.callback(poster.join, 10)
        stack.callback(stop.set)
        yield port
    assert agent.returncode == 0, log.read_text()


def scrape_a_running_agent(tmp_path: Path) -> dict[str, float]:
    """Run the agent with a spooled InfluxDB that is down, scrape /metrics once it counted."""
    names: dict[str, float] = {}
    with running_agent(tmp_path, influxdb=True) as port:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):  # not listening yet
                names = _scrape_names(_get(f"http://127.0.0.1:{port}/metrics"))
            if names.get("sci_agent_app_functional_units_total", 0) > 0 and names.get(
                "sci_agent_export_backlog_lines", 0
            ):
                break
            time.sleep(0.2)
    return names


def test_every_metric_the_rules_read_is_in_a_real_scrape(tmp_path: Path) -> None:
    scraped = scrape_a_running_agent(tmp_path)
    assert scraped.get("sci_agent_app_functional_units_total", 0) > 0, sorted(scraped)
    used: dict[str, set[str]] = {}
    for _, name, expr in rules_in(RULES.read_text()):
        for series in names_in(expr):
            if ":" not in series and series not in PROMETHEUS_SERIES:
                used.setdefault(series, set()).add(name)
    assert len(used) >= 14  # the extraction found the rules' metrics
    assert {
        "sci_agent_app_carbon_grams_total",
        "sci_agent_app_functional_units_total",
        "sci_agent_last_successful_cycle_timestamp_seconds",
        "sci_agent_export_backlog_lines",
    } <= used.keys()
    missing = {series: sorted(rules) for series, rules in used.items() if series not in scraped}
    assert not missing, f"read by the rules, absent from /metrics: {missing}"


def test_names_in_finds_raw_and_recorded_series() -> None:
    expr = (
        'sum without (kind) (rate(sci_agent_app_carbon_grams_total{app!~"x"}[5m]))'
        " / ignoring (unit) group_right ()"
        " (host_app_unit:sci_agent_app_functional_units:rate5m > 0)"
        ' and up{job="sci-agent"} == 0'
    )
    assert names_in(expr) == {
        "sci_agent_app_carbon_grams_total",
        "host_app_unit:sci_agent_app_functional_units:rate5m",
        "up",
    }


# -- a real Prometheus loads the rules and evaluates them on a real agent --------------


class PrometheusServer(ServerProcess):
    """Prometheus scraping one agent every second, the rules evaluated every second."""

    name = "prometheus"
    ready_path = "/-/ready"
    ready_status = 200
    target = ""

    def prepare(self) -> None:
        (self.workdir / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {RULES}\n"
            "scrape_configs:\n  - job_name: sci-agent\n"
            f'    static_configs:\n      - targets: ["{self.target}"]\n'
        )

    def command(self) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]

    def api(self, path: str, **params: str) -> Any:
        """The ``data`` of a successful API answer."""
        status, body = self.http("GET", f"/api/v1/{path}", params)
        answer = json.loads(body)
        assert status == 200 and answer["status"] == "success", body[:500]
        return answer["data"]

    def query(self, expr: str, at: float | None = None) -> dict[str, float]:
        """An instant query: each sample's ``app`` (or its label set) and value."""
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        return {
            r["metric"].get("app", json.dumps(r["metric"], sort_keys=True)): float(r["value"][1])
            for r in self.api("query", **params)["result"]
        }


def test_a_real_prometheus_evaluates_the_rules_on_a_real_agent(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    binary = require_binary("prometheus", "prometheus")
    sci = "host_app_unit:sci_agent_app_sci_grams_per_unit:ratio_rate5m"
    with running_agent(tmp_path / "agent", influxdb=False) as port:
        (tmp_path / "prometheus").mkdir()
        server = PrometheusServer(binary, tmp_path / "prometheus")
        server.target = f"127.0.0.1:{port}"
        with contextlib.contextmanager(serve)(server, request):
            deadline = time.monotonic() + 60
            while not server.query(sci) and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(2)  # every group evaluated since; read settled values
            at = time.time() - 1
            groups = server.api("rules")["groups"]
            scis = server.query(sci, at)
            host_w = server.query("host:sci_agent_component_energy_joules:rate5m", at)
            apps_w = server.query(
                "sum without (app) (host_app:sci_agent_app_energy_joules:rate5m)", at
            )
            up = server.query('up{job="sci-agent"}', at)
            alerts = server.query("ALERTS", at)

    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == len(rules_in(RULES.read_text()))
    broken = {r["name"]: r["lastError"] for r in rules if r["health"] != "ok"}
    assert not broken, broken  # no rule fails on the agent's real label sets
    assert list(scis) == ["web"], scis  # the only app with units; the others have no SCI
    assert scis["web"] > 0 and math.isfinite(scis["web"])
    (host,) = host_w.values()
    (apps,) = apps_w.values()
    # Energy is conserved (the apps, _idle and _unattributed add up to the host: exactly in
    # the counters); within 5 % here, where the data is younger than the 5-minute window
    # and rate() extrapolates each series from its own first sample.
    assert host > 0 and math.isclose(host, apps, rel_tol=0.05), (host, apps)
    assert list(up.values()) == [1.0]
    assert alerts == {}  # a healthy agent on a VM (no RAPL, no GPU): nothing pending


# -- the unit tests bite: a broken copy of the rules fails them -----------------------

#: (what breaks, text in the rules, its broken replacement, the unit tests that catch it)
BREAKAGES = [
    (
        "a regression threshold no SCI reaches",
        "          ) > 0.20\n",
        "          ) > 20\n",
        REGRESSION_TESTS,
    ),
    (
        "no guard against an app with no units",
        "(host_app_unit:sci_agent_app_functional_units:rate5m > 0)",
        "host_app_unit:sci_agent_app_functional_units:rate5m",
        MAIN_TESTS,
    ),
    (
        "the fleet's SCI as a mean of the hosts' SCI",
        "          sum without (instance, host) (host_app:sci_agent_app_carbon_grams:rate5m)\n"
        "            / ignoring (unit) group_right ()\n"
        "          (sum without (instance, host)"
        " (host_app_unit:sci_agent_app_functional_units:rate5m) > 0)\n",
        "          avg without (instance, host)"
        " (host_app_unit:sci_agent_app_sci_grams_per_unit:ratio_rate5m)\n",
        MAIN_TESTS,
    ),
    (
        "SciAgentDown without its for",
        'expr: up{job="sci-agent"} == 0\n        for: 5m\n',
        'expr: up{job="sci-agent"} == 0\n',
        MAIN_TESTS,
    ),
    (
        "SciAgentDown for every job",
        'expr: up{job="sci-agent"} == 0',
        "expr: up == 0",
        MAIN_TESTS,
    ),
    (
        "a regression alert for apps with a handful of units",
        "          and\n"
        "            host_app_unit:sci_agent_app_functional_units:rate1h * 3600 >= 10\n",
        "",
        REGRESSION_TESTS,
    ),
    (
        "a staleness threshold blind to the interval",
        "clamp_min(10 * max without (host) (sci_agent_interval_seconds), 300)",
        "300",
        MAIN_TESTS,
    ),
    (
        "a sensor alert for sensors the host never had",
        "          sci_agent_sensor_up == 0\n"
        "          and (\n"
        "              increase(sci_agent_sensor_errors_total[10m]) > 0\n"
        "            or\n"
        "              max_over_time(sci_agent_sensor_up[1d]) == 1\n"
        "          )\n",
        "          sci_agent_sensor_up == 0\n",
        MAIN_TESTS,
    ),
    (
        "a spool alert that fires while it drains",
        "deriv(sci_agent_export_backlog_lines[15m]) > 0",
        "deriv(sci_agent_export_backlog_lines[15m]) != 0",
        MAIN_TESTS,
    ),
]


@pytest.mark.parametrize(
    ("original", "broken", "tests"),
    [pytest.param(o, b, t, id=what) for what, o, b, t in BREAKAGES],
)
def test_a_broken_rule_fails_the_unit_tests(
    tmp_path: Path, original: str, broken: str, tests: Path
) -> None:
    text = RULES.read_text()
    assert text.count(original) == 1, original
    (tmp_path / "tests").mkdir()
    copy = tmp_path / RULES.name
    copy.write_text(text.replace(original, broken))
    shutil.copy(tests, tmp_path / "tests" / tests.name)
    checked = promtool("check", "rules", str(copy))
    assert checked.returncode == 0, checked.stdout + checked.stderr  # valid, only wrong
    done = promtool("test", "rules", str(tmp_path / "tests" / tests.name), timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED" in done.stdout + done.stderr
