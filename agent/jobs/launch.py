"""Start a measured command, forward signals to it, and reap the job's orphans.

``measure`` is a child subreaper (``become_subreaper``): a descendant whose parent
exits (a double fork, a daemon that calls ``setsid``) is re-parented to it rather than
to init. So while the command runs, ``wait_command`` waits for any child: the command
itself ends the wait, anything else is an adopted orphan of the job, reaped so its CPU
time reaches ``measure``'s children's counters (``JobScanner`` moves it to the job).
After the command exits, ``reap_orphans`` waits a short grace period for the orphans
still running, then leaves them running (their pids are returned).

Where PID 1 is systemd and ``systemd-run --scope`` works, the command runs in a
transient scope (a cgroup of its own) and the job is also matched by that cgroup.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType

#: Signals passed on to the command.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_SCOPE_PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Scope:
    """A transient systemd scope: the argv prefix that starts a command in it, and
    the glob its processes' cgroup path matches."""

    prefix: tuple[str, ...]
    cgroup_glob: str
    unit: str


def systemd_scope(job_id: str) -> Scope | None:
    """A scope for the job where PID 1 is systemd and ``systemd-run --scope`` works."""
    exe = shutil.which("systemd-run")
    if exe is None or not os.path.isdir("/run/systemd/system"):
        return None  # not booted with systemd (containers, this kind of VM)
    user = () if os.geteuid() == 0 else ("--user",)
    unit = f"sci-agent-job-{job_id}"
    probe = [exe, *user, "--scope", "--quiet", "--collect", "--", "true"]
    try:
        done = subprocess.run(
            probe, capture_output=True, timeout=_SCOPE_PROBE_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None  # no user manager, no D-Bus, a policy that refuses
    prefix = (exe, *user, "--scope", "--quiet", "--collect", f"--unit={unit}", "--")
    return Scope(prefix, f"*/{unit}.scope", unit)


class Forwarder:
    """Passes SIGINT, SIGTERM and SIGHUP on to the command while installed.

    A SIGINT typed at the terminal already reaches the whole foreground process group,
    the command included, so it is not sent a second time; one sent to ``measure``
    alone (``kill -INT``) is forwarded. ``received`` holds the signals seen.
    """

    def __init__(self) -> None:
        self.pid: int | None = None
        self.received: list[int] = []
        self._previous: dict[int, object] = {}

    def install(self) -> bool:
        """Install the handlers (main thread only); False where they cannot be."""
        if threading.current_thread() is not threading.main_thread():
            return False
        for signum in FORWARDED:
            self._previous[signum] = signal.signal(signum, self._on_signal)
        return True

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signum)
        if self.pid is None:
            return
        if signum == signal.SIGINT and _terminal_sent_to_group():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)


def _terminal_sent_to_group() -> bool:
    """Whether this process group is a terminal's foreground group (a typed ^C)."""
    for fd in (0, 1, 2):
        with contextlib.suppress(OSError):
            if os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp():
                return True
    return False


def spawn(argv: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start ``argv`` with ``env``, sharing stdin/stdout/stderr and the process group.

    Raises ``FileNotFoundError`` / ``PermissionError`` when it cannot be executed.
    """
    return subprocess.Popen(list(argv), env=env)


def wait_command(pid: int) -> int:
    """Wait for ``pid`` (a child), reaping every other child meanwhile: its wait status."""
    while True:
        try:
            got, status = os.waitpid(-1, 0)
        except ChildProcessError:  # someone else reaped it: nothing more is known
            return 0
        if got == pid:
            return status


def reap_orphans(grace_s: float, stop: Callable[[], bool] | None = None) -> list[int]:
    """Reap adopted orphans as they exit, for up to ``grace_s``; the pids left running.

    ``stop`` (polled) ends the wait early, e.g. once a signal was received.
    """
    deadline = time.monotonic() + grace_s
    while True:
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            return []  # no child left
        if time.monotonic() >= deadline or (stop is not None and stop()):
            return children_of(os.getpid())
        time.sleep(0.05)


def children_of(ppid: int, proc_root: str = "/proc") -> list[int]:
    """The pids whose parent is ``ppid`` (from ``/proc/PID/stat``)."""
    found = []
    for entry in os.listdir(proc_root):
        if not entry.isdigit():
            continue
        try:
            with open(f"{proc_root}/{entry}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        fields = raw[raw.rfind(b")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == ppid:
            found.append(int(entry))
    return sorted(found)


def exit_code(status: int) -> int:
    """A shell's exit code for a wait status: the code, or 128 + the signal."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code
