"""Build small fake /proc and /sys trees for the scanner's tests."""

from __future__ import annotations

from pathlib import Path


class FakeProc:
    """A writable fake ``/proc``: ``set_process`` and ``set_cpu`` change it between scans."""

    def __init__(self, root: Path, cpus: int = 2) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / "meminfo").write_text("MemTotal:       16384000 kB\nMemFree: 1 kB\n")
        self._cpu = {i: [0] * 10 for i in range(cpus)}
        self._write_stat()

    def set_cpu(self, cpu: int, user: int, system: int, idle: int) -> None:
        self._cpu[cpu][0], self._cpu[cpu][2], self._cpu[cpu][3] = user, system, idle
        self._write_stat()

    def _write_stat(self) -> None:
        total = [sum(v[i] for v in self._cpu.values()) for i in range(10)]
        lines = ["cpu  " + " ".join(map(str, total))]
        lines += [f"cpu{i} " + " ".join(map(str, v)) for i, v in sorted(self._cpu.items())]
        lines.append("intr 0")
        (self.root / "stat").write_text("\n".join(lines) + "\n")

    def set_process(
        self,
        pid: int,
        comm: str,
        utime: int,
        stime: int = 0,
        starttime: int = 100,
        rss_pages: int = 10,
        cmdline: str = "",
        cgroup: str = "0::/\n",
        ppid: int = 1,
        cutime: int = 0,
        cstime: int = 0,
    ) -> None:
        d = self.root / str(pid)
        d.mkdir(exist_ok=True)
        fields = ["S", str(ppid)] + ["0"] * 9 + [str(utime), str(stime), str(cutime), str(cstime)]
        fields += ["0"] * 4
        fields += [str(starttime), "0", str(rss_pages)] + ["0"] * 20
        (d / "stat").write_text(f"{pid} ({comm}) " + " ".join(fields) + "\n")
        (d / "cmdline").write_bytes(cmdline.replace(" ", "\0").encode() + b"\0" * bool(cmdline))
        (d / "cgroup").write_text(cgroup)

    def remove_process(self, pid: int) -> None:
        d = self.root / str(pid)
        for f in d.iterdir():
            f.unlink()
        d.rmdir()


def fake_topology(sys_root: Path, packages: dict[int, int]) -> None:
    """Write ``devices/system/cpu/cpuN/topology/physical_package_id`` files."""
    for cpu, package in packages.items():
        d = sys_root / "devices/system/cpu" / f"cpu{cpu}" / "topology"
        d.mkdir(parents=True, exist_ok=True)
        (d / "physical_package_id").write_text(f"{package}\n")


class FakeCgroups:
    """A writable fake cgroup v2 tree: each group's ``cpu.stat`` and ``cgroup.procs``.

    ``charge`` adds CPU time to a group and (as the kernel does) to every ancestor, so
    a group whose processes did not run keeps the same ``usage_usec``.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / "cgroup.controllers").write_text("cpu memory\n")
        self.usage: dict[str, int] = {}
        self.members: dict[str, set[int]] = {}
        self._write("/")

    def _dir(self, group: str) -> Path:
        return self.root / group.strip("/") if group != "/" else self.root

    def _write(self, group: str) -> None:
        d = self._dir(group)
        d.mkdir(parents=True, exist_ok=True)
        usage = self.usage.setdefault(group, 0)
        (d / "cpu.stat").write_text(f"usage_usec {usage}\nuser_usec {usage}\nsystem_usec 0\n")
        pids = sorted(self.members.setdefault(group, set()))
        (d / "cgroup.procs").write_text("".join(f"{p}\n" for p in pids))

    def charge(self, group: str, usec: int) -> None:
        """``usec`` of CPU time run in ``group``: it and its ancestors move."""
        path = group
        while True:
            self.usage[path] = self.usage.get(path, 0) + usec
            self._write(path)
            if path == "/":
                return
            path = path.rsplit("/", 1)[0] or "/"

    def add(self, group: str, pid: int) -> None:
        self.members.setdefault(group, set()).add(pid)
        self._write(group)

    def remove(self, group: str, pid: int) -> None:
        self.members.setdefault(group, set()).discard(pid)
        self._write(group)
