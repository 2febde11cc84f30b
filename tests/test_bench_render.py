"""bench/render_docs.py: every results file in the schema becomes a section of
docs/benchmarks.md, in the page's order with unknown names after; bad files are named."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}_under_test", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render_docs = _load("render_docs")


def result(name: str, **changes: Any) -> dict[str, Any]:
    res: dict[str, Any] = {
        "name": name,
        "title": f"Title of {name}",
        "command": f"python bench/{name}.py",
        "machine": {"platform": "Linux-x", "nproc": 2, "cpus_usable": 1, "gpu": "none"},
        "generated_utc": "2026-12-01 00:00:00",
        "sections": [
            {"heading": "", "text": f"What {name} measures."},
            {"heading": "Figures", "text": "Per run:", "table": {
                "columns": ["what", "value", "note"],
                "rows": [["a", "1,234", "x|y"], ["b", "**0.35**", ""]],
            }},
            {"heading": "", "text": "- a note under the table"},
        ],
    }  # fmt: skip
    res.update(changes)
    return res


def write(folder: Path, *results: dict[str, Any]) -> Path:
    folder.mkdir(exist_ok=True)
    for res in results:
        (folder / f"{res['name']}.json").write_text(json.dumps(res), encoding="utf-8")
    return folder


def test_known_names_follow_the_page_order_and_unknown_ones_come_after(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "results",
        *(
            result(n)
            for n in ("bench_zeta", "gpu_validation", "bench_scale", "bench_cycle", "bench_a")
        ),
    )
    page = render_docs.render_page(render_docs.load_results(folder))
    titles = [line[3:] for line in page.splitlines() if line.startswith("## ")]
    assert titles == [
        "Title of bench_cycle",
        "Title of bench_scale",
        "Title of gpu_validation",
        "Title of bench_a",
        "Title of bench_zeta",
    ]


def test_a_result_renders_intro_meta_sections_and_tables() -> None:
    text = render_docs.render_result(result("bench_new"))
    assert text.splitlines()[:8] == [
        "## Title of bench_new",
        "",
        "What bench_new measures.",
        "",
        "- date (UTC): 2026-12-01 00:00:00",
        "- command: `python bench/bench_new.py`",
        "- machine: Linux-x; nproc 2 (1 usable); gpu none",
        "",
    ]
    assert "### Figures\n\nPer run:\n\n| what | value | note |\n|---|---:|---|" in text
    assert "| a | 1,234 | x\\|y |" in text  # a | in a cell cannot end the cell
    assert text.endswith("| b | **0.35** |  |\n\n- a note under the table")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"title": None}, "'title' must be a str"),
        ({"machine": "vm"}, "'machine' must be a dict"),
        ({"sections": [{"text": "no heading"}]}, "sections[0]: 'heading' must be a str"),
        (
            {"sections": [{"heading": "T", "table": {"columns": ["a", "b"], "rows": [["1"]]}}]},
            "sections[0]: 'table.rows[0]' has 1 cells for 2 columns",
        ),
    ],
)
def test_a_file_off_the_schema_is_named_with_its_field(
    tmp_path: Path, change: dict[str, Any], field: str
) -> None:
    folder = write(tmp_path / "results", result("bench_bad", **change))
    with pytest.raises(render_docs.ResultError) as caught:
        render_docs.load_results(folder)
    assert "bench_bad.json" in str(caught.value) and field in str(caught.value)


def test_the_committed_page_is_what_the_committed_results_render() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "render_docs.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"run python bench/render_docs.py: {done.stderr}"
    page = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    gpu = page[page.index("## GPU validation") :]
    assert "has not run on real hardware yet" in gpu


def test_bench_imports_nothing_from_tests() -> None:
    for path in sorted(BENCH.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any(n == "tests" or n.startswith("tests.") for n in names), path
