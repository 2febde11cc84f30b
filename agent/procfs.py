"""One cheap pass over ``/proc`` per cycle: CPU ticks and RSS of every process.

Per process and cycle the scanner reads one file, ``/proc/PID/stat``. The command
line, cgroup and owner are read once, when a process is first seen, and its app
is named then. Identity is ``(pid, starttime)``, so a reused pid is a new process.
Processes that vanish between the directory listing and the read are normal.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from agent import cgroup_cpu
from agent.apps import AppNamer, ProcessFacts, parse_cgroup_file
from agent.records import CpuActivity, ProcessActivity

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CLK_TCK = os.sysconf("SC_CLK_TCK")

# /proc/stat columns after "cpuN": user nice system idle iowait irq softirq steal guest guest_nice
_BUSY_COLUMNS = (0, 1, 2, 5, 6)  # guest time is already inside user
_IDLE_COLUMNS = (3, 4, 7)  # idle, iowait, steal (time the hypervisor took)
_STAT_CHUNK = 65_536  # /proc/stat's cpu lines: ~150 bytes per CPU


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """Cumulative ``/proc/stat`` ticks: the machine's and each CPU's (busy, total)."""

    busy: int
    total: int
    per_cpu: dict[int, tuple[int, int]]


@dataclass(slots=True)
class _Known:
    """What the scanner keeps about one live process between scans."""

    pid: int
    name: str
    app: str
    starttime: int
    group: str | None  # its cgroup in the gate's hierarchy; None: read every scan
    cgroup_text: str  # /proc/PID/cgroup as last read (a change is a move)
    ticks: int = 0  # utime + stime at the last read
    child_ticks: int = 0  # cutime + cstime: reaped children's CPU, at the last read
    ppid: int = 0
    rss_pages: int = 0
    precharged: int = 0  # vanished descendants' ticks its cutime shows at its next read
    row: ProcessActivity | None = None  # what it reported in the last scan


@dataclass(slots=True)
class _Read:
    """One ``/proc/PID/stat`` read in this scan, applied once the scan has finished."""

    info: _Known  # a new record for a process first seen (or one whose cgroup changed)
    ticks: int
    child_ticks: int
    delta: int  # ticks since the last read (all of them for a process first seen)
    child_delta: int
    ppid: int
    rss_pages: int


def _busy_total(columns: list[str]) -> tuple[int, int]:
    values = [int(v) for v in columns[:8]] + [0] * (8 - min(8, len(columns)))
    busy = sum(values[i] for i in _BUSY_COLUMNS)
    return busy, busy + sum(values[i] for i in _IDLE_COLUMNS)


def _pread_cpu_lines(fd: int) -> list[str]:
    """The ``cpu`` lines at the head of ``/proc/stat``, read from offset 0 of ``fd``."""
    data = b""
    while True:
        chunk = os.pread(fd, _STAT_CHUNK, len(data))
        data += chunk
        lines = data.split(b"\n")
        complete = lines if not chunk else lines[:-1]
        if not chunk or any(not line.startswith(b"cpu") for line in complete):
            break
    cpu_lines: list[str] = []
    for line in complete:
        if not line.startswith(b"cpu"):
            break
        cpu_lines.append(line.decode("ascii"))
    return cpu_lines


class DescriptorsExhausted(RuntimeError):
    """No file descriptor left to open a ``/proc`` file (EMFILE/ENFILE).

    Not an ``OSError``: the scan must fail, not take every process for vanished
    (which would forget them and charge their whole lifetime at the next scan).
    """


def _read_small(path: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            raise DescriptorsExhausted(f"cannot open {path}: {exc.strerror}") from exc
        raise
    try:
        return os.read(fd, 8192)
    finally:
        os.close(fd)


class ProcScanner:
    """Scans ``/proc`` and turns two snapshots into per-process activity."""

    _stat_fd: int | None = None  # /proc/stat, kept open (see read_cpu_times)

    def __init__(
        self,
        namer: AppNamer,
        root: str = "/proc",
        sys_root: str = "/sys",
        self_pid: int = 0,
        cgroup_root: str | None = None,
        full_scan_every: int = 60,
        trust_loadavg: bool | None = None,
    ) -> None:
        """``cgroup_root`` (e.g. ``/sys/fs/cgroup``) turns on reading only the processes
        of cgroups that ran; ``full_scan_every`` scans, every process is read anyway.
        ``trust_loadavg``: whether ``root``'s ``loadavg`` names the newest pid of its
        processes (default: when ``root`` is this process's own ``/proc``)."""
        self._namer = namer
        self._root = root
        self._known: dict[int, _Known] = {}  # by pid; the record holds its starttime
        self._primed = False
        self._gate = cgroup_cpu.detect(cgroup_root) if cgroup_root else None
        self.full_scan_every = max(1, full_scan_every)
        self._since_full = 0
        self._listing: set[str] = set()  # the last scan's /proc entries
        self._members: dict[str, set[str]] = {}  # cgroup → pids named in it (as in /proc)
        self._usage: dict[str, int | None] = {}  # cgroup → usage when last looked at
        self._ungated: set[str] = set()  # pids in no readable cgroup: read every scan
        self._busy: list[_Known] = []  # processes that reported ticks in the last scan
        self.last_read = 0  # /proc/PID/stat files the last scan read
        # /proc/loadavg's newest pid is that of the reader's pid namespace: only trusted
        # for the /proc this process itself sees.
        self._own_proc = (
            os.path.realpath(root) == "/proc" if trust_loadavg is None else trust_loadavg
        )
        self._last_pid: int | None = None
        self._cpu_prev: CpuTimes | None = None
        self.packages = _cpu_packages(sys_root)
        self.memory_total_bytes = _memory_total(root)
        self.cpu_count = os.cpu_count() or 1
        self.self_pid = self_pid or os.getpid()

    def set_namer(self, namer: AppNamer) -> None:
        """Name processes first seen from now on with ``namer`` (a reload)."""
        self._namer = namer

    # -- CPU ---------------------------------------------------------------------

    def read_cpu_times(self) -> CpuTimes:
        """Read the cumulative tick counters from ``/proc/stat``.

        The file stays open and is re-read from offset 0 with ``os.pread``, so this
        needs no new file descriptor: sampling goes on when the limit is exhausted.
        """
        busy = total = 0
        per_cpu: dict[int, tuple[int, int]] = {}
        for line in self._cpu_lines():
            label, *columns = line.split()
            if label == "cpu":
                busy, total = _busy_total(columns)
            else:
                per_cpu[int(label[3:])] = _busy_total(columns)
        self.cpu_count = max(1, len(per_cpu))
        return CpuTimes(busy, total, per_cpu)

    def _cpu_lines(self) -> list[str]:
        """The leading ``cpu`` lines of ``/proc/stat``, read through the kept descriptor."""
        fd = self._stat_fd
        if fd is None:
            fd = self._stat_fd = os.open(f"{self._root}/stat", os.O_RDONLY | os.O_CLOEXEC)
        try:
            return _pread_cpu_lines(fd)
        except OSError:
            self.close()  # reopened by the next read
            raise

    def close(self) -> None:
        """Close the descriptor kept on ``/proc/stat`` (reopened if read again)."""
        fd, self._stat_fd = self._stat_fd, None
        if fd is not None:
            os.close(fd)

    def cpu_activity(self) -> CpuActivity:
        """CPU activity since the previous call (zero on the first call)."""
        now = self.read_cpu_times()
        prev, self._cpu_prev = self._cpu_prev, now
        if prev is None:
            return CpuActivity(0, 0, self.cpu_count, ticks_per_s=CLK_TCK)
        package_ticks: dict[int, list[int]] = {}
        for cpu, (busy, total) in now.per_cpu.items():
            before = prev.per_cpu.get(cpu, (busy, total))
            pkg = package_ticks.setdefault(self.packages.get(cpu, 0), [0, 0])
            pkg[0] += busy - before[0]
            pkg[1] += total - before[1]
        shares = {p: (b / t if t > 0 else 0.0) for p, (b, t) in package_ticks.items()}
        return CpuActivity(
            busy_ticks=max(0, now.busy - prev.busy),
            total_ticks=max(0, now.total - prev.total),
            cpu_count=self.cpu_count,
            package_busy=shares,
            ticks_per_s=CLK_TCK,
        )

    # -- processes ---------------------------------------------------------------

    def scan(self) -> list[ProcessActivity]:
        """Every live process with the ticks it used since the previous scan.

        The first scan only records a baseline and returns nothing. A process first
        seen after that started since the previous scan, so all its ticks count.

        Which ``/proc/PID/stat`` files are read (see ``agent.cgroup_cpu``): with a
        cgroup hierarchy, those of processes first seen, of cgroups whose CPU usage
        moved, and of processes outside any readable group; every ``full_scan_every``
        scans, all of them (which also refreshes the RSS of processes that did not
        run and re-reads every cgroup, so a move is noticed). A process not read did
        not run: it reports zero ticks and its last RSS. Skipping a read defers
        ticks, never loses them: the baseline stays where it was last read.

        A child that lived and died between two scans is in no scan, but the kernel
        adds its CPU time to its parent's ``cutime``/``cstime`` when the parent reaps
        it: the parent is charged that increase, less what its vanished children were
        already charged while they were seen (so nothing counts twice). Orphans reaped
        by init (pid 1) or kthreadd stay unattributed: init did not cause them.
        """
        primed = self._primed
        reconcile = primed and self._since_full + 1 >= self.full_scan_every
        last_pid = self._read_last_pid()  # first: a fork after it changes it for next time
        usage = self._read_usage()  # before the listing and the reads: see the docstring
        full = not primed or reconcile or self._gate is None
        # No fork since the last scan (the newest pid is the same): no new process, and
        # the listing is only needed to see who was reaped, which a read shows (below).
        reuse = not full and last_pid is not None and last_pid == self._last_pid
        entries = [] if reuse else os.listdir(self._root)  # ascending pids
        listing = self._listing if reuse else set(entries)
        # Read in pid order, as /proc lists them: the scan takes a while, and the
        # recent processes (this one among them) are then read close to /proc/stat,
        # whose delta caps each process's ticks (agent.cpu_charge). Set order is random
        # per run and lost a short interval's ticks to that cap now and then.
        targets: Collection[str]
        if full:
            targets = [e for e in entries if e.isdigit()]
            found_in: dict[int, str] = {}
        else:
            gated, found_in = self._gated_targets(listing, usage)
            targets = sorted(gated, key=int)
        reads, failed = self._read_stats(targets, reconcile, found_in)
        if reuse and any(r.child_delta > 0 for r in reads):
            # Someone reaped a child: list /proc now to see which processes are gone. Keep
            # as seen only what the last listing had, so a pid forked since stays new.
            listing = self._listing & set(os.listdir(self._root))
        # Only a scan that finished moves the baselines: one that failed part-way (out of
        # file descriptors) raised above and left them, so the next scan charges the window.
        vanished = self._vanished(listing, reads, failed, full)
        charged = _charged_to_live_ancestors(self._known, vanished)
        self._apply(reads, vanished, usage, listing)
        self._last_pid = last_pid
        self.last_read = len(reads)
        self._since_full = 0 if reconcile or not primed else self._since_full + 1
        if not primed:
            self._primed = True
            for r in reads:
                r.info.row = self._row(r.info, 0, 0)
            return []
        for pid, ticks in charged.items():
            live = self._known.get(pid)
            if live is not None:
                live.precharged += ticks
        return self._rows(reads)

    def _read_last_pid(self) -> int | None:
        """The newest pid (``/proc/loadavg``), where ``/proc`` is this agent's own."""
        if not self._own_proc:
            return None
        try:
            return int(_read_small(f"{self._root}/loadavg").rsplit(None, 1)[-1])
        except (OSError, ValueError, IndexError):
            return None

    def _read_usage(self) -> dict[str, int | None]:
        """Each tracked cgroup's CPU usage counter now (None: unreadable)."""
        gate = self._gate
        if gate is None:
            return {}
        return {group: cgroup_cpu.read_usage(gate, group) for group in self._members}

    def _gated_targets(
        self, listing: set[str], usage: dict[str, int | None]
    ) -> tuple[set[str], dict[int, str]]:
        """The pids to read when the cgroup counters say who ran, and who is in which group.

        New entries of the listing, processes outside any readable group, and the
        members of every group whose counter moved (as known, and as its
        ``cgroup.procs`` says now: a process that moved in is read and renamed).
        Pids are ``/proc``'s names for them, so the set work stays in C.
        """
        assert self._gate is not None
        pids = {e for e in listing.difference(self._listing) if e.isdigit()}
        pids |= self._ungated
        found_in: dict[int, str] = {}
        for group, now in usage.items():
            if now is not None and now == self._usage.get(group):
                continue
            named = self._members[group]
            pids |= named
            members = cgroup_cpu.read_members(self._gate, group)
            if members:
                pids |= members
                for entry in members.difference(named):
                    if entry.isdigit():
                        found_in[int(entry)] = group
        pids &= listing
        return pids, found_in

    def _read_stats(
        self, targets: Collection[str], reconcile: bool, found_in: dict[int, str]
    ) -> tuple[list[_Read], list[int]]:
        """Read and parse each target's ``/proc/PID/stat``; also the pids that vanished."""
        root = self._root
        known = self._known
        primed = self._primed
        reads: list[_Read] = []
        failed: list[int] = []
        for entry in targets:
            pid = int(entry)
            try:
                raw = _read_small(f"{root}/{entry}/stat")
            except OSError:
                failed.append(pid)  # vanished between the listing and the read
                continue
            close = raw.rfind(b")")
            fields = raw[close + 2 :].split()
            if len(fields) < 22:
                failed.append(pid)
                continue
            starttime = int(fields[19])
            ticks = int(fields[11]) + int(fields[12])
            child_ticks = int(fields[13]) + int(fields[14])
            ppid = int(fields[1])
            info = known.get(pid)
            if info is None or info.starttime != starttime:
                comm = raw[raw.find(b"(") + 1 : close].decode("utf-8", "replace")
                info = self._new_process(pid, comm, ppid, starttime)
                if info is None:
                    failed.append(pid)
                    continue
                delta, child_delta = (ticks, child_ticks) if primed else (0, 0)
            else:
                delta, child_delta = ticks - info.ticks, child_ticks - info.child_ticks
                if reconcile or (pid in found_in and found_in[pid] != info.group):
                    info = self._recheck_cgroup(info)
            reads.append(_Read(info, ticks, child_ticks, delta, child_delta, ppid, int(fields[21])))
        return reads, failed

    def _vanished(
        self, listing: set[str], reads: list[_Read], failed: list[int], full: bool
    ) -> list[_Known]:
        """Known processes gone since the last scan (exited, or their pid reused)."""
        known = self._known
        if full:  # every pid was read: whoever was not read as itself is gone
            alive = {(r.info.pid, r.info.starttime) for r in reads}
            return [info for info in known.values() if (info.pid, info.starttime) not in alive]
        gone = [known[int(e)] for e in self._listing.difference(listing) if int(e) in known]
        gone += [known[pid] for pid in failed if pid in known]
        gone += [
            old
            for r in reads
            if (old := known.get(r.info.pid)) is not None and old.starttime != r.info.starttime
        ]
        return list({id(info): info for info in gone}.values())  # each once

    def _apply(
        self,
        reads: list[_Read],
        vanished: list[_Known],
        usage: dict[str, int | None],
        listing: set[str],
    ) -> None:
        """Move the baselines: forget the vanished, record what was read."""
        known = self._known
        for info in vanished:
            if known.get(info.pid) is info:
                del known[info.pid]
            self._untrack(info)
        for r in reads:
            info = r.info
            old = known.get(info.pid)
            if old is not info:
                if old is not None:
                    self._untrack(old)
                known[info.pid] = info
                self._track(info)
            info.ticks, info.child_ticks, info.ppid = r.ticks, r.child_ticks, r.ppid
            info.rss_pages = r.rss_pages
        for group in usage:
            if group in self._members:
                self._usage[group] = usage[group]
            else:
                self._usage.pop(group, None)
        self._listing = listing
        for info in vanished:
            if info.pid not in known:
                listing.discard(str(info.pid))  # a reuse of its pid is then a new entry

    def _track(self, info: _Known) -> None:
        if info.group is None:
            self._ungated.add(str(info.pid))
        else:
            self._members.setdefault(info.group, set()).add(str(info.pid))

    def _untrack(self, info: _Known) -> None:
        if info.group is None:
            self._ungated.discard(str(info.pid))
            return
        members = self._members.get(info.group)
        if members is not None:
            members.discard(str(info.pid))
            if not members:
                del self._members[info.group]

    def _rows(self, reads: list[_Read]) -> list[ProcessActivity]:
        """This scan's rows: fresh for the processes read, the idle row for the others."""
        for info in self._busy:
            if info.row is not None and info.row.cpu_ticks:
                info.row = self._row(info, 0, 0)
        busy: list[_Known] = []
        for r in reads:
            info = r.info
            pid = info.pid
            reaped = max(0, r.child_delta - info.precharged) if pid > 2 else 0
            info.precharged = 0
            ticks = max(0, r.delta) + reaped
            row = info.row
            if (
                ticks
                or row is None
                or row.cpu_ticks
                or row.rss_bytes != info.rss_pages * PAGE_SIZE
            ):
                info.row = self._row(info, ticks, reaped)
            if ticks:
                busy.append(info)
        self._busy = busy
        return [info.row for info in self._known.values() if info.row is not None]

    @staticmethod
    def _row(info: _Known, ticks: int, reaped: int) -> ProcessActivity:
        return ProcessActivity(
            info.pid,
            info.starttime,
            info.name,
            info.app,
            ticks,
            info.rss_pages * PAGE_SIZE,
            reaped_ticks=reaped,
            ticks_per_s=CLK_TCK,
        )

    def _new_process(self, pid: int, comm: str, ppid: int, starttime: int) -> _Known | None:
        """Name a process first seen (its command line, cgroup and owner are read once)."""
        base = f"{self._root}/{pid}"
        try:
            cmdline = _read_small(f"{base}/cmdline").rstrip(b"\0").replace(b"\0", b" ")
            cgroup = _read_small(f"{base}/cgroup").decode("utf-8", "replace")
            uid = os.stat(base).st_uid
        except OSError:
            return None  # vanished while we looked
        kernel = not cmdline and (ppid == 2 or pid == 2)
        facts = ProcessFacts(
            pid=pid,
            comm=comm,
            cmdline=cmdline.decode("utf-8", "replace"),
            cgroup=parse_cgroup_file(cgroup),
            uid=uid,
            kernel_thread=kernel,
            ppid=ppid,
        )
        group = cgroup_cpu.group_of(cgroup, self._gate) if self._gate is not None else None
        return _Known(pid, comm, self._namer.name(facts), starttime, group, cgroup)

    def _recheck_cgroup(self, info: _Known) -> _Known:
        """The same process, renamed if its cgroup changed since it was named."""
        try:
            text = _read_small(f"{self._root}/{info.pid}/cgroup").decode("utf-8", "replace")
        except OSError:
            return info  # vanishing: the next scan forgets it
        if text == info.cgroup_text:
            return info
        renamed = self._new_process(info.pid, info.name, info.ppid, info.starttime)
        if renamed is None:
            return info
        renamed.ticks, renamed.child_ticks = info.ticks, info.child_ticks
        renamed.precharged, renamed.rss_pages = info.precharged, info.rss_pages
        return renamed


def _charged_to_live_ancestors(known: dict[int, _Known], vanished: list[_Known]) -> dict[int, int]:
    """Ticks already charged to vanished processes, keyed by their nearest live ancestor.

    When a process exits, its parent's ``cutime`` grows by its whole CPU time and that
    of every descendant it reaped, so what the vanished were charged while seen must
    come off the ancestor that now shows it: through any depth of vanished processes
    (a child and grandchild that exit in the same interval both land on the live
    grandparent). An ancestor that reused a vanished pid is not the same process.
    """
    if not vanished:
        return {}  # the usual cycle: nothing to walk
    gone = {id(info) for info in vanished}
    charged: dict[int, int] = {}
    for info in vanished:
        ancestor = info.ppid
        for _ in range(64):  # a pid cycle cannot occur, but never loop on bad input
            old = known.get(ancestor)
            if old is None or id(old) not in gone:
                break  # live (or never seen): it reaped the vanished subtree
            ancestor = old.ppid
        charged[ancestor] = charged.get(ancestor, 0) + info.ticks + info.child_ticks
    return charged


def _cpu_packages(sys_root: str) -> dict[int, int]:
    """Map each CPU index to its physical package (socket), from sysfs topology."""
    mapping: dict[int, int] = {}
    base = Path(sys_root, "devices/system/cpu")
    try:
        entries = list(base.iterdir())
    except OSError:
        return mapping
    for entry in entries:
        name = entry.name
        if not (name.startswith("cpu") and name[3:].isdigit()):
            continue
        try:
            package = int((entry / "topology/physical_package_id").read_text().strip())
        except (OSError, ValueError):
            continue
        mapping[int(name[3:])] = max(0, package)
    return mapping


def _memory_total(proc_root: str) -> int:
    try:
        with open(f"{proc_root}/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0
