"""Which processes belong to a job: its tree, and descendants that detached from it.

A process is the job's when, at the first scan that sees it:

- it is one of the job's roots (the command ``measure`` started, or the process a
  ``Tracker`` runs in);
- its parent is already the job's (children, grandchildren, … seen alive), or is a
  process that adopts only the job's orphans (``measure``, a child subreaper);
- its environment carries the job's marker (``SCI_AGENT_JOB=<id>``, set in the
  command's environment and inherited by every descendant): a daemon that double
  forks or calls ``setsid`` is re-parented away from the tree but keeps its
  environment (reading another user's environment needs privileges; the job's own
  processes are the caller's);
- its cgroup matches the job's (when the job was started in a cgroup of its own).

Everything else is named as the daemon would name it. A process that leaves the tree,
clears its environment and lives in the same cgroup is not found (documented).
"""

from __future__ import annotations

import fnmatch
import os
import threading
from collections.abc import Iterable

from agent.apps import AppNamer, ProcessFacts

MARKER = "SCI_AGENT_JOB"


class JobNamer(AppNamer):
    """An ``AppNamer`` that names the job's processes ``app`` and others as ``base`` does."""

    def __init__(
        self,
        base: AppNamer,
        app: str,
        *,
        job_id: str,
        roots: Iterable[int] = (),
        cgroup: str | None = None,
        proc_root: str = "/proc",
    ) -> None:
        super().__init__()
        self.base = base
        self.app = app
        self.job_id = job_id
        self.cgroup = cgroup
        self.proc_root = proc_root
        self._members: set[int] = set(roots)
        self._adopters: set[int] = set()
        self._lock = threading.Lock()

    def add_root(self, pid: int) -> None:
        """Count ``pid`` (and, from now on, its descendants) in the job."""
        with self._lock:
            self._members.add(pid)

    def add_adopter(self, pid: int) -> None:
        """Count the children of ``pid`` (not ``pid`` itself) in the job: a subreaper
        whose only children are the job's command and its adopted orphans."""
        with self._lock:
            self._adopters.add(pid)

    @property
    def members(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._members)

    def name(self, p: ProcessFacts) -> str:
        if self.claims(p):
            with self._lock:
                self._members.add(p.pid)
            return self.app
        return self.base.name(p)

    def claims(self, p: ProcessFacts) -> bool:
        """Whether ``p`` belongs to the job (see the module)."""
        with self._lock:
            if p.pid in self._members or (p.ppid and p.ppid in self._members):
                return True
            if p.ppid in self._adopters and p.pid not in self._adopters:
                return True
        if self.cgroup is not None and fnmatch.fnmatchcase(p.cgroup, self.cgroup):
            return True
        return self._marked(p.pid)

    def _marked(self, pid: int) -> bool:
        try:
            with open(f"{self.proc_root}/{pid}/environ", "rb") as f:
                environ = f.read(1 << 20)
        except OSError:
            return False  # another user's process, or gone
        return f"{MARKER}={self.job_id}".encode() in environ.split(b"\0")


def marked_environment(job_id: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the job's marker set."""
    env = dict(os.environ if base is None else base)
    env[MARKER] = job_id
    return env
