"""One cheap pass over ``/proc`` per cycle: CPU ticks and RSS of every process.

Per process and cycle the scanner reads one file, ``/proc/PID/stat``. The command
line, cgroup and owner are read once, when a process is first seen, and its app
is named then. Identity is ``(pid, starttime)``, so a reused pid is a new process.
Processes that vanish between the directory listing and the read are normal.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

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
    name: str
    app: str
    ticks: int  # utime + stime at the last scan
    child_ticks: int = 0  # cutime + cstime: reaped children's CPU, at the last scan
    ppid: int = 0


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
        self, namer: AppNamer, root: str = "/proc", sys_root: str = "/sys", self_pid: int = 0
    ) -> None:
        self._namer = namer
        self._root = root
        self._known: dict[tuple[int, int], _Known] = {}
        self._primed = False
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
            return CpuActivity(0, 0, self.cpu_count)
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
        )

    # -- processes ---------------------------------------------------------------

    def scan(self) -> list[ProcessActivity]:
        """Every live process with the ticks it used since the previous scan.

        The first scan only records a baseline and returns nothing. A process first
        seen after that started since the previous scan, so all its ticks count.

        A child that lived and died between two scans is in no scan, but the kernel
        adds its CPU time to its parent's ``cutime``/``cstime`` when the parent reaps
        it: the parent is charged that increase, less what its vanished children were
        already charged while they were seen (so nothing counts twice). Orphans reaped
        by init (pid 1) or kthreadd stay unattributed: init did not cause them.
        """
        root = self._root
        known = self._known
        seen: dict[tuple[int, int], _Known] = {}
        rows: list[tuple[int, int, _Known, int, int, int]] = []
        updates: list[tuple[_Known, int, int, int]] = []
        primed = self._primed
        for entry in os.listdir(root):
            if not entry.isdigit():
                continue
            try:
                raw = _read_small(f"{root}/{entry}/stat")
            except OSError:
                continue  # vanished between listdir and read
            close = raw.rfind(b")")
            fields = raw[close + 2 :].split()
            if len(fields) < 22:
                continue
            pid = int(entry)
            starttime = int(fields[19])
            ticks = int(fields[11]) + int(fields[12])
            child_ticks = int(fields[13]) + int(fields[14])
            key = (pid, starttime)
            info = known.get(key)
            if info is None:
                comm = raw[raw.find(b"(") + 1 : close].decode("utf-8", "replace")
                info = self._new_process(pid, comm, int(fields[1]))
                if info is None:
                    continue
                delta = ticks if primed else 0
                child_delta = child_ticks if primed else 0
            else:
                delta = ticks - info.ticks
                child_delta = child_ticks - info.child_ticks
            updates.append((info, ticks, child_ticks, int(fields[1])))
            seen[key] = info
            if primed:
                rows.append((pid, starttime, info, delta, child_delta, int(fields[21])))
        # Only a scan that finished moves the baselines: one that failed part-way (out of
        # file descriptors) leaves them, so the next scan charges the whole window.
        for info, ticks, child_ticks, ppid in updates:
            info.ticks, info.child_ticks, info.ppid = ticks, child_ticks, ppid
        self._known = seen
        if not primed:
            self._primed = True
            return []
        charged = _charged_to_live_ancestors(known, seen)
        out: list[ProcessActivity] = []
        for pid, starttime, info, delta, child_delta, rss_pages in rows:
            reaped = max(0, child_delta - charged.get(pid, 0)) if pid > 2 else 0
            out.append(
                ProcessActivity(
                    pid,
                    starttime,
                    info.name,
                    info.app,
                    max(0, delta) + reaped,
                    rss_pages * PAGE_SIZE,
                    reaped_ticks=reaped,
                )
            )
        return out

    def _new_process(self, pid: int, comm: str, ppid: int) -> _Known | None:
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
        return _Known(comm, self._namer.name(facts), 0)


def _charged_to_live_ancestors(
    known: dict[tuple[int, int], _Known], seen: dict[tuple[int, int], _Known]
) -> dict[int, int]:
    """Ticks already charged to vanished processes, keyed by their nearest live ancestor.

    When a process exits, its parent's ``cutime`` grows by its whole CPU time and that
    of every descendant it reaped, so what the vanished were charged while seen must
    come off the ancestor that now shows it: through any depth of vanished processes
    (a child and grandchild that exit in the same interval both land on the live
    grandparent). An ancestor that reused a vanished pid is not the same process.
    """
    vanished = [key for key in known if key not in seen]
    if not vanished:
        return {}  # the usual cycle: nothing to walk
    previous = {key[0]: key for key in known}
    charged: dict[int, int] = {}
    for key in vanished:
        gone = known[key]
        ancestor = gone.ppid
        for _ in range(64):  # a pid cycle cannot occur, but never loop on bad input
            old_key = previous.get(ancestor)
            if old_key is None or old_key in seen:
                break  # live (or never seen): it reaped the vanished subtree
            ancestor = known[old_key].ppid
        charged[ancestor] = charged.get(ancestor, 0) + gone.ticks + gone.child_ticks
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
