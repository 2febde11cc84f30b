"""Each cgroup's CPU usage counter: which groups ran since the scanner last looked.

A process's ticks can only move while it runs, and a cgroup's usage counter counts
every nanosecond its processes (and its descendant groups') ran. So a group whose
counter did not move holds processes whose ``/proc/PID/stat`` ticks did not move,
and the scanner need not read them. The counter is ``usage_usec`` in ``cpu.stat`` on
cgroup v2 (present on every group, with or without the cpu controller), else
``cpuacct.usage`` (nanoseconds) on a v1 ``cpuacct`` hierarchy.

A group is keyed by its path as ``/proc/PID/cgroup`` shows it. A path outside the
agent's cgroup namespace (``/../x``) or a group whose counter cannot be read is
``None``/unreadable: its processes are read every cycle, as without cgroups.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

_V1_DIRS = ("cpuacct", "cpu,cpuacct", "cpuacct,cpu")


@dataclass(frozen=True, slots=True)
class Hierarchy:
    """Where the CPU usage counters are: a mounted v2 tree or a v1 cpuacct tree."""

    version: Literal["v2", "v1"]
    mount: str

    @property
    def usage_file(self) -> str:
        return "cpu.stat" if self.version == "v2" else "cpuacct.usage"


def detect(cgroup_root: str) -> Hierarchy | None:
    """The hierarchy under ``cgroup_root`` (v2, hybrid's ``unified``, else v1 cpuacct)."""
    for mount in (cgroup_root, f"{cgroup_root}/unified"):
        if os.path.exists(f"{mount}/cgroup.controllers") and os.path.exists(f"{mount}/cpu.stat"):
            return Hierarchy("v2", mount)
    for name in _V1_DIRS:
        mount = f"{cgroup_root}/{name}"
        if os.path.exists(f"{mount}/cpuacct.usage"):
            return Hierarchy("v1", mount)
    return None


def group_of(cgroup_text: str, hierarchy: Hierarchy) -> str | None:
    """The group of a process in ``hierarchy``, from its ``/proc/PID/cgroup`` text."""
    for line in cgroup_text.splitlines():
        hid, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy.version == "v2":
            wanted = hid == "0" and controllers == ""
        else:
            wanted = "cpuacct" in controllers.split(",")
        if wanted:
            usable = path.startswith("/") and "/.." not in path and "\n" not in path
            return path if usable else None
    return None


def read_usage(hierarchy: Hierarchy, group: str) -> int | None:
    """The group's cumulative CPU usage (µs on v2, ns on v1), None if unreadable."""
    try:
        raw = _read(f"{hierarchy.mount}{group.rstrip('/')}/{hierarchy.usage_file}")
    except OSError:
        return None
    if hierarchy.version == "v2":
        if not raw.startswith(b"usage_usec "):
            return None
        raw = raw[11 : raw.find(b"\n")]
    try:
        return int(raw)
    except ValueError:
        return None


def read_members(hierarchy: Hierarchy, group: str) -> set[str] | None:
    """The pids directly in the group (``cgroup.procs``), as ``/proc`` names them."""
    try:
        raw = _read_all(f"{hierarchy.mount}{group.rstrip('/')}/cgroup.procs")
    except OSError:
        return None
    return set(raw.decode("ascii", "replace").split())


def _read(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 256)
    finally:
        os.close(fd)


def _read_all(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65_536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
