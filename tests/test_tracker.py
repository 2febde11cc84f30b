"""sci.Tracker on real work: a busy loop, a child, a detached grandchild, steps, the decorator."""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agent.config import Config, loads
from devtools.fake_pynvml import TRACE, RecordedNvml
from sci import Tracker
from sci.tracker import Step
from tests.powercap_fixtures import one_socket

ROOT = Path(__file__).resolve().parent.parent
INTENSITY = 300.0


def config(tmp_path: Path, extra: str = "", nvml: str = "enabled = false") -> Config:
    return loads(
        textwrap.dedent(
            f"""
            [store]
            enabled = false
            [http]
            enabled = false
            [sensors]
            state_dir = "{tmp_path}/state"
            [sensors.nvml]
            {nvml}
            [grid]
            providers = ["static"]
            intensity_gco2_per_kwh = {INTENSITY}
            """
        )
        + extra
    )


def busy(cpu_s: float) -> None:
    """Spin this thread for ``cpu_s`` seconds of its own CPU time."""
    end = time.thread_time() + cpu_s
    while time.thread_time() < end:
        pass


def close(measured: float, expected: float, rel: float = 0.05, abs_s: float = 0.06) -> bool:
    return abs(measured - expected) <= abs_s + rel * expected


def test_a_busy_loop_is_charged_its_cpu_and_energy(tmp_path: Path) -> None:
    cfg = config(tmp_path, "[sci]\npue = 1.25\n")
    with Tracker(app="loop", interval_s=0.25, config=cfg) as t:
        before = time.process_time()
        busy(1.2)
        used = time.process_time() - before
    assert close(t.cpu_s, used), (t.cpu_s, used)
    assert t.overhead_cpu_s < 0.1 * used
    assert t.energy_joules > 0 and t.energy_kwh > 0
    # E as scored = joules at the machine × PUE; carbon = E × I + M
    assert math.isclose(t.energy_kwh, t.energy_joules * 1.25 / 3.6e6, rel_tol=1e-9)
    assert math.isclose(t.operational_g, t.energy_kwh * INTENSITY, rel_tol=1e-9)
    assert t.embodied_g > 0
    assert math.isclose(t.carbon_g, t.operational_g + t.embodied_g, rel_tol=1e-12)
    assert t.result is not None and t.result.totals.intervals >= 2  # sampled during the run too
    assert 1.0 < t.duration_s < t.result.duration_s + 0.1
    assert t.sci() is None  # no units given
    assert t.sci(4) == pytest.approx(t.carbon_g / 4)
    d = json.loads(json.dumps(t.to_dict()))
    assert d["cpu_s"] == t.cpu_s and d["carbon_g"] == t.carbon_g
    assert d["intensity"]["gco2_per_kwh"] == INTENSITY
    assert {c["source"] for c in d["components"]} == {"model"}


def test_only_this_process_is_charged_not_a_busy_neighbour(tmp_path: Path) -> None:
    # Started by a shell that exits at once: re-parented, in no tree of ours.
    spin = f"{sys.executable} -c 'while True: pass' >/dev/null 2>&1 & echo $!"
    pid = int(subprocess.run(["sh", "-c", spin], capture_output=True, text=True).stdout)
    try:
        time.sleep(0.2)
        with Tracker(app="quiet", interval_s=0.25, config=config(tmp_path)) as t:
            before = time.process_time()
            time.sleep(1.0)
            used = time.process_time() - before
        assert close(t.cpu_s, used, abs_s=0.05)
        assert t.cpu_s < 0.2  # the neighbour span a whole CPU meanwhile
    finally:
        os.kill(pid, 9)


def test_a_child_process_is_included(tmp_path: Path) -> None:
    child_code = (
        "import time\nend = time.process_time() + 0.8\nwhile time.process_time() < end: pass"
    )
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with Tracker(app="parent", interval_s=0.25, config=config(tmp_path)) as t:
        before = time.process_time()
        subprocess.run([sys.executable, "-c", child_code], check=True)
        busy(0.3)
        own = time.process_time() - before
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = (children_after.ru_utime - children_before.ru_utime) + (
        children_after.ru_stime - children_before.ru_stime
    )
    assert child >= 0.75
    assert close(t.cpu_s, own + child), (t.cpu_s, own, child)


def test_a_detached_grandchild_is_found_by_the_inherited_marker(tmp_path: Path) -> None:
    report = tmp_path / "grandchild-cpu"
    code = f"""
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:  # re-parented away from the tree at once
        end = time.process_time() + 0.8
        while time.process_time() < end: pass
        open({str(report)!r}, "w").write(str(time.process_time()))
        time.sleep(0.8)  # alive for the last scans: all its CPU seen
        os._exit(0)
    os._exit(0)
os.wait()
"""
    with Tracker(app="tree", interval_s=0.2, config=config(tmp_path)) as t:
        assert os.environ["SCI_AGENT_JOB"] == t._meter.job_id  # type: ignore[union-attr]
        before = time.process_time()
        subprocess.run([sys.executable, "-c", code], check=True)
        deadline = time.monotonic() + 10
        while not report.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        own = time.process_time() - before
    grandchild = float(report.read_text())
    assert "SCI_AGENT_JOB" not in os.environ  # restored
    assert t.cpu_s >= own + grandchild - 0.1, (t.cpu_s, own, grandchild)


def test_the_decorator_measures_each_call(tmp_path: Path) -> None:
    @Tracker(app="train", units=10, interval_s=0.25, config=config(tmp_path))
    def train(seconds: float) -> str:
        busy(seconds)
        return "done"

    assert train(0.5) == "done"
    tracker = train.tracker  # type: ignore[attr-defined]
    assert isinstance(tracker, Tracker) and not tracker.running
    assert close(tracker.cpu_s, 0.5)
    assert tracker.sci() == pytest.approx(tracker.carbon_g / 10)
    assert train.__name__ == "train"
    train(0.2)  # a new run
    assert close(tracker.cpu_s, 0.2)


def test_steps_add_up_to_the_whole_and_phases_cover_their_block(tmp_path: Path) -> None:
    seen: list[Step] = []
    with Tracker(app="epochs", interval_s=0.3, config=config(tmp_path), on_step=seen.append) as t:
        for epoch in range(3):
            busy(0.3)
            t.step(f"epoch-{epoch}", units=100)
        busy(0.3)  # between: in no step
        with t.phase("eval", units=50):
            busy(0.2)
        during = t.cpu_s
    steps = t.steps
    assert [s.name for s in steps] == ["epoch-0", "epoch-1", "epoch-2", "eval"]
    assert seen == steps
    for s in steps[:3]:
        assert close(s.cpu_s, 0.3), s
    assert close(steps[3].cpu_s, 0.2), steps[3]
    assert close(t.unmarked.cpu_s, 0.3)
    assert during <= t.cpu_s
    # conservation: steps + unmarked = the whole, field by field
    for field in ("duration_s", "cpu_s", "energy_joules", "energy_kwh", "operational_g"):
        total = sum(getattr(s, field) for s in steps) + getattr(t.unmarked, field)
        assert math.isclose(total, getattr(t, field), rel_tol=1e-9), field
    assert t.recorded_units == 350
    assert t.sci() == pytest.approx(t.carbon_g / 350)
    assert steps[0].sci() == pytest.approx(steps[0].carbon_g / 100)
    assert [s["name"] for s in t.to_dict()["steps"]] == [s.name for s in steps]


def test_marks_and_the_sampling_thread_never_measure_at_once(tmp_path: Path) -> None:
    """Steps marked as fast as possible while the thread samples every 5 ms."""
    with Tracker(app="race", interval_s=0.005, config=config(tmp_path)) as t:
        before = time.process_time()
        for _ in range(150):
            busy(0.004)
            t.step()
        used = time.process_time() - before
    assert close(t.cpu_s, used, abs_s=0.1), (t.cpu_s, used)
    assert all(s.cpu_s >= 0 and s.duration_s >= 0 for s in t.steps)
    total = sum(s.duration_s for s in t.steps) + t.unmarked.duration_s
    assert math.isclose(total, t.duration_s, rel_tol=1e-9)
    assert t.duration_s <= t.result.duration_s + 0.05  # type: ignore[union-attr]


def test_figures_are_readable_while_running(tmp_path: Path) -> None:
    with Tracker(app="live", interval_s=0.2, config=config(tmp_path)) as t:
        busy(0.4)
        time.sleep(0.3)
        assert t.running and t.result is None
        assert t.cpu_s > 0.2 and t.energy_joules > 0
    assert t.result is not None and not t.running


def test_rapl_counters_are_used_when_readable(tmp_path: Path) -> None:
    tree = one_socket(tmp_path / "powercap")
    cfg = config(tmp_path, f'[sensors.rapl]\nroot = "{tmp_path}/powercap"\n')
    before = {e: tree.value(e) for e in ("intel-rapl:0", "intel-rapl:0:2")}
    # Counters move between marks (the fixture rewrites files: no reads meanwhile).
    with Tracker(app="rapl", interval_s=3600, config=cfg) as t:
        for _ in range(4):
            busy(0.2)
            tree.advance("intel-rapl:0", 5_000_000)  # 5 J on the package
            tree.advance("intel-rapl:0:2", 500_000)  # 0.5 J on DRAM
            t.step()
    spent = sum(tree.value(e) - v for e, v in before.items()) / 1e6
    assert {c["source"] for c in t.to_dict()["components"]} == {"rapl"}
    assert 0 < t.energy_joules <= spent
    assert all(s.energy_joules > 0 for s in t.steps)


def test_the_process_gpu_share_is_covered_when_nvml_is_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recorded H200 trace, with its busy process A played by this process."""
    trace = json.loads(TRACE.read_text())
    mine, other = os.getpid(), 4_000_000  # B: a process that is not ours
    text = json.dumps(trace)
    for old, new in ((trace["pids"]["A"], mine), (trace["pids"]["B"], other)):
        text = text.replace(f"[{old}, ", f"[{new}, ")
    (tmp_path / "trace.json").write_text(text)
    fake = RecordedNvml(tmp_path / "trace.json")
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    while fake.sample["t"] < 10.0:  # the moment A starts, alone on the GPU
        fake.advance()
    start_mj = fake.sample["energy_mj"]
    cfg = config(tmp_path, nvml="idle_watts = 81.0")
    with Tracker(app="gpu-job", interval_s=3600, config=cfg) as t:
        began, t0 = time.monotonic(), fake.sample["t"]
        while fake.sample["t"] < 13.0:
            fake.advance()  # the next recorded moment, reached in real time too
            time.sleep(max(0.0, fake.sample["t"] - t0 - (time.monotonic() - began)))
            t.step()
    counter_j = (fake.sample["energy_mj"] - start_mj) / 1000
    gpu_j = t.to_dict()["joules_by_kind"]["gpu"]
    assert "nvml" in {c["source"] for c in t.to_dict()["components"]}
    active_j = counter_j - 81.0 * t.duration_s  # above the idle floor: all A's doing
    assert 0.95 * active_j <= gpu_j <= counter_j, (gpu_j, active_j, counter_j)
    assert t.to_dict()["joules_by_kind"]["static"] > 0.5 * (counter_j - active_j)


def test_bad_arguments_name_the_field() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        Tracker(interval_s=0)
    with pytest.raises(ValueError, match="units"):
        Tracker(units=-1)
    t = Tracker()
    with pytest.raises(RuntimeError, match="not running"):
        t.stop()
    with pytest.raises(RuntimeError, match="while the Tracker runs"):
        t.step("early")


def test_a_tracker_cannot_be_entered_twice(tmp_path: Path) -> None:
    t = Tracker(app="once", config=config(tmp_path))
    with t, pytest.raises(RuntimeError, match="already running"):
        t.start()


def test_importing_sci_stays_light() -> None:
    code = textwrap.dedent(
        """
        import sys
        import sci
        heavy = {"agent", "sci.tracker", "pandas", "numpy", "torch", "streamlit", "plotly",
                 "pynvml", "influxdb_client", "psutil", "exporters"}
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in heavy or m in heavy)
        print("LOADED", loaded)
        tracker = sci.Tracker
        print("AFTER", "agent" in sys.modules, tracker.__module__)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    ).stdout
    assert "LOADED []" in out
    assert "AFTER False sci.tracker" in out  # the class itself imports the agent lazily too


@pytest.mark.parametrize(
    ("script", "lines"),
    [
        ("hyperparameter_search.py", ["accuracy per gram", "best:"]),
        ("finetune_full_vs_lora.py", ["full fine-tune", "low-rank", "toy"]),
        ("cached_api_client.py", ["same answers: True", "grams per answered question"]),
    ],
)
def test_examples_run(script: str, lines: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(tmp_path)}
    env.pop("SCI_AGENT_CONFIG", None)
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script)],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    for line in lines:
        assert line in done.stdout, (line, done.stdout)
    assert not (tmp_path / "var").exists()  # no state left in the working directory
