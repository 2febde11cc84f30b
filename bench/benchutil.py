"""Helpers the benchmark scripts share: report header, child processes, /proc readings.

Process CPU time is read from outside through the process's CPU clock
(``clock_gettime`` on ``MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)``): every thread,
the exited ones included, to the nanosecond; ``/proc/PID/stat`` ticks are the fallback.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import IO, Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (str(ROOT), str(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

CLK_TCK = os.sysconf("SC_CLK_TCK")
CODECARBON_MISSING = (
    "CodeCarbon is not installed, so its columns are left out: "
    "`pip install codecarbon` (it is needed for the benchmark only)"
)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def utc_now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


def command_text() -> str:
    return shlex.join([Path(sys.executable).name, *sys.argv])


def header(title: str, figures: dict[str, Any]) -> list[str]:
    """The Markdown title, date, command and machine lines every report starts with."""
    m = figures["machine"]
    return [
        f"# {title}",
        "",
        f"- date (UTC): {figures['date_utc']}",
        f"- command: `{figures['command']}`",
        f"- machine: {m['platform']}; {m['cpu_model']}; nproc {m['nproc']} "
        f"({m['cpus_usable']} usable); {m['memory_gb']} GiB RAM",
        f"- python {m['python']}, psutil {m['psutil']}",
    ]


def table(headers: list[str], rows: list[list[str]], right_from: int = 1) -> list[str]:
    """A Markdown table; columns from ``right_from`` on are right-aligned."""
    align = ["---" if i < right_from else "---:" for i in range(len(headers))]
    return [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(align) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def import_codecarbon() -> ModuleType | None:
    """CodeCarbon if installed (imported lazily: only the benchmarks use it)."""
    try:
        return importlib.import_module("codecarbon")
    except ImportError:
        return None


def codecarbon_setup(cc: ModuleType, tracker: Any) -> dict[str, Any]:
    """What a CodeCarbon tracker chose to measure with here (its hardware list)."""
    tracker.get_detected_hardware()  # detect now, not inside the measured window
    hardware = list(getattr(tracker, "_hardware", []))
    cpu = next((h for h in hardware if type(h).__name__ == "CPU"), None)
    return {
        "version": cc.__version__,
        "hardware": [repr(h) for h in hardware],
        "cpu_mode": getattr(cpu, "_mode", None),
        "tdp_w": getattr(cpu, "_tdp", None),
        "cpu_count": getattr(cpu, "_cpu_count", None),
        "cpu_model": tracker._conf.get("cpu_model"),
        "gpu_count": tracker._conf.get("gpu_count", 0),
        "tracking_mode": getattr(tracker, "_tracking_mode", None),
    }


# -- /proc ----------------------------------------------------------------------------


def cpu_clock_s(pid: int) -> float:
    """CPU seconds used so far by every thread of ``pid`` (nanosecond clock)."""
    try:
        return time.clock_gettime(((~pid) << 3) | 2)  # MAKE_PROCESS_CPUCLOCK(pid, SCHED)
    except OSError:
        utime, stime, _, _ = stat_ticks(pid)
        return (utime + stime) / CLK_TCK


def stat_ticks(pid: int) -> tuple[int, int, int, int]:
    """``utime, stime, cutime, cstime`` of ``pid`` in clock ticks (``/proc/PID/stat``)."""
    raw = Path(f"/proc/{pid}/stat").read_bytes()
    fields = raw[raw.rfind(b")") + 2 :].split()
    return int(fields[11]), int(fields[12]), int(fields[13]), int(fields[14])


def status_mb(pid: int, field: str) -> float:
    """A ``kB`` field of ``/proc/PID/status`` (VmRSS, VmHWM) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def count_pids() -> int:
    return sum(1 for e in os.listdir("/proc") if e.isdigit())


# -- children that talk line by line ---------------------------------------------------


class Child:
    """A child process that answers ``WORD {json}`` lines on stdout; stderr goes to a file."""

    def __init__(self, name: str, argv: list[str], log_path: Path, **popen: Any) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            start_new_session=True,
            **popen,
        )
        self._pending = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def _stdout(self) -> IO[str]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def poll_line(self, timeout_s: float = 0.0) -> str | None:
        """The next stdout line if one arrives within ``timeout_s``, else None."""
        ready, _, _ = select.select([self._stdout], [], [], max(0.0, timeout_s))
        if not ready:
            return None
        line = self._stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} exited ({self.proc.wait()}): {self.stderr_tail()}")
        return line.rstrip("\n")

    def expect(self, word: str, timeout_s: float) -> dict[str, Any]:
        """Wait for the line ``word {json}``; other lines are ignored."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name} did not say {word!r} in {timeout_s:g} s")
            line = self.poll_line(left)
            if line is not None and line.split(" ", 1)[0] == word:
                rest = line.partition(" ")[2].strip()
                result: dict[str, Any] = json.loads(rest) if rest else {}
                return result

    def stderr_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL the child's whole process group now."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.close(timeout_s=5)

    def close(self, timeout_s: float = 10.0) -> None:
        """End the child and its process group (SIGTERM, then SIGKILL)."""
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # what is left of its group
        self._log.close()


def stdin_stopper() -> threading.Event:
    """In a child: an Event set when stdin says ``stop`` or closes."""
    stop = threading.Event()

    def watch() -> None:
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        stop.set()

    threading.Thread(target=watch, name="stdin-stop", daemon=True).start()
    return stop


def say(word: str, payload: dict[str, Any] | None = None) -> None:
    """In a child: one protocol line on stdout."""
    sys.stdout.write(word + (" " + json.dumps(payload) if payload else "") + "\n")
    sys.stdout.flush()


def offline_tracker(cc: Any, interval: float, mode: str) -> Any:
    """CodeCarbon's offline tracker as both benchmarks run it: France's grid, no file."""
    return cc.OfflineEmissionsTracker(
        country_iso_code="FRA",
        measure_power_secs=interval,
        save_to_file=False,
        log_level="error",
        tracking_mode=mode,
    )
