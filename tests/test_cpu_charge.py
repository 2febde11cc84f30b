"""CPU charged once: chains of vanished processes and the clamp against busy ticks."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.apps import AppNamer
from agent.cpu_charge import charge_once
from agent.procfs import ProcScanner
from agent.records import ProcessActivity
from tests.procfs_fixtures import FakeProc


def _scanner(fake: FakeProc, root: Path) -> ProcScanner:
    return ProcScanner(AppNamer(), str(fake.root), str(root / "sys"), self_pid=1)


@settings(max_examples=60, deadline=None)
@given(
    depth=st.integers(1, 3),
    before=st.lists(st.integers(0, 500), min_size=4, max_size=4),
    reaped_before=st.lists(st.integers(0, 500), min_size=4, max_size=4),
    during=st.lists(st.integers(0, 500), min_size=4, max_size=4),
    bystander=st.integers(0, 500),
)
def test_a_chain_that_exits_together_is_charged_once_to_the_live_ancestor(
    depth: int,
    before: list[int],
    reaped_before: list[int],
    during: list[int],
    bystander: int,
) -> None:
    """Root → child → grandchild…: the descendants exit in one interval, reaped up the chain.

    The kernel adds each exiting process's utime + cutime to its parent's cutime. The
    live root must be charged its own new ticks plus exactly the descendants' new ticks
    (what no scan saw), never what they were charged while seen; a bystander keeps its own.
    """
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fake = FakeProc(root / "proc")
        pids = [100 + i for i in range(depth + 1)]  # pids[0] is the live root
        utime = {pid: before[i] for i, pid in enumerate(pids)}
        cutime = {pid: reaped_before[i] for i, pid in enumerate(pids)}
        for i, pid in enumerate(pids):
            ppid = pids[i - 1] if i else 1
            fake.set_process(pid, f"p{i}", utime[pid], ppid=ppid, cutime=cutime[pid])
        fake.set_process(50, "bystander", 1000)
        s = _scanner(fake, root)
        s.scan()
        for i, pid in enumerate(pids):
            utime[pid] += during[i]
        for i in range(depth, 0, -1):  # the deepest exits first, reaped by its parent
            pid, parent = pids[i], pids[i - 1]
            cutime[parent] += utime[pid] + cutime[pid]
            fake.remove_process(pid)
        fake.set_process(pids[0], "p0", utime[pids[0]], ppid=1, cutime=cutime[pids[0]])
        fake.set_process(50, "bystander", 1000 + bystander)
        rows = {p.pid: p for p in s.scan()}
        assert rows[pids[0]].cpu_ticks == sum(during[: depth + 1])
        assert rows[pids[0]].reaped_ticks == sum(during[1 : depth + 1])
        assert rows[50].cpu_ticks == bystander
        assert set(rows) == {pids[0], 50}


def test_an_ancestor_that_reused_a_pid_is_skipped(tmp_path: Path) -> None:
    fake = FakeProc(tmp_path / "proc")
    fake.set_process(10, "shell", 5)
    fake.set_process(11, "parent", 5, ppid=10, starttime=200)
    fake.set_process(12, "child", 30, ppid=11, starttime=300)
    s = _scanner(fake, tmp_path)
    s.scan()
    # The child exits (reaped by 11), 11 exits (reaped by 10), and pid 11 is reused.
    fake.remove_process(12)
    fake.remove_process(11)
    fake.set_process(11, "reused", 0, ppid=10, starttime=900)
    fake.set_process(10, "shell", 5, cutime=5 + 30 + 4)  # 4 new ticks of the child
    rows = {p.pid: p for p in s.scan()}
    assert rows[10].cpu_ticks == 4
    assert rows[11].cpu_ticks == 0


def _proc(pid: int, ticks: int, reaped: int = 0) -> ProcessActivity:
    return ProcessActivity(pid, 1, f"p{pid}", "app", ticks, 0, reaped_ticks=reaped)


def test_reaped_ticks_beyond_busy_are_clamped_and_bystanders_keep_theirs() -> None:
    rows = [_proc(1, 150, reaped=120), _proc(2, 100), _proc(3, 50)]
    checked = charge_once(rows, busy_ticks=200, capacity_ticks=400, tolerance_ticks=2)
    got = {p.pid: p for p in checked.processes}
    assert checked.clamped_ticks == 100
    assert (got[1].cpu_ticks, got[1].reaped_ticks) == (50, 20)
    assert got[2].cpu_ticks == 100 and got[3].cpu_ticks == 50  # exactly their own
    assert sum(p.cpu_ticks for p in checked.processes) == 200


def test_excess_within_rounding_is_left_alone() -> None:
    rows = [_proc(1, 101, reaped=50), _proc(2, 100)]
    checked = charge_once(rows, busy_ticks=200, capacity_ticks=400, tolerance_ticks=2)
    assert checked.clamped_ticks == 0
    assert checked.processes == tuple(rows)


def test_no_process_is_charged_more_than_the_interval_capacity() -> None:
    rows = [_proc(1, 900, reaped=700), _proc(2, 50)]
    checked = charge_once(rows, busy_ticks=2000, capacity_ticks=400)
    got = {p.pid: p for p in checked.processes}
    assert got[1].cpu_ticks == 400 and got[1].reaped_ticks == 200
    assert checked.clamped_ticks == 500
    assert got[2].cpu_ticks == 50


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 1000), st.integers(0, 1000)), min_size=1, max_size=12
    ),
    busy=st.integers(0, 5000),
    tolerance=st.integers(0, 4),
)
def test_clamp_properties(rows: list[tuple[int, int]], busy: int, tolerance: int) -> None:
    """Own ticks are never cut; Σ ≤ busy + tolerance unless own ticks alone exceed it."""
    procs = [_proc(i, own + reaped, reaped) for i, (own, reaped) in enumerate(rows)]
    checked = charge_once(procs, busy, capacity_ticks=0, tolerance_ticks=tolerance)
    for before, after in zip(procs, checked.processes, strict=True):
        own = before.cpu_ticks - before.reaped_ticks
        assert after.cpu_ticks - after.reaped_ticks == own
        assert 0 <= after.reaped_ticks <= before.reaped_ticks
    total_before = sum(p.cpu_ticks for p in procs)
    total_after = sum(p.cpu_ticks for p in checked.processes)
    own_total = sum(own for own, _ in rows)
    expected = max(busy, own_total) if total_before - busy > tolerance else total_before
    assert total_after == expected
    assert sum(p.cpu_ticks for p in procs) - total_after == checked.clamped_ticks
