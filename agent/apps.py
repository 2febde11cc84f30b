"""Name the app a process belongs to: the agent itself, ``[[apps]]`` rules, cgroup, ``other``."""

from __future__ import annotations

import fnmatch
import os
import pwd
import re
from dataclasses import dataclass
from pathlib import Path

from agent.config import AppRule

OTHER_APP = "other"
KERNEL_APP = "kernel"
#: The agent and its dashboard, always: their own footprint is carbon too, and it must
#: not land in the user's ``python`` app.
SELF_APP = "sci-agent"
_DASHBOARD_APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")

_CONTAINER = re.compile(
    r"^(?:docker|cri-containerd|crio|libpod|containerd)-([0-9a-f]{12,64})\.scope$"
)
_BARE_ID = re.compile(r"^[0-9a-f]{64}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")


@dataclass(frozen=True, slots=True)
class ProcessFacts:
    """What app rules may look at; read once per process."""

    pid: int
    comm: str
    cmdline: str  # arguments joined by spaces; empty for kernel threads
    cgroup: str  # the cgroup path, e.g. /system.slice/nginx.service
    uid: int
    kernel_thread: bool = False
    ppid: int = 0

    @property
    def exe(self) -> str:
        """The executable's base name: argv[0]'s, else the kernel's ``comm``."""
        first = self.cmdline.split(" ", 1)[0] if self.cmdline else ""
        return os.path.basename(first) or self.comm


class _CompiledRule:
    def __init__(self, rule: AppRule) -> None:
        self.name = rule.name
        self.cmdline = re.compile(rule.cmdline) if rule.cmdline is not None else None
        self.exe = rule.exe
        self.cgroup = rule.cgroup
        self.uid = _resolve_uid(rule.user) if rule.user is not None else None
        self.user = rule.user

    def matches(self, p: ProcessFacts) -> bool:
        if self.cmdline is not None and not self.cmdline.search(p.cmdline):
            return False
        if self.exe is not None and self.exe not in (p.exe, p.comm):
            return False
        if self.cgroup is not None and not fnmatch.fnmatchcase(p.cgroup, self.cgroup):
            return False
        return self.user is None or p.uid == self.uid


def _resolve_uid(user: str) -> int | None:
    if user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None  # an unknown user matches no process


class AppNamer:
    """First matching rule wins; else the systemd unit or container; else ``other``."""

    def __init__(self, rules: tuple[AppRule, ...] = ()) -> None:
        self._rules = [_CompiledRule(r) for r in rules]

    def name(self, p: ProcessFacts) -> str:
        if is_sci_agent(p):
            return SELF_APP
        for rule in self._rules:
            if rule.matches(p):
                return rule.name
        if p.kernel_thread:
            return KERNEL_APP
        return app_from_cgroup(p.cgroup) or OTHER_APP


def is_sci_agent(p: ProcessFacts) -> bool:
    """The agent's own processes: ``sci-agent …``, ``python -m agent …``, its dashboard."""
    argv = p.cmdline.split(" ")
    head = [os.path.basename(a) for a in argv[:2]]
    if "sci-agent" in head:
        return True
    if len(argv) >= 3 and os.path.basename(argv[0]).startswith("python") and argv[1:3] == [
        "-m",
        "agent",
    ]:
        return True
    return _DASHBOARD_APP in argv


def app_from_cgroup(path: str) -> str | None:
    """The systemd service or container a cgroup path names, if any."""
    parts = [s for s in path.split("/") if s]
    for i in range(len(parts) - 1, -1, -1):
        part = parts[i]
        container = _CONTAINER.match(part)
        if container:
            return f"container-{container.group(1)[:12]}"
        if _BARE_ID.match(part) and i > 0 and parts[i - 1] in ("docker", "kubepods", "lxc"):
            return f"container-{part[:12]}"
        if part.endswith(".service"):
            unit = part[: -len(".service")]
            if unit.startswith("user@"):
                return None  # a user's session manager: too many, too vague
            return _UNSAFE.sub("_", unit.replace("\\x2d", "-"))[:64] or None
    return None


def parse_cgroup_file(text: str) -> str:
    """Pick the most telling path from ``/proc/PID/cgroup`` (v2, else systemd, else cpu)."""
    unified = named = first = ""
    for line in text.splitlines():
        hid, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hid == "0" and controllers == "":
            unified = path
        elif controllers == "name=systemd":
            named = path
        elif not first and path not in ("", "/"):
            first = path
    for path in (unified, named, first):
        if path and path != "/":
            return path
    return unified or named or "/"
