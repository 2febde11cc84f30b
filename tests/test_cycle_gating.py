"""Reading only the processes of cgroups that ran gives what reading every process gives.

A ``World`` drives a fake ``/proc`` and a fake cgroup v2 tree the way the kernel
would: a process that runs moves its cgroup's usage counter (and its ancestors'),
one that starts or exits runs (so its group moves too), a reaping parent runs. Two
scanners read the same world on the same intervals: one reads every process every
scan (the reference), the other only the groups whose counter moved. Their
attribution must agree within float rounding, and both must conserve energy.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.apps import AppNamer
from agent.attribution import attribute
from agent.procfs import PAGE_SIZE, ProcScanner
from agent.records import ComponentReading, CpuActivity, IntervalResult, ProcessActivity
from tests.procfs_fixtures import FakeCgroups, FakeProc

USEC_PER_TICK = 10_000


@dataclass
class _P:
    comm: str
    group: str
    ppid: int
    starttime: int
    utime: int = 0
    cutime: int = 0
    rss_pages: int = 10
    children: list[int] = field(default_factory=list)


class World:
    """Processes in cgroups, changed only in the ways the kernel changes them."""

    def __init__(self, tmp: Path) -> None:
        self.proc = FakeProc(tmp / "proc")
        self.cg = FakeCgroups(tmp / "cgroup")
        self.tmp = tmp
        self.procs: dict[int, _P] = {}
        self.next_pid = 100
        self.clock = 1000
        self.busy = 0  # ticks run since the last take_busy()

    def _write(self, pid: int) -> None:
        p = self.procs[pid]
        self.proc.set_process(
            pid,
            p.comm,
            utime=p.utime,
            starttime=p.starttime,
            rss_pages=p.rss_pages,
            cgroup=f"0::{p.group}\n",
            ppid=p.ppid,
            cutime=p.cutime,
            cmdline=f"/usr/bin/{p.comm}",
        )

    def spawn(self, group: str, ppid: int = 1, pid: int | None = None) -> int:
        if pid is None:
            pid, self.next_pid = self.next_pid, self.next_pid + 1
        self.clock += 1
        self.procs[pid] = _P(f"p{pid}", group, ppid, self.clock)
        if ppid in self.procs:
            self.procs[ppid].children.append(pid)
        self.cg.add(group, pid)
        self._write(pid)
        self.cg.charge(group, 3)  # a new process runs (fork, exec)
        (self.proc.root / "loadavg").write_text(f"0.00 0.00 0.00 1/{len(self.procs)} {pid}\n")
        return pid

    def run(self, pid: int, ticks: int, rss_pages: int | None = None) -> None:
        p = self.procs[pid]
        p.utime += ticks
        self.busy += ticks
        if rss_pages is not None:
            p.rss_pages = rss_pages
        self._write(pid)
        self.cg.charge(p.group, ticks * USEC_PER_TICK + 1)

    def exit(
        self, pid: int, reap: bool = True, charge_reaper: bool = True, zombie: bool = False
    ) -> None:
        """The process exits; its parent (if known and alive) reaps it and runs.

        ``zombie``: it exited in an earlier interval (its group moved then) and is
        only reaped now, so its group does not move now.
        """
        p = self.procs.pop(pid)
        self.proc.remove_process(pid)
        self.cg.remove(p.group, pid)
        if not zombie:
            self.cg.charge(p.group, 2)  # the exit path runs in the process's group
        parent = self.procs.get(p.ppid)
        if reap and parent is not None:
            parent.cutime += p.utime + p.cutime
            self._write(p.ppid)
            if charge_reaper:
                self.cg.charge(parent.group, 1)  # wait4 ran in the parent's group

    def move(self, pid: int, group: str) -> None:
        """Move a process to another cgroup (the writer runs, not the process)."""
        p = self.procs[pid]
        self.cg.remove(p.group, pid)
        p.group = group
        self.cg.add(group, pid)
        self._write(pid)

    def take_busy(self) -> int:
        busy, self.busy = self.busy, 0
        return busy


def _scanners(world: World, trust_loadavg: bool = True) -> tuple[ProcScanner, ProcScanner]:
    root, sys_root = str(world.proc.root), str(world.tmp / "sys")
    full = ProcScanner(AppNamer(), root, sys_root, self_pid=1, full_scan_every=1)
    gated = ProcScanner(
        AppNamer(),
        root,
        sys_root,
        self_pid=1,
        cgroup_root=str(world.cg.root),
        full_scan_every=999,
        trust_loadavg=trust_loadavg,
    )
    return full, gated


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _attribute(processes: list[ProcessActivity], busy: int, step: int) -> IntervalResult:
    cpu = CpuActivity(busy_ticks=busy + 3, total_ticks=400, cpu_count=4)
    readings = [
        ComponentReading("cpu0", "cpu", "rapl", 120.0, static_joules=20.0),
        ComponentReading("dram0", "dram", "rapl", 30.0, static_joules=5.0),
    ]
    start = T0 + timedelta(seconds=step)
    return attribute("h", start, start + timedelta(seconds=1), readings, cpu, processes, 2**34)


def _conserved(r: IntervalResult) -> None:
    total = r.idle_joules + r.unattributed_joules + sum(p.joules for p in r.processes)
    assert math.isclose(total, r.total_joules, rel_tol=1e-12)


def _same_attribution(a: IntervalResult, b: IntervalResult) -> None:
    def procs(r: IntervalResult) -> dict[int, tuple[str, float, float, float]]:
        return {p.pid: (p.app, p.cpu_s, p.cpu_joules, p.dram_joules) for p in r.processes}

    def apps(r: IntervalResult) -> dict[str, tuple[float, ...]]:
        return {
            x.app: (x.cpu_joules, x.dram_joules, x.cpu_s, x.cpu_share, x.dram_share)
            for x in (*r.apps, r.idle, r.unattributed)
        }

    pa, pb = procs(a), procs(b)
    assert pa.keys() == pb.keys()
    for pid in pa:
        assert pa[pid][0] == pb[pid][0], pid
        assert pa[pid][1:] == pytest.approx(pb[pid][1:], rel=1e-9, abs=1e-12), pid
    aa, ab = apps(a), apps(b)
    assert aa.keys() == ab.keys()
    for app in aa:
        assert aa[app] == pytest.approx(ab[app], rel=1e-9, abs=1e-12), app


def _server(world: World, services: int, idle_each: int) -> dict[str, list[int]]:
    layout: dict[str, list[int]] = {}
    for s in range(services):
        group = f"/system.slice/svc{s}.service"
        main = world.spawn(group)
        layout[group] = [main] + [world.spawn(group, ppid=main) for _ in range(idle_each - 1)]
    return layout


@pytest.mark.parametrize("trust_loadavg", [True, False], ids=["newest-pid", "always-list"])
@pytest.mark.parametrize("seed", range(6))
def test_gated_scan_attributes_what_a_full_scan_attributes(
    tmp_path: Path, seed: int, trust_loadavg: bool
) -> None:
    rng = random.Random(seed)
    world = World(tmp_path)
    layout = _server(world, services=8, idle_each=6)
    groups = list(layout)
    full, gated = _scanners(world, trust_loadavg)
    assert full.scan() == [] and gated.scan() == []
    read_full = read_gated = 0
    for step in range(30):
        for _ in range(rng.randint(0, 3)):  # a few processes run
            pid = rng.choice(list(world.procs))
            world.run(pid, rng.randint(1, 40), rss_pages=rng.choice([None, rng.randint(5, 90)]))
        if rng.random() < 0.4:  # a short-lived child: spawned, ran, maybe reaped
            parent = rng.choice(list(world.procs))
            child = world.spawn(world.procs[parent].group, ppid=parent)
            world.run(child, rng.randint(1, 20))
            if rng.random() < 0.7:
                world.exit(child)
        if rng.random() < 0.3:  # a process exits (reaped by its parent, or by nobody we see)
            world.exit(rng.choice(list(world.procs)), reap=rng.random() < 0.7)
        if rng.random() < 0.2:  # a process moves to another group and runs there
            pid = rng.choice(list(world.procs))
            world.move(pid, rng.choice(groups))
            world.run(pid, rng.randint(1, 10))
        if rng.random() < 0.15:  # a pid is reused by a new process in another group
            pid = rng.choice(list(world.procs))
            world.exit(pid)
            world.spawn(rng.choice(groups), pid=pid)
        busy = world.take_busy()
        rows_full, rows_gated = full.scan(), gated.scan()
        read_full += full.last_read
        read_gated += gated.last_read
        a, b = _attribute(rows_full, busy, step), _attribute(rows_gated, busy, step)
        _conserved(a)
        _conserved(b)
        _same_attribution(a, b)
    assert read_gated < read_full / 2  # the point: most processes were not read


def test_a_scan_reads_only_the_groups_that_ran(tmp_path: Path) -> None:
    world = World(tmp_path)
    layout = _server(world, services=5, idle_each=20)
    _, gated = _scanners(world)
    gated.scan()  # the baseline: every process, named once
    gated.scan()  # groups first seen have no counter baseline yet: read once more
    assert gated.last_read == 100
    gated.scan()
    assert gated.last_read == 0  # nothing ran: nothing read
    busy = layout["/system.slice/svc2.service"][3]
    world.run(busy, 7)
    rows = {p.pid: p for p in gated.scan()}
    assert gated.last_read == 20  # the one group that ran
    assert rows[busy].cpu_ticks == 7 and rows[busy].app == "svc2"
    assert len(rows) == 100 and sum(p.cpu_ticks for p in rows.values()) == 7
    assert rows[layout["/system.slice/svc4.service"][0]].rss_bytes == 10 * PAGE_SIZE


def test_a_process_that_moves_cgroup_and_runs_is_charged_to_its_new_app(tmp_path: Path) -> None:
    world = World(tmp_path)
    layout = _server(world, services=3, idle_each=4)
    _, gated = _scanners(world)
    gated.scan()
    pid = layout["/system.slice/svc0.service"][2]
    world.move(pid, "/system.slice/svc1.service")
    world.run(pid, 12)
    row = {p.pid: p for p in gated.scan()}[pid]
    assert (row.app, row.cpu_ticks) == ("svc1", 12)
    world.run(pid, 3)  # read again next time through its new group
    assert {p.pid: p for p in gated.scan()}[pid].cpu_ticks == 3


def test_an_idle_move_is_noticed_by_the_next_full_scan(tmp_path: Path) -> None:
    world = World(tmp_path)
    layout = _server(world, services=2, idle_each=3)
    root, sys_root = str(world.proc.root), str(world.tmp / "sys")
    gated = ProcScanner(
        AppNamer(), root, sys_root, self_pid=1, cgroup_root=str(world.cg.root), full_scan_every=3
    )
    gated.scan()
    pid = layout["/system.slice/svc0.service"][1]
    world.move(pid, "/system.slice/new.service")  # a group no process was named in
    apps = [{p.pid: p for p in gated.scan()}[pid].app for _ in range(3)]
    assert apps[0] == "svc0" and apps[-1] == "new"  # the third scan read everything


def test_a_vanished_process_is_forgotten_and_its_reaped_ticks_count_once(tmp_path: Path) -> None:
    world = World(tmp_path)
    layout = _server(world, services=2, idle_each=3)
    full, gated = _scanners(world)
    full.scan(), gated.scan()
    parent = layout["/system.slice/svc0.service"][0]
    child = world.spawn("/system.slice/svc1.service", ppid=parent)
    world.run(child, 25)
    a, b = {p.pid: p for p in full.scan()}, {p.pid: p for p in gated.scan()}
    assert a[child].cpu_ticks == b[child].cpu_ticks == 25
    world.run(child, 5)  # 5 more ticks no scan sees, then it exits
    # the parent reaps it, but after the gated scan read its group's counter: the parent's
    # group does not move before this scan, so its grown cutime is read only next time
    world.exit(child, charge_reaper=False)
    a, b = {p.pid: p for p in full.scan()}, {p.pid: p for p in gated.scan()}
    assert child not in a and child not in b
    assert a[parent].cpu_ticks == 5 and b[parent].cpu_ticks == 0
    world.run(parent, 2)
    a, b = {p.pid: p for p in full.scan()}, {p.pid: p for p in gated.scan()}
    assert a[parent].cpu_ticks == 2 and b[parent].cpu_ticks == 2 + 5  # deferred, not lost
    assert b[parent].reaped_ticks == 5


def test_a_pid_reused_in_a_group_that_did_not_run_is_a_new_process(tmp_path: Path) -> None:
    world = World(tmp_path)
    layout = _server(world, services=2, idle_each=3)
    _, gated = _scanners(world)
    gated.scan()
    old = layout["/system.slice/svc0.service"][2]
    world.exit(old)
    world.spawn("/system.slice/svc1.service", pid=old)
    world.run(old, 4)
    row = {p.pid: p for p in gated.scan()}[old]
    assert (row.app, row.cpu_ticks, row.name) == ("svc1", 4, f"p{old}")


def test_without_a_cgroup_tree_every_process_is_read(tmp_path: Path) -> None:
    world = World(tmp_path)
    _server(world, services=2, idle_each=3)
    root, sys_root = str(world.proc.root), str(world.tmp / "sys")
    s = ProcScanner(AppNamer(), root, sys_root, self_pid=1, cgroup_root=str(tmp_path / "none"))
    s.scan()
    s.scan()
    assert s.last_read == 6


def test_a_zombie_reaped_with_no_fork_since_is_seen_gone_through_its_reaper(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    layout = _server(world, services=2, idle_each=3)
    parent = layout["/system.slice/svc0.service"][0]
    child = world.spawn("/system.slice/svc1.service", ppid=parent)
    full, gated = _scanners(world, trust_loadavg=True)
    full.scan(), gated.scan()
    world.run(child, 9)
    a, b = {p.pid: p for p in full.scan()}, {p.pid: p for p in gated.scan()}
    assert a[child].cpu_ticks == b[child].cpu_ticks == 9
    world.exit(child, zombie=True)  # no fork since: the newest pid is unchanged
    a, b = {p.pid: p for p in full.scan()}, {p.pid: p for p in gated.scan()}
    assert child not in a and child not in b
    assert a[parent].cpu_ticks == b[parent].cpu_ticks == 0  # its 9 ticks counted once
