"""``bench/gpu_validation.py --replay``: the recorded H200 trace meets both targets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRACE = ROOT / "tests" / "fixtures" / "nvml" / "nvml-two-process-trace.json"


def test_replay_meets_the_targets_and_writes_the_json(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "gpu_validation.py"),
            "--replay",
            str(TRACE),
            "--json",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OUT": str(tmp_path)},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    a = figures["analysis"]
    assert [t["status"] for t in a["targets"]] == ["PASS", "PASS"]
    assert abs(a["rel_error_all_parts"]) < 1e-9  # exact by construction
    assert a["single_process"]["A"]["share"] >= 0.95
    assert a["shared_j"]["A"] > a["shared_j"]["B"] > 0
    assert a["tails"] and sum(p["unattributed_j"] for p in a["tails"][-1]) > 0
    assert 75 < a["idle_baseline_w"] < 85
    written = json.loads((tmp_path / "gpu_validation.json").read_text(encoding="utf-8"))
    assert written["mode"] == "replay"
