"""The /proc scanner: tick deltas, pid reuse, vanished processes, CPU topology."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from agent.apps import AppNamer
from agent.config import AppRule
from agent.procfs import PAGE_SIZE, ProcScanner
from tests.procfs_fixtures import FakeProc, fake_topology


@pytest.fixture
def fake(tmp_path: Path) -> FakeProc:
    return FakeProc(tmp_path / "proc")


def scanner(fake: FakeProc, tmp_path: Path, rules: tuple[AppRule, ...] = ()) -> ProcScanner:
    return ProcScanner(AppNamer(rules), str(fake.root), str(tmp_path / "sys"), self_pid=1)


def by_pid(activity):
    return {p.pid: p for p in activity}


def test_first_scan_is_a_baseline_then_deltas(fake: FakeProc, tmp_path: Path) -> None:
    fake.set_process(10, "web", utime=100, stime=50, rss_pages=7)
    s = scanner(fake, tmp_path)
    assert s.scan() == []
    fake.set_process(10, "web", utime=130, stime=60, rss_pages=9)
    (p,) = s.scan()
    assert (p.pid, p.name, p.cpu_ticks, p.rss_bytes) == (10, "web", 40, 9 * PAGE_SIZE)


def test_reused_pid_is_a_new_process_not_a_negative_delta(fake: FakeProc, tmp_path: Path) -> None:
    fake.set_process(10, "old", utime=5000, starttime=100)
    s = scanner(fake, tmp_path)
    s.scan()
    fake.remove_process(10)
    fake.set_process(10, "new", utime=7, starttime=900)  # same pid, later start
    (p,) = s.scan()
    assert (p.name, p.starttime, p.cpu_ticks) == ("new", 900, 7)


def test_process_started_during_interval_counts_all_its_ticks(
    fake: FakeProc, tmp_path: Path
) -> None:
    s = scanner(fake, tmp_path)
    s.scan()
    fake.set_process(20, "job", utime=30, stime=5)
    assert by_pid(s.scan())[20].cpu_ticks == 35


def test_children_that_lived_between_scans_are_charged_to_their_parent(
    fake: FakeProc, tmp_path: Path
) -> None:
    fake.set_process(10, "make", utime=5)
    s = scanner(fake, tmp_path)
    s.scan()
    # Children ran and were reaped between two scans: only the parent's cutime shows it.
    fake.set_process(10, "make", utime=6, cutime=30, cstime=10)
    assert by_pid(s.scan())[10].cpu_ticks == 1 + 40


def test_a_seen_child_is_not_counted_twice_when_reaped(fake: FakeProc, tmp_path: Path) -> None:
    fake.set_process(10, "bash", utime=5)
    fake.set_process(11, "job", utime=20, ppid=10)
    s = scanner(fake, tmp_path)
    s.scan()
    fake.set_process(11, "job", utime=50, ppid=10)
    assert by_pid(s.scan())[11].cpu_ticks == 30  # charged to the child while it lives
    fake.remove_process(11)  # exits after 8 more ticks and is reaped: cutime = 58
    fake.set_process(10, "bash", utime=5, cutime=58)
    assert by_pid(s.scan())[10].cpu_ticks == 8  # only what no scan saw


def test_orphans_reaped_by_init_stay_unattributed(fake: FakeProc, tmp_path: Path) -> None:
    fake.set_process(1, "systemd", utime=5, ppid=0)
    s = scanner(fake, tmp_path)
    s.scan()
    fake.set_process(1, "systemd", utime=5, cutime=500, ppid=0)
    assert by_pid(s.scan())[1].cpu_ticks == 0


def test_vanished_process_is_not_an_error(fake: FakeProc, tmp_path: Path) -> None:
    fake.set_process(10, "a", utime=1)
    fake.set_process(11, "b", utime=1)
    s = scanner(fake, tmp_path)
    s.scan()
    fake.remove_process(11)
    (fake.root / "12").mkdir()  # a directory whose stat is gone: vanished mid-read
    assert [p.pid for p in s.scan()] == [10]


def test_comm_with_spaces_and_parentheses(fake: FakeProc, tmp_path: Path) -> None:
    fake.set_process(10, "tmux: server (1)", utime=1)
    s = scanner(fake, tmp_path)
    s.scan()
    fake.set_process(10, "tmux: server (1)", utime=4)
    (p,) = s.scan()
    assert (p.name, p.cpu_ticks) == ("tmux: server (1)", 3)


def test_apps_named_once_by_rules_then_cgroup(fake: FakeProc, tmp_path: Path) -> None:
    fake.set_process(10, "python3", 1, cmdline="python3 -m myserver --port 80")
    fake.set_process(11, "nginx", 1, cgroup="0::/system.slice/nginx.service\n")
    fake.set_process(12, "bash", 1)
    fake.set_process(13, "kworker/0:1", 1, ppid=2)
    rules = (AppRule(name="api", cmdline=r"-m myserver\b"),)
    s = scanner(fake, tmp_path, rules)
    s.scan()
    for pid in (10, 11, 12, 13):
        (fake.root / str(pid) / "cmdline").unlink()  # later scans must not re-read it
    apps = {p.pid: p.app for p in s.scan()}
    assert apps == {10: "api", 11: "nginx", 12: "other", 13: "kernel"}


def test_cpu_activity_per_package(fake: FakeProc, tmp_path: Path) -> None:
    fake_topology(tmp_path / "sys", {0: 0, 1: 1})
    s = scanner(fake, tmp_path)
    assert s.cpu_activity().total_ticks == 0  # baseline
    fake.set_cpu(0, user=90, system=0, idle=10)
    fake.set_cpu(1, user=10, system=10, idle=80)
    a = s.cpu_activity()
    assert (a.busy_ticks, a.total_ticks, a.cpu_count) == (110, 200, 2)
    assert a.package_busy == {0: 0.9, 1: 0.2}
    assert a.busy_fraction_of(1) == 0.2
    assert a.busy_fraction_of(None) == 0.55
    assert s.memory_total_bytes == 16384000 * 1024


def test_real_proc_counts_this_process_cpu_time() -> None:
    s = ProcScanner(AppNamer())
    s.scan()
    x, started = 0, time.process_time()
    while time.process_time() - started < 0.3:
        x += 1
    me = by_pid(s.scan())[os.getpid()]
    assert me.cpu_ticks >= 20  # 0.3 s of CPU at 100 ticks/s, less rounding
    assert me.rss_bytes > 1_000_000
