"""Write docs/benchmarks.md from the results files in bench/results/.

Each benchmark writes ``bench/results/<name>.json``:

    {"name": str, "title": str, "command": str, "machine": {...free-form...},
     "generated_utc": str,
     "sections": [{"heading": str, "text": "markdown prose (optional)",
                   "table": {"columns": [str, ...], "rows": [[cell, ...], ...]} (optional)}]}

This renders every such file, in the order of ``ORDER`` and then any other name
alphabetically, as one ``##`` section each: its title; a first section whose heading is
"" introduces it (what it measures, its targets); then date, command and machine; then
the other sections as ``###`` (a section whose heading is "" continues the one above).

Usage: ``python bench/render_docs.py [--results DIR] [--output PATH] [--check]``
(``--check``: exit 1 when the page on disk differs from what the results give).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS_DIR = HERE / "results"
OUTPUT = ROOT / "docs" / "benchmarks.md"

#: The page's order; results with other names follow, alphabetically.
ORDER = (
    "bench_cycle",
    "bench_scale",
    "bench_footprint",
    "bench_accuracy",
    "bench_trust",
    "bench_alerts",
    "bench_tracker",
    "bench_export",
    "bench_dashboard",
    "gpu_validation",
)

INTRO = (
    "Written by `make bench` (`python bench/run_all.py`): each script under `bench/` "
    "prints its figures and writes them to `bench/results/<name>.json`, and "
    "`bench/render_docs.py` renders every results file into this page (`python "
    "bench/render_docs.py` re-renders it without running anything). Each section gives "
    "the date, command and machine of its own run; none is a timed test. The development "
    "machine is a shared, noisy 2-core VM: read the ratios measured side by side in the "
    "same run rather than the absolute times."
)

REQUIRED = {"name": str, "title": str, "command": str, "machine": dict, "generated_utc": str}
_NUMERIC = re.compile(r"^[*_`\s]*[-+−~≈]?\s*[\d.,]+")


class ResultError(ValueError):
    """A results file that does not follow the schema; the message names the field."""


def check(res: Any, where: str) -> dict[str, Any]:
    """``res`` if it follows the schema, else ResultError naming the file and field."""
    if not isinstance(res, dict):
        raise ResultError(f"{where}: a results file holds one JSON object")
    for key, kind in REQUIRED.items():
        if not isinstance(res.get(key), kind):
            raise ResultError(f"{where}: '{key}' must be a {kind.__name__}")
    sections = res.get("sections")
    if not isinstance(sections, list):
        raise ResultError(f"{where}: 'sections' must be a list")
    for i, s in enumerate(sections):
        at = f"{where}: sections[{i}]"
        if not isinstance(s, dict) or not isinstance(s.get("heading"), str):
            raise ResultError(f"{at}: 'heading' must be a str")
        if not isinstance(s.get("text", ""), str):
            raise ResultError(f"{at}: 'text' must be a str")
        t = s.get("table")
        if t is not None:
            if not isinstance(t, dict) or not isinstance(t.get("columns"), list):
                raise ResultError(f"{at}: 'table.columns' must be a list")
            rows = t.get("rows")
            if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
                raise ResultError(f"{at}: 'table.rows' must be a list of lists")
            for j, r in enumerate(rows):
                if len(r) != len(t["columns"]):
                    raise ResultError(
                        f"{at}: 'table.rows[{j}]' has {len(r)} cells for "
                        f"{len(t['columns'])} columns"
                    )
    return res


def load_results(folder: Path) -> list[dict[str, Any]]:
    """Every ``*.json`` in ``folder``, checked, in page order."""
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ResultError(f"{path}: not JSON ({exc})") from None
        found.append(check(data, str(path)))
    return sorted(found, key=_page_key)


def _page_key(res: Mapping[str, Any]) -> tuple[int, str]:
    name = str(res["name"])
    return (ORDER.index(name), "") if name in ORDER else (len(ORDER), name)


def machine_text(m: Mapping[str, Any]) -> str:
    """One line for the machine: the keys ``machine_info`` gives read naturally, any
    other key as ``key value``."""
    parts: list[str] = [str(m[k]) for k in ("platform", "cpu_model") if m.get(k)]
    if "nproc" in m:
        usable = f" ({m['cpus_usable']} usable)" if "cpus_usable" in m else ""
        parts.append(f"nproc {m['nproc']}{usable}")
    if "memory_gb" in m:
        parts.append(f"{m['memory_gb']} GiB RAM")
    versions = [f"{k} {m[k]}" for k in ("python", "psutil") if k in m]
    if versions:
        parts.append(", ".join(versions))
    known = {"platform", "cpu_model", "nproc", "cpus_usable", "memory_gb", "python", "psutil"}
    parts += [f"{k.replace('_', ' ')} {v}" for k, v in m.items() if k not in known]
    return "; ".join(parts)


def _cell(value: Any) -> str:
    return str(value).replace("\n", " ").replace("|", "\\|")


def table_lines(columns: list[Any], rows: list[list[Any]]) -> list[str]:
    """A Markdown table; a column whose cells are all numbers (or empty) is right-aligned."""
    cells = [[_cell(c) for c in r] for r in rows]

    def numeric(i: int) -> bool:
        column = [r[i] for r in cells if r[i].strip()]
        return bool(column) and all(_NUMERIC.match(c) for c in column)

    align = ["---:" if numeric(i) else "---" for i in range(len(columns))]
    return [
        "| " + " | ".join(_cell(c) for c in columns) + " |",
        "|" + "|".join(align) + "|",
        *("| " + " | ".join(r) + " |" for r in cells),
    ]


def render_result(res: Mapping[str, Any], level: int = 2) -> str:
    """One result as Markdown: title at ``level``, introduction, date, command, machine,
    sections."""
    sections = list(res["sections"])
    lines = [f"{'#' * level} {res['title']}"]
    if sections and not sections[0]["heading"] and "table" not in sections[0]:
        lines += ["", sections.pop(0).get("text", "")]
    lines += ["", f"- date (UTC): {res['generated_utc']}", f"- command: `{res['command']}`"]
    machine = machine_text(res["machine"])
    if machine:
        lines.append(f"- machine: {machine}")
    for s in sections:
        if s["heading"]:
            lines += ["", f"{'#' * (level + 1)} {s['heading']}"]
        if s.get("text"):
            lines += ["", s["text"]]
        if s.get("table") is not None:
            lines += ["", *table_lines(s["table"]["columns"], s["table"]["rows"])]
    return "\n".join(lines)


def render_page(results: Iterable[Mapping[str, Any]]) -> str:
    parts = ["# Benchmarks", "", INTRO]
    for res in results:
        parts += ["", render_result(res)]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--results", default=str(RESULTS_DIR), help="folder of results files")
    parser.add_argument("--output", default=str(OUTPUT), help="the page to write")
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    try:
        page = render_page(load_results(Path(args.results)))
    except ResultError as exc:
        print(f"render_docs: {exc}", file=sys.stderr)
        return 2
    out = Path(args.output)
    if args.check:
        same = out.exists() and out.read_text(encoding="utf-8") == page
        print(f"{out} is {'up to date' if same else 'out of date'}", file=sys.stderr)
        return 0 if same else 1
    out.write_text(page, encoding="utf-8")
    print(f"[bench] wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
