"""``bench/gpu_validation.py --replay``: the recorded H200 trace meets both targets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRACE = ROOT / "tests" / "fixtures" / "nvml" / "nvml-two-process-trace.json"


def replay(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_validation.py"), "--replay", str(TRACE), *extra],
        capture_output=True,
        text=True,
        env={**os.environ, "OUT": str(tmp_path / "out")},
        timeout=120,
        check=False,
    )


def test_replay_meets_the_targets_and_writes_the_json(tmp_path: Path) -> None:
    done = replay(tmp_path, "--json", "--results", str(tmp_path / "results"))
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    a = figures["analysis"]
    assert [t["status"] for t in a["targets"]] == ["PASS", "PASS"]
    assert abs(a["rel_error_all_parts"]) < 1e-9  # exact by construction
    assert a["single_process"]["A"]["share"] >= 0.95
    assert a["shared_j"]["A"] > a["shared_j"]["B"] > 0
    assert a["tails"] and sum(p["unattributed_j"] for p in a["tails"][-1]) > 0
    assert 75 < a["idle_baseline_w"] < 85
    written = json.loads((tmp_path / "out" / "gpu_validation.json").read_text(encoding="utf-8"))
    assert written["mode"] == "replay"
    result = json.loads((tmp_path / "results" / "gpu_validation.json").read_text("utf-8"))
    assert result["name"] == "gpu_validation"
    assert "has not run on real hardware yet" in result["sections"][0]["text"]
    targets = next(s for s in result["sections"] if s["heading"] == "Targets")
    assert [row[-1] for row in targets["table"]["rows"]] == ["**PASS**", "**PASS**"]
    # $OUT set (the device machine): the result comes back in $OUT/results/ too
    out = json.loads((tmp_path / "out" / "results" / "gpu_validation.json").read_text("utf-8"))
    assert out["sections"] == result["sections"]


def test_a_replay_leaves_the_result_of_a_real_run_alone(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    real = {
        "name": "gpu_validation",
        "title": "GPU validation",
        "command": "python bench/gpu_validation.py",
        "machine": {"gpu": "H200"},
        "generated_utc": "2026-12-01 00:00:00",
        "sections": [{"heading": "", "text": "- mode: real; GPU: NVIDIA H200"}],
    }
    (results / "gpu_validation.json").write_text(json.dumps(real), encoding="utf-8")
    done = replay(tmp_path, "--results", str(results))
    assert done.returncode == 0, done.stderr
    assert json.loads((results / "gpu_validation.json").read_text("utf-8")) == real
    assert "holds a real run" in done.stderr
    assert "## GPU validation" in done.stdout  # the replay's figures are still printed
