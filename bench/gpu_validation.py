#!/usr/bin/env python3
"""GPU validation: the agent's NVML energy and attribution against the GPU's own counter.

Real mode (a machine with an NVIDIA GPU, PyTorch, psutil and nvidia-ml-py; RAPL not
needed): while the agent's ``NvmlSensor``, ``ProcScanner`` and ``attribute`` sample
every 0.5 s, a timeline of known loads runs in child processes: idle (≥ 3 s, while
the children import torch; the sensor learns the idle power), process A alone
(8192² bf16 matmuls, always busy, 8 s), idle 4 s, A and B sharing the GPU (B: 4096²
matmuls at ~50 % duty, 8 s), idle 4 s. The whole run stays within ``--budget``
seconds (default 55); phases are shortened to fit, and a watchdog ends it.

Replay mode (``--replay TRACE``): the same analysis over a recorded NVML trace
(``tests/fixtures/nvml/nvml-two-process-trace.json``, an H200) answered by
``devtools.fake_pynvml.RecordedNvml``: runs anywhere, in well under a second.

Reported: energy attributed to each process, idle and unattributed against the delta
of ``nvmlDeviceGetTotalEnergyConsumption`` over the same period; the idle baseline;
the power tail after processes exit; the cost of the sensor's ``read()`` and of each
NVML call. Targets, printed PASS/FAIL: processes + idle + unattributed within 2 % of
the counter's delta; a process alone on the GPU gets ≥ 95 % of the active energy.

Output: the result in ``bench/results/gpu_validation.json`` (``--results DIR``; a replay
never overwrites the result of a real run) and as Markdown on stdout (``--json``: the raw
figures instead). When ``$OUT`` is set (the device machine), the raw figures go to
``$OUT/gpu_validation.json`` and the result to ``$OUT/results/gpu_validation.json``, to
copy into bench/results/. Exit status 0: every target passed; 1: a target failed; 2: no
GPU, driver, nvidia-ml-py or PyTorch here.

Run: ``python bench/gpu_validation.py [--quick] [--budget S] [--gpu I] [--json]
[--results DIR]`` or
``python bench/gpu_validation.py --replay tests/fixtures/nvml/nvml-two-process-trace.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import itertools
import json
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from benchutil import (
    ROOT,
    Child,
    add_output_args,
    bullets,
    emit,
    log,
    machine_info,
    section,
    stats,
    utc_now_text,
)

TITLE = "GPU validation"
ABOUT = (
    "Energy the agent attributes to processes on a GPU against the GPU's own "
    "energy counter. Targets: processes + idle (+ unattributed) within 2 % of the "
    "counter's delta; a process alone on the GPU gets at least 95 % of the active "
    "energy."
)
NOT_ON_HARDWARE = (
    "The real-GPU mode (`make gpu-validate`, on a machine with an NVIDIA GPU and "
    "PyTorch) has not run on real hardware yet: the figures below replay the recorded "
    "H200 trace through the real sensor and attribution (`--replay`)."
)
CONSERVATION_TOLERANCE = 0.02  # processes + idle + unattributed vs the counter
SINGLE_SHARE_TARGET = 0.95  # a process alone on the GPU gets this share of active energy
MARKER = "sci-gpu-validation"
EXIT_UNAVAILABLE = 2

# A GPU load (run with python -c): imports torch, says "ready", waits for "go SECONDS",
# then runs bf16 matmuls of SIZE² for SECONDS at DUTY (1: always busy), then "done".
GPU_CHILD = r"""
import json, sys, time
import torch
size, duty = int(sys.argv[1]), float(sys.argv[2])
cuda = torch.cuda.is_available()
print("ready " + json.dumps({"cuda": cuda, "torch": torch.__version__}), flush=True)
words = sys.stdin.readline().split()
if not cuda or not words or words[0] != "go":
    sys.exit(0)
seconds = float(words[1])
t_go = time.perf_counter()
a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
c = a @ b
torch.cuda.synchronize()
init_s = time.perf_counter() - t_go
print("started " + json.dumps({"init_s": init_s}), flush=True)
n, period, batch = 0, 0.1, 4 if size >= 8192 else 8
start = time.perf_counter()
while True:
    now = time.perf_counter()
    if now - start >= seconds:
        break
    if duty >= 1:
        for _ in range(batch):
            c = a @ b
        torch.cuda.synchronize()
        n += batch
        continue
    slot = start + ((now - start) // period) * period
    while time.perf_counter() < slot + duty * period:
        for _ in range(batch):
            c = a @ b
        torch.cuda.synchronize()
        n += batch
    rest = slot + period - time.perf_counter()
    if rest > 0:
        time.sleep(rest)
elapsed = time.perf_counter() - start
print("done " + json.dumps({"matmuls": n, "flops": 2.0 * size**3 * n, "seconds": elapsed,
      "init_s": init_s, "size": size, "duty": duty}), flush=True)
"""


class Unavailable(Exception):
    """The real-GPU mode cannot run here; the message says what is missing."""


# -- timing the NVML calls ------------------------------------------------------------


class TimedNvml:
    """Wraps pynvml (or the recorded fake): every ``nvmlDevice*`` call is timed."""

    def __init__(self, module: Any) -> None:
        self._module = module
        self.calls: dict[str, list[float]] = {}

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._module, name)
        if not (name.startswith("nvmlDevice") and callable(value)):
            return value
        spent = self.calls.setdefault(name, [])

        def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return value(*args, **kwargs)
            finally:
                spent.append(time.perf_counter() - t)

        return timed


# -- what one interval gave -----------------------------------------------------------


@dataclass
class Interval:
    """One sampling interval of one GPU, attributed."""

    t: float  # seconds since the run started, at the end of the interval
    elapsed_s: float
    joules: float
    idle_j: float
    unattributed_j: float
    process_j: dict[int, float]
    app_j: dict[str, float]
    running: dict[int, int]  # pid → GPU memory (bytes), from the running-process list
    sm: dict[int, float]  # pid → Σ SM utilisation samples
    read_ms: float  # the sensor's read() of every GPU
    phase: str = ""  # what the script was running (real mode) or the trace's running set

    @property
    def watts(self) -> float:
        return self.joules / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class Run:
    """Everything the analysis needs from one run, real or replayed."""

    mode: str
    gpu: dict[str, Any]
    intervals: list[Interval]
    counter_j: float  # delta of the total-energy counter, read apart from the sensor
    idle_baseline_w: float | None  # what the sensor learned (or was given)
    names: dict[int, str]  # pid → process name (A, B, …)
    calls: dict[str, list[float]]
    notes: list[str] = field(default_factory=list)
    children: dict[str, Any] = field(default_factory=dict)


def to_interval(
    t: float, elapsed: float, result: Any, component: str, read_s: float, phase: str
) -> Interval | None:
    """The attributed figures of ``component`` in one ``IntervalResult`` (None: no reading)."""
    reading = next((c for c in result.components if c.component == component), None)
    if reading is None:
        return None
    usage = reading.gpu
    return Interval(
        t=t,
        elapsed_s=elapsed,
        joules=reading.joules,
        idle_j=result.idle.gpu_joules,
        unattributed_j=result.unattributed.gpu_joules,
        process_j={p.pid: p.gpu_joules for p in result.processes if p.gpu_joules},
        app_j={a.app: a.gpu_joules for a in result.apps if a.gpu_joules},
        running=dict(usage.memory_bytes) if usage else {},
        sm=dict(usage.sm_weight) if usage else {},
        read_ms=read_s * 1000,
        phase=phase,
    )


# -- replay ---------------------------------------------------------------------------


def run_replay(path: Path) -> Run:
    """The recorded trace through the real sensor and attribution (tests' fake pynvml)."""
    from agent.attribution import attribute
    from agent.records import CpuActivity, ProcessActivity
    from agent.sensors.base import IntervalContext
    from agent.sensors.nvml import NvmlSensor
    from devtools.fake_pynvml import RecordedNvml

    fake = RecordedNvml(path)
    nvml = TimedNvml(fake)
    sensor = NvmlSensor(nvml=nvml, clock=fake.clock)
    sensor.open()
    names = {int(pid): name for name, pid in fake.pids.items()}
    cpu = CpuActivity(busy_ticks=0, total_ticks=100, cpu_count=1)
    procs = [ProcessActivity(pid, 1, name, name, 0, 0) for pid, name in names.items()]
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    intervals: list[Interval] = []
    previous_t = fake.clock()
    while fake.advance():
        now = fake.clock()
        started = time.perf_counter()
        readings = sensor.read(IntervalContext(now - previous_t, cpu, 1))
        read_s = time.perf_counter() - started
        start, end = t0 + timedelta(seconds=previous_t), t0 + timedelta(seconds=now)
        result = attribute("replay", start, end, readings, cpu, procs, 1)
        running = {names.get(pid, str(pid)) for pid, _ in fake.sample["running"]}
        phase = " + ".join(sorted(running)) + " running" if running else "no process"
        iv = to_interval(now, now - previous_t, result, "gpu0", read_s, phase)
        if iv is not None:
            intervals.append(iv)
        previous_t = now
    idle_w = sensor.idle_baseline_w("gpu0")
    sensor.close()
    counter_j = (fake.samples[-1]["energy_mj"] - fake.samples[0]["energy_mj"]) / 1000
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    call_ms = data.get("call_ms", {})
    per_cycle = sum(call_ms.get(k, 0.0) for k in ("energy", "proc_util", "running"))
    return Run(
        mode="replay",
        gpu={**fake.info, "trace": _shown(path), "load": data.get("load", "")},
        intervals=intervals,
        counter_j=counter_j,
        idle_baseline_w=idle_w,
        names=names,
        calls=nvml.calls,
        notes=[
            "replay: the sensor's read() and the call timings are those of the Python "
            "fake, not of NVML; on the recording machine the three calls a read makes "
            f"cost {per_cycle:.2f} ms per GPU (recorded means, ms: "
            + ", ".join(f"{k} {v}" for k, v in call_ms.items())
            + ")",
            "replay: the counter's delta is read from the trace (first to last sample), "
            "apart from the sensor",
        ],
    )


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


# -- real GPU -------------------------------------------------------------------------


def preflight(gpu: int) -> Any:
    """pynvml, initialised, with GPU ``gpu`` present; raises ``Unavailable`` otherwise."""
    if importlib.util.find_spec("torch") is None:
        raise Unavailable(
            "PyTorch is not installed here (the real-GPU mode runs torch matmuls in child "
            "processes: pip install torch); --replay TRACE runs without a GPU"
        )
    try:
        pynvml = importlib.import_module("pynvml")
    except ImportError as exc:
        raise Unavailable(f"nvidia-ml-py is not installed (import pynvml: {exc})") from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise Unavailable(f"NVML cannot start (no NVIDIA GPU or driver here?): {exc}") from None
    count = int(pynvml.nvmlDeviceGetCount())
    if not 0 <= gpu < count:
        pynvml.nvmlShutdown()
        raise Unavailable(f"no GPU {gpu}: NVML sees {count} GPU(s)")
    return pynvml


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class Plan:
    idle_s: float
    busy_s: float
    gap_s: float
    interval_s: float
    budget_s: float
    ready_timeout_s: float


class Timeline:
    """Starts the GPU loads at the right moments, from the sampling loop's ticks."""

    def __init__(self, plan: Plan, children: dict[str, Child], deadline: float) -> None:
        self.plan = plan
        self.children = children
        self.deadline = deadline
        self.state = "idle (children importing torch)"
        self.since = time.monotonic()
        self.ready: dict[str, dict[str, Any]] = {}
        self.started: dict[str, dict[str, Any]] = {}
        self.done: dict[str, dict[str, Any]] = {}
        self.notes: list[str] = []
        self.finished = False

    def _lines(self) -> None:
        for name, child in self.children.items():
            if child.proc.poll() is not None and name in self.done:
                continue
            with contextlib.suppress(RuntimeError):
                while (line := child.poll_line(0)) is not None:
                    word, _, rest = line.partition(" ")
                    box = {"ready": self.ready, "started": self.started, "done": self.done}
                    if word in box:
                        box[word][name] = json.loads(rest) if rest.strip() else {}

    def _go(self, names: list[str], seconds: float) -> None:
        for name in names:
            self.children[name].send(f"go {seconds:.2f}")

    def _exited(self, names: list[str]) -> bool:
        return all(self.children[n].proc.poll() is not None for n in names)

    def _busy_seconds(self, phases_left: int) -> float:
        """The planned busy time, cut so that what is left still fits the budget."""
        left = self.deadline - time.monotonic() - 2.0  # margin for the last samples
        need_per_phase = 2.5 + self.plan.gap_s  # CUDA context start-up, then the gap
        fit = (left - phases_left * need_per_phase) / phases_left
        if fit < self.plan.busy_s:
            self.notes.append(f"busy phase cut to {fit:.1f} s to fit the budget")
        return min(self.plan.busy_s, fit)

    def tick(self) -> str:
        """Advance the timeline; returns the state the past interval was in."""
        was = self.state
        self._lines()
        now = time.monotonic()
        for name, info in self.ready.items():
            if not info.get("cuda", False):
                raise Unavailable(f"PyTorch in the child {name} sees no CUDA GPU")
        if self.state.startswith("idle (children"):
            if len(self.ready) == len(self.children) and now - self.since >= self.plan.idle_s:
                seconds = self._busy_seconds(2)
                if seconds < 1.5:
                    raise Unavailable(
                        f"the budget leaves {seconds:.1f} s per GPU phase (torch took "
                        f"{now - self.since:.0f} s to import and the idle start); raise --budget"
                    )
                self._go(["A1"], seconds)
                self.state, self.since = "A1 alone", now
            elif now - self.since > self.plan.ready_timeout_s:
                raise Unavailable(
                    f"the GPU children did not import torch in {self.plan.ready_timeout_s:g} s"
                )
        elif self.state == "A1 alone" and self._exited(["A1"]):
            self.state, self.since = "idle after A1", now
        elif self.state == "idle after A1" and now - self.since >= self.plan.gap_s:
            self._go(["A2", "B"], self._busy_seconds(1))
            self.state, self.since = "A2 + B sharing", now
        elif self.state == "A2 + B sharing" and self._exited(["A2", "B"]):
            self.state, self.since = "idle after A2 + B", now
        elif self.state == "idle after A2 + B" and now - self.since >= self.plan.gap_s:
            self.finished = True
        if now >= self.deadline and not self.finished:
            self.notes.append(f"budget reached in state {self.state!r}; stopped there")
            self.finished = True
        return was


def run_real(args: argparse.Namespace) -> Run:
    """The timeline above on GPU ``args.gpu``, sampled every ``args.interval`` seconds."""
    from agent.apps import AppNamer
    from agent.attribution import attribute
    from agent.config import AppRule
    from agent.procfs import ProcScanner
    from agent.records import utc_now
    from agent.sensors.base import IntervalContext
    from agent.sensors.nvml import NvmlSensor

    started_at = time.monotonic()
    deadline = started_at + args.budget
    pynvml = preflight(args.gpu)
    plan = Plan(
        idle_s=2.0 if args.quick else 3.0,
        busy_s=3.0 if args.quick else 8.0,
        gap_s=2.0 if args.quick else 4.0,
        interval_s=args.interval,
        budget_s=args.budget,
        ready_timeout_s=max(5.0, args.budget - 20.0),
    )
    handle = pynvml.nvmlDeviceGetHandleByIndex(args.gpu)
    gpu_info = {
        "index": args.gpu,
        "name": _text(pynvml.nvmlDeviceGetName(handle)),
        "uuid": _text(pynvml.nvmlDeviceGetUUID(handle)),
        "driver": _text(pynvml.nvmlSystemGetDriverVersion()),
    }
    component = f"gpu{args.gpu}"
    env = {
        **os.environ,
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",  # CUDA's numbering = NVML's
        "CUDA_VISIBLE_DEVICES": str(args.gpu),
        "PYTORCH_NVML_BASED_CUDA_CHECK": "1",  # is_available() without a CUDA context
    }
    loads = {"A1": (8192, 1.0), "A2": (8192, 1.0), "B": (4096, 0.5)}  # A1 alone; A2 with B
    rules = tuple(AppRule(name, cmdline=rf"{MARKER}={name}\b") for name in loads)
    scanner = ProcScanner(AppNamer(rules))
    nvml = TimedNvml(pynvml)
    sensor = NvmlSensor(nvml=nvml)
    children: dict[str, Child] = {}
    intervals: list[Interval] = []
    with tempfile.TemporaryDirectory(prefix="sci-gpu-") as tmp:
        try:
            for name, (size, duty) in loads.items():
                argv = [sys.executable, "-c", GPU_CHILD, str(size), str(duty), f"{MARKER}={name}"]
                children[name] = Child(name, argv, Path(tmp, f"{name}.log"), env=env)
            sensor.open()
            counter0 = int(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))
            scanner.cpu_activity()
            scanner.scan()
            timeline = Timeline(plan, children, deadline)
            t0 = previous = time.monotonic()
            previous_wall = utc_now()
            k = dropped = 0
            while not timeline.finished:
                k += 1
                time.sleep(max(0.0, t0 + k * args.interval - time.monotonic()))
                now, wall = time.monotonic(), utc_now()
                cpu = scanner.cpu_activity()
                ctx = IntervalContext(now - previous, cpu, scanner.memory_total_bytes)
                tr = time.perf_counter()
                readings = sensor.read(ctx)
                read_s = time.perf_counter() - tr
                processes = scanner.scan()
                result = attribute(
                    socket.gethostname(),
                    previous_wall,
                    wall,
                    readings,
                    cpu,
                    processes,
                    scanner.memory_total_bytes,
                )
                phase = timeline.tick()
                iv = to_interval(now - t0, now - previous, result, component, read_s, phase)
                if iv is not None:
                    intervals.append(iv)
                else:
                    dropped += 1
                previous, previous_wall = now, wall
            counter1 = int(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))
            idle_w = sensor.idle_baseline_w(component)
        finally:
            sensor.close()
            for child in children.values():
                child.kill()
            with contextlib.suppress(Exception):
                pynvml.nvmlShutdown()
    pid_of = {name: c.pid for name, c in children.items()}
    names = {pid: name for name, pid in pid_of.items()}
    seen = {pid for iv in intervals for pid in (*iv.running, *iv.sm)}
    notes = list(timeline.notes)
    if dropped:
        notes.append(f"{dropped} interval(s) without a reading of {component} (NVML errors)")
    for name, child in children.items():
        if name not in timeline.done:
            notes.append(
                f"child {name} did not finish its load; its stderr: {child.stderr_tail(5)}"
            )
    unknown = sorted(seen - set(names))
    if unknown:
        notes.append(
            f"NVML reported pids {unknown} that are not the children here (another PID "
            "namespace, or other GPU users): their energy is unattributed"
        )
    return Run(
        mode="real",
        gpu=gpu_info,
        intervals=intervals,
        counter_j=(counter1 - counter0) / 1000,
        idle_baseline_w=idle_w,
        names=names,
        calls=nvml.calls,
        notes=notes,
        children={
            "pids": pid_of,
            "ready": timeline.ready,
            "started": timeline.started,
            "done": timeline.done,
            "wall_s": time.monotonic() - started_at,
        },
    )


# -- analysis -------------------------------------------------------------------------


def _stats_ms(values: list[float]) -> dict[str, float]:
    return {k: v for k, v in stats(values).items() if k in ("n", "median", "p95", "max", "mean")}


def _phases(intervals: list[Interval]) -> Iterator[list[Interval]]:
    """Runs of consecutive intervals with the same phase label."""
    run: list[Interval] = []
    for iv in intervals:
        if run and iv.phase != run[-1].phase:
            yield run
            run = []
        run.append(iv)
    if run:
        yield run


def analyse(run: Run) -> dict[str, Any]:
    ivs = run.intervals
    total = sum(iv.joules for iv in ivs)
    idle = sum(iv.idle_j for iv in ivs)
    unatt = sum(iv.unattributed_j for iv in ivs)
    procs = sum(sum(iv.process_j.values()) for iv in ivs)
    counter = run.counter_j
    parts = procs + idle + unatt

    def rel(x: float) -> float:
        return (x - counter) / counter if counter else float("nan")

    per_process = {
        run.names.get(pid, str(pid)): sum(iv.process_j.get(pid, 0.0) for iv in ivs)
        for pid in sorted({p for iv in ivs for p in iv.process_j} | set(run.names))
    }
    # A process alone on the GPU: the running list and the SM samples name only it.
    single: dict[str, dict[str, float]] = {}
    for iv in ivs:
        if len(iv.running) == 1 and set(iv.sm) <= set(iv.running):
            pid = next(iter(iv.running))
            s = single.setdefault(run.names.get(pid, str(pid)), {"active_j": 0.0, "got_j": 0.0})
            s["active_j"] += iv.joules - iv.idle_j
            s["got_j"] += iv.process_j.get(pid, 0.0)
            s["intervals"] = s.get("intervals", 0) + 1
    for s in single.values():
        s["share"] = s["got_j"] / s["active_j"] if s["active_j"] > 0 else float("nan")
    shared_active = 0.0
    shared: dict[str, float] = {}
    for iv in ivs:
        if len(iv.running) >= 2:
            shared_active += iv.joules - iv.idle_j
            for pid in iv.running:
                name = run.names.get(pid, str(pid))
                shared[name] = shared.get(name, 0.0) + iv.process_j.get(pid, 0.0)
    # The power tail: the intervals with no process, after one ran.
    tails: list[list[dict[str, float]]] = []
    current: list[dict[str, float]] | None = None
    for prev, iv in itertools.pairwise(ivs):
        if not iv.running and not iv.sm:
            if prev.running or prev.sm:
                current = []
                tails.append(current)
            if current is not None:
                current.append({"t": iv.t, "w": iv.watts, "unattributed_j": iv.unattributed_j})
        else:
            current = None
    idle_w = run.idle_baseline_w
    quiet = [iv.watts for iv in ivs if not iv.running and not iv.sm]
    phases = [
        {
            "phase": p[0].phase,
            "from_s": p[0].t - p[0].elapsed_s,
            "to_s": p[-1].t,
            "intervals": len(p),
            "joules": sum(iv.joules for iv in p),
            "mean_w": sum(iv.joules for iv in p) / sum(iv.elapsed_s for iv in p),
            "idle_j": sum(iv.idle_j for iv in p),
            "unattributed_j": sum(iv.unattributed_j for iv in p),
            "apps_j": {
                a: sum(iv.app_j.get(a, 0.0) for iv in p)
                for a in sorted({a for iv in p for a in iv.app_j})
            },
        }
        for p in _phases(ivs)
    ]
    conservation_ok = abs(rel(parts)) <= CONSERVATION_TOLERANCE
    single_ok = bool(single) and all(s["share"] >= SINGLE_SHARE_TARGET for s in single.values())
    return {
        "intervals": len(ivs),
        "seconds": sum(iv.elapsed_s for iv in ivs),
        "counter_j": counter,
        "sensor_j": total,
        "processes_j": procs,
        "idle_j": idle,
        "unattributed_j": unatt,
        "processes_idle_unattributed_j": parts,
        "rel_error_all_parts": rel(parts),
        "rel_error_processes_idle": rel(procs + idle),
        "rel_error_sensor": rel(total),
        "per_process_j": per_process,
        "single_process": single,
        "shared_active_j": shared_active,
        "shared_j": shared,
        "idle_baseline_w": idle_w,
        "quiet_power_w": {"min": min(quiet), "median": statistics.median(quiet)} if quiet else {},
        "tails": tails,
        "phases": phases,
        "read_ms": _stats_ms([iv.read_ms for iv in ivs]),
        "nvml_calls_ms": {
            name: _stats_ms([s * 1000 for s in spent]) for name, spent in sorted(run.calls.items())
        },
        "targets": [
            {
                "target": "processes + idle + unattributed within "
                f"{CONSERVATION_TOLERANCE:.0%} of the counter's delta",
                "figure": f"{parts:.1f} J vs {counter:.1f} J ({rel(parts):+.4%})",
                "status": "PASS" if conservation_ok else "FAIL",
            },
            {
                "target": f"a process alone on the GPU gets ≥ {SINGLE_SHARE_TARGET:.0%} "
                "of the active energy",
                "figure": "; ".join(
                    f"{n}: {s['share']:.2%} of {s['active_j']:.1f} J over {s['intervals']:.0f} "
                    "intervals"
                    for n, s in single.items()
                )
                or "no interval with a single process",
                "status": "PASS" if single_ok else "FAIL",
            },
        ],
    }


# -- report ---------------------------------------------------------------------------


def sections(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """What it measures, energy, phases, attribution, idle and tail, call cost, targets."""
    a = figures["analysis"]
    ch = figures.get("children") or {}
    first = NOT_ON_HARDWARE if figures["mode"] == "replay" else "Measured on a real GPU."
    return [
        section("", f"{ABOUT} {first}"),
        section("", bullets(_setup(figures))),
        _energy(a),
        _phase_table(a),
        section("Attribution", bullets(_attribution(a, ch.get("done") or {}))),
        section("Idle baseline and power tail", bullets(_tail(a))),
        *_call_cost(a),
        section(
            "Targets",
            columns=["target", "figure", "status"],
            rows=[[t["target"], t["figure"], f"**{t['status']}**"] for t in a["targets"]],
        ),
    ]


def _setup(figures: dict[str, Any]) -> list[str]:
    g = figures["gpu"]
    setup = [
        f"mode: {figures['mode']}; GPU: {g.get('name')} (driver {g.get('driver')})"
        + (f"; trace `{g['trace']}`" if "trace" in g else "")
    ]
    if g.get("load"):
        setup.append(f"recorded load: {g['load']}")
    ch = figures.get("children") or {}
    if ch:
        setup.append(
            f"children: {ch.get('pids')}; wall time of the run {ch.get('wall_s', 0):.1f} s"
        )
    return setup + [f"note: {n}" for n in figures["notes"]]


def _energy(a: dict[str, Any]) -> dict[str, Any]:
    c = a["counter_j"]

    def share(j: float) -> str:
        return f"{j / c:.2%}" if c else ""

    rows = [
        ["total-energy counter, delta (read apart)", f"{c:.1f}", "", ""],
        ["sensor: Σ interval joules", f"{a['sensor_j']:.1f}", "", f"{a['rel_error_sensor']:+.4%}"],
        *([f"process {name}", f"{j:.1f}", share(j), ""] for name, j in a["per_process_j"].items()),
        ["idle", f"{a['idle_j']:.1f}", share(a["idle_j"]), ""],
        ["unattributed", f"{a['unattributed_j']:.1f}", share(a["unattributed_j"]), ""],
        [
            "**processes + idle + unattributed**",
            f"{a['processes_idle_unattributed_j']:.1f}",
            "",
            f"**{a['rel_error_all_parts']:+.4%}**",
        ],
        [
            "processes + idle (no unattributed)",
            f"{a['processes_j'] + a['idle_j']:.1f}",
            "",
            f"{a['rel_error_processes_idle']:+.4%}",
        ],
    ]
    return section(
        "Energy over the run",
        f"{a['intervals']} intervals, {a['seconds']:.1f} s.",
        ["part", "joules", "share of the counter", "vs the counter"],
        rows,
    )


def _phase_table(a: dict[str, Any]) -> dict[str, Any]:
    rows = [
        [
            p["phase"],
            f"{p['from_s']:.1f}–{p['to_s']:.1f}",
            str(p["intervals"]),
            f"{p['joules']:.1f}",
            f"{p['mean_w']:.0f}",
            f"{p['idle_j']:.1f}",
            ", ".join(f"{k} {v:.1f}" for k, v in p["apps_j"].items()) or "–",
            f"{p['unattributed_j']:.1f}",
        ]
        for p in a["phases"]
    ]
    columns = [
        "phase",
        "t (s)",
        "intervals",
        "joules",
        "mean W",
        "idle J",
        "processes J",
        "unattributed J",
    ]
    return section("Phases", columns=columns, rows=rows)


def _attribution(a: dict[str, Any], done: dict[str, Any]) -> list[str]:
    lines = [
        f"{name} alone: {s['got_j']:.1f} J of {s['active_j']:.1f} J active "
        f"(**{s['share']:.2%}**) over {s['intervals']:.0f} intervals"
        for name, s in a["single_process"].items()
    ]
    if a["shared_active_j"]:
        split = ", ".join(
            f"{n} {j:.1f} J ({j / a['shared_active_j']:.1%})" for n, j in a["shared_j"].items()
        )
        lines.append(f"shared (2 or more running): {a['shared_active_j']:.1f} J active → {split}")
    if {"A2", "B"} <= set(done):
        fa, fb = done["A2"]["flops"], done["B"]["flops"]
        lines.append(
            f"shared phase work done: A2 {fa / 1e12:.0f} TFLOP, B {fb / 1e12:.0f} TFLOP "
            f"(B's share of the FLOPs {fb / (fa + fb):.1%}; its matmuls are 8× smaller, "
            "so FLOPs are only a rough guide to its share of the GPU's time)"
        )
    lines += [
        f"child {name}: {d['matmuls']} matmuls of {d['size']}² in {d['seconds']:.1f} s "
        f"({d['flops'] / d['seconds'] / 1e12:.0f} TFLOP/s), CUDA start-up {d['init_s']:.2f} s"
        for name, d in sorted(done.items())
    ]
    return lines


def _tail(a: dict[str, Any]) -> list[str]:
    base, quiet = a["idle_baseline_w"], a["quiet_power_w"]
    lines = [
        f"idle baseline the sensor learned: **{base:.1f} W**"
        if base is not None
        else "idle baseline: not learned (no interval without a GPU process)"
    ]
    if quiet:
        lines.append(
            f"power of the intervals with no process: min {quiet['min']:.1f} W, "
            f"median {quiet['median']:.1f} W"
        )
    for i, tail in enumerate(a["tails"], 1):
        watts = " → ".join(f"{p['w']:.0f}" for p in tail[:8])
        energy = sum(p["unattributed_j"] for p in tail)
        lines.append(
            f"after the last process exited ({i}, t = {tail[0]['t']:.1f} s): W per interval "
            f"{watts}; energy above idle, unattributed: {energy:.1f} J"
        )
    return lines


def _call_cost(a: dict[str, Any]) -> list[dict[str, Any]]:
    r = a["read_ms"]
    rows = [
        [f"`{name}`", str(s["n"]), f"{s['mean']:.3f}", f"{s['median']:.3f}", f"{s['max']:.3f}"]
        for name, s in a["nvml_calls_ms"].items()
    ]
    return [
        section(
            "Cost of the NVML calls",
            f"- sensor read() per cycle: median {r.get('median', 0):.3f} ms, p95 "
            f"{r.get('p95', 0):.3f} ms, max {r.get('max', 0):.3f} ms ({r.get('n', 0)} reads)",
            ["call", "calls", "mean ms", "median ms", "max ms"],
            rows,
        )
    ]


def write_results(res: dict[str, Any], folder: str, mode: str) -> None:
    """``res`` into ``folder``/gpu_validation.json, unless a replay would cover a real run."""
    if not folder:
        return
    path = Path(folder, "gpu_validation.json")
    if mode == "replay" and path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        if "mode: real" in json.dumps(old.get("sections", [])):
            log(f"{path} holds a real run: the replay leaves it as it is")
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    log(f"wrote {path}")


# -- main -----------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--replay", type=Path, help="analyse a recorded NVML trace instead")
    p.add_argument("--gpu", type=int, default=0, help="NVML index of the GPU (real mode)")
    p.add_argument("--interval", type=float, default=0.5, help="sampling interval, s")
    p.add_argument("--budget", type=float, default=55.0, help="hard limit of the run, s")
    add_output_args(p)
    p.add_argument("--quick", action="store_true", help="phases of 2-3 s (real mode)")
    args = p.parse_args(argv)
    if args.interval <= 0 or args.budget <= 0:
        p.error("--interval and --budget must be > 0")
    return args


def _watchdog(budget_s: float) -> None:
    """End the run (children included, through the finally blocks) past the budget."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"the run outlived its budget of {budget_s:g} s")

    signal.signal(signal.SIGALRM, expire)
    signal.alarm(max(1, int(budget_s + 3)))


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        if args.replay is not None:
            trace = args.replay if args.replay.is_absolute() else Path.cwd() / args.replay
            if not trace.exists():
                trace = ROOT / args.replay
            run = run_replay(trace)
        else:
            _watchdog(args.budget)
            run = run_real(args)
            signal.alarm(0)
    except Unavailable as exc:
        print(f"gpu_validation: cannot run on a real GPU here: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except TimeoutError as exc:
        print(f"gpu_validation: FAIL: {exc}", file=sys.stderr)
        return 1
    figures: dict[str, Any] = {
        "date_utc": utc_now_text(),
        "machine": machine_info(),
        "mode": run.mode,
        "gpu": run.gpu,
        "notes": run.notes,
        "children": run.children,
        "analysis": analyse(run),
        "intervals": [asdict(iv) for iv in run.intervals],
    }
    folder, args.results = args.results, ""  # write_results: a replay keeps a real result
    res = emit(args, figures, "gpu_validation", TITLE, sections(figures))
    write_results(res, folder, run.mode)
    out = os.environ.get("OUT")
    if out:
        path = Path(out, "gpu_validation.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(figures, indent=2, default=str), encoding="utf-8")
        log(f"figures written to {path}")
        write_results(res, str(Path(out, "results")), run.mode)
    passed = all(t["status"] == "PASS" for t in figures["analysis"]["targets"])
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
