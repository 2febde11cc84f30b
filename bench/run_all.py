"""Run every benchmark, then write docs/benchmarks.md from their results files.

Usage: ``python bench/run_all.py [--quick] [--only NAME ...] [--results DIR] [--output PATH]``.
Each
script (every ``bench/bench_*.py``, then ``bench/gpu_validation.py``) prints its figures
and writes ``bench/results/<script>.json``; ``bench/render_docs.py`` then renders every
results file into the page. NAME is a script's name without ``bench_`` (``cycle``,
``export``; ``gpu`` for the GPU validation). GPU validation runs on a real GPU when one
is present, else on the recorded H200 trace. A benchmark that fails keeps its last
committed results file, so the page still shows its previous figures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from render_docs import ORDER, OUTPUT, RESULTS_DIR
from render_docs import main as render

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TRACE = "tests/fixtures/nvml/nvml-two-process-trace.json"
EXIT_TARGET_MISSED = 1  # the figures still count
EXIT_UNAVAILABLE = 2  # gpu_validation: no GPU or torch here


def scripts() -> dict[str, Path]:
    """Short name → script, in the page's order, then any other benchmark by name."""
    found = {p.stem: p for p in HERE.glob("bench_*.py")}
    found["gpu_validation"] = HERE / "gpu_validation.py"
    ordered = [n for n in ORDER if n in found] + sorted(set(found) - set(ORDER))
    return {short_name(n): found[n] for n in ordered}


def short_name(stem: str) -> str:
    return "gpu" if stem == "gpu_validation" else stem.removeprefix("bench_")


def run(name: str, script: Path, quick: bool, results: str) -> int:
    """Run one benchmark (its Markdown goes to this terminal); its exit status. The results
    folder goes by ``BENCH_RESULTS``, the default of every script's ``--results``."""
    env = {**os.environ, "BENCH_RESULTS": results}
    argv = [sys.executable, str(script)]
    if name == "dashboard" and quick:  # a small data set of its own (the big one is kept)
        argv += ["--days", "0.1", "--hosts", "2", "--repeat", "1"]
        argv += ["--workdir", str(ROOT / "var" / "bench-dashboard-quick")]
    elif quick:
        argv.append("--quick")
    code = subprocess.run(argv, cwd=ROOT, env=env, check=False).returncode
    if name == "gpu" and code == EXIT_UNAVAILABLE:  # no GPU or torch here: the recording
        argv = [sys.executable, str(script), "--replay", TRACE]
        code = subprocess.run(argv, cwd=ROOT, env=env, check=False).returncode
    return code


def main(argv: list[str] | None = None) -> int:
    found = scripts()
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke runs")
    parser.add_argument("--only", nargs="*", choices=list(found))
    parser.add_argument("--results", default=str(RESULTS_DIR), help="folder of results files")
    parser.add_argument("--output", default=str(OUTPUT), help="the page to write")
    args = parser.parse_args(argv)
    status = 0
    for name, script in found.items():
        if args.only and name not in args.only:
            continue
        print(f"[bench] {name} …", file=sys.stderr, flush=True)
        started = time.monotonic()
        code = run(name, script, args.quick, args.results)
        if code not in (0, EXIT_TARGET_MISSED):
            status = 1
        print(f"[bench] {name}: {time.monotonic() - started:.0f} s, exit {code}", file=sys.stderr)
    rendered = render(["--results", args.results, "--output", args.output])
    return max(status, rendered)


if __name__ == "__main__":
    sys.exit(main())
