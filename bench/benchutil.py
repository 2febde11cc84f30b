"""Helpers the benchmark scripts share: logging, the machine, statistics, /proc readings,
the model-only agent config, child processes, CodeCarbon, and the results files.

Every benchmark builds a result (``result(...)``: name, title, command, machine, date and
sections of prose and tables), writes it to ``bench/results/<name>.json`` and prints it
as Markdown (``emit``); ``bench/render_docs.py`` turns every results file into
docs/benchmarks.md.

Process CPU time is read from outside through the process's CPU clock
(``clock_gettime`` on ``MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)``): every thread,
the exited ones included, to the nanosecond; ``/proc/PID/stat`` ticks are the fallback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import platform
import select
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import IO, TYPE_CHECKING, Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (str(ROOT), str(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

if TYPE_CHECKING:
    from agent.config import Config

RESULTS_DIR = HERE / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
CODECARBON_MISSING = (
    "CodeCarbon is not installed, so its columns are left out: "
    "`pip install codecarbon` (it is needed for the benchmark only)"
)


def log(message: str) -> None:
    """A progress line on stderr (stdout carries the figures)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def utc_now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


def command_text() -> str:
    """The command line this benchmark was started with, as a user would type it."""
    return shlex.join([Path(sys.executable).name, *sys.argv])


def machine_info() -> dict[str, Any]:
    """Platform, CPU model, CPUs, memory and versions of the machine running the benchmark."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    try:
        import psutil

        psutil_version = str(psutil.__version__)
    except ImportError:  # pragma: no cover - psutil is a dependency
        psutil_version = "missing"
    return {
        "platform": platform.platform(),
        "cpu_model": model,
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_gb": round(mem_gb, 1),
        "python": platform.python_version(),
        "psutil": psutil_version,
    }


def load_average() -> str:
    """1, 5 and 15 minute load averages, to show whether something else ran meanwhile."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


# -- statistics -----------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 100 values is the 99th smallest)."""
    s = sorted(values)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


def stats(values: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """Count, mean, median, min, p95, p99 and max of ``values``, each times ``scale``."""
    if not values:
        return {}
    return {
        "n": len(values),
        "mean": statistics.fmean(values) * scale,
        "median": statistics.median(values) * scale,
        "min": min(values) * scale,
        "p95": percentile(values, 95) * scale,
        "p99": percentile(values, 99) * scale,
        "max": max(values) * scale,
    }


# -- /proc ----------------------------------------------------------------------------


#: What a straightforward psutil agent asks of every process each cycle.
NAIVE_ATTRS = ["pid", "name", "cpu_times", "memory_info", "create_time"]


def naive_scan(psutil: Any) -> int:
    """What a straightforward psutil agent does each cycle: every process, its attrs."""
    n, cpu_s, rss, names = 0, 0.0, 0, set()
    for p in psutil.process_iter(NAIVE_ATTRS):
        info = p.info
        times, mem = info["cpu_times"], info["memory_info"]
        if times is not None:
            cpu_s += times.user + times.system
        if mem is not None:
            rss += mem.rss
        names.add((info["pid"], info["create_time"], info["name"]))
        n += 1
    return n


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


def cpu_seconds(pid: int | None) -> float:
    """utime + stime of ``pid`` in seconds (NaN when unknown or gone)."""
    if pid is None:
        return math.nan
    try:
        utime, stime, _, _ = stat_ticks(pid)
    except OSError:
        return math.nan
    return (utime + stime) / CLK_TCK


def status_mb(pid: int | str, field: str) -> float:
    """A ``kB`` field of ``/proc/PID/status`` (VmRSS, VmHWM) in MB; ``pid`` may be "self"."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def count_pids() -> int:
    return sum(1 for e in os.listdir("/proc") if e.isdigit())


def find_pid(needle: str) -> int | None:
    """The pid of the process whose command line contains ``needle``."""
    raw = needle.encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if raw in Path(f"/proc/{entry}/cmdline").read_bytes():
                    return int(entry)
    return None


# -- the agent ------------------------------------------------------------------------


def model_config(**fields: Any) -> Config:
    """A validated config with the power model only (no RAPL, no NVML), no store, no HTTP;
    ``fields`` set or replace top-level sections (``store=StoreConfig(path=...)``)."""
    from agent.config import (
        Config,
        HttpConfig,
        ModelConfig,
        NvmlConfig,
        RaplConfig,
        SensorsConfig,
        StoreConfig,
        validate,
    )

    sensors = SensorsConfig(
        rapl=RaplConfig(enabled=False),
        nvml=NvmlConfig(enabled=False),
        model=ModelConfig(enabled=True),
    )
    defaults: dict[str, Any] = {
        "sensors": sensors,
        "store": StoreConfig(enabled=False),
        "http": HttpConfig(enabled=False),
    }
    return validate(Config(**{**defaults, **fields}))


# -- results: one JSON file per benchmark, rendered by bench/render_docs.py -------------


def table(columns: list[str], rows: list[list[str]]) -> dict[str, Any]:
    """A results table: column names and rows of cells (text, as the docs show them)."""
    return {"columns": columns, "rows": rows}


def section(
    heading: str,
    text: str = "",
    columns: list[str] | None = None,
    rows: list[list[str]] | None = None,
) -> dict[str, Any]:
    """One section of a result: a heading ("" continues the one above), prose, a table."""
    out: dict[str, Any] = {"heading": heading}
    if text:
        out["text"] = text
    if columns is not None:
        out["table"] = table(columns, rows or [])
    return out


def bullets(items: Sequence[str]) -> str:
    """Markdown bullet lines."""
    return "\n".join(f"- {item}" for item in items)


def bench_result(
    name: str,
    title: str,
    sections: list[dict[str, Any]],
    *,
    command: str | None = None,
    machine: dict[str, Any] | None = None,
    generated_utc: str | None = None,
) -> dict[str, Any]:
    """A benchmark's result in the results schema (see bench/render_docs.py)."""
    return {
        "name": name,
        "title": title,
        "command": command if command is not None else command_text(),
        "machine": machine if machine is not None else machine_info(),
        "generated_utc": generated_utc or utc_now_text(),
        "sections": sections,
    }


def add_output_args(parser: argparse.ArgumentParser) -> None:
    """``--json`` (the raw figures on stdout) and ``--results DIR`` (where the file goes)."""
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    parser.add_argument(
        "--results",
        default=os.environ.get("BENCH_RESULTS", str(RESULTS_DIR)),
        help="folder of the results file (default $BENCH_RESULTS or bench/results; '' writes none)",
    )


def emit(
    args: argparse.Namespace,
    figures: dict[str, Any],
    name: str,
    title: str,
    sections: list[dict[str, Any]],
) -> dict[str, Any]:
    """The result of benchmark ``name``, written to ``args.results``/NAME.json and printed
    as Markdown (``--json``: the raw ``figures`` instead); returned."""
    res = bench_result(name, title, sections, machine=figures.get("machine"))
    if args.results:
        path = Path(args.results, f"{res['name']}.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        log(f"wrote {path}")
    if args.json:
        print(json.dumps(figures, indent=2, default=str))
    else:
        from render_docs import render_result

        print(render_result(res))
    return res


# -- CodeCarbon -----------------------------------------------------------------------


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


def codecarbon_energy(tracker: Any) -> dict[str, float]:
    """A stopped tracker's CPU and RAM energy (J) and duration (s)."""
    data = tracker.final_emissions_data
    kwh = 3.6e6
    return {
        "cpu_j": data.cpu_energy * kwh,
        "ram_j": data.ram_energy * kwh,
        "duration_s": data.duration,
    }


def offline_tracker(cc: Any, interval: float, mode: str) -> Any:
    """CodeCarbon's offline tracker as both benchmarks run it: France's grid, no file."""
    return cc.OfflineEmissionsTracker(
        country_iso_code="FRA",
        measure_power_secs=interval,
        save_to_file=False,
        log_level="error",
        tracking_mode=mode,
    )


# -- children that talk line by line ---------------------------------------------------


def kill_group(pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    """Signal the process group led by ``pid`` (gone already: nothing to do)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


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
        kill_group(self.proc.pid)
        self.close(timeout_s=5)

    def close(self, timeout_s: float = 10.0) -> None:
        """End the child and its process group (SIGTERM, then SIGKILL)."""
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            kill_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                kill_group(self.proc.pid)
                self.proc.wait()
        kill_group(self.proc.pid)  # what is left of its group
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
