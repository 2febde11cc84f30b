"""No stage reaches up: each package imports only from the layers below it.

Read from the source with ``ast``, so a new import that breaks the pipeline's direction
fails here before anyone has to find it in a review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Modules a package must not import (exactly, or anything under them).
FORBIDDEN = {
    # sinks sit below the agent's stages: records, the HTTP server and sci only
    "exporters": ("agent.units", "agent.sensors", "agent.render", "agent.cli", "agent.runtime"),
    # the generic server knows no route, the JSON form no renderer
    "agent/httpserver.py": ("agent.units", "exporters"),
    "agent/records_json.py": ("agent.render", "agent.cli", "exporters"),
    "agent/records.py": ("agent", "exporters", "sci"),
}


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, by its full dotted name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def files(where: str) -> list[Path]:
    path = ROOT / where
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


@pytest.mark.parametrize("where", sorted(FORBIDDEN))
def test_no_stage_imports_from_the_one_above(where: str) -> None:
    bad = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files(where)
        for name in sorted(imported_modules(path))
        for banned in FORBIDDEN[where]
        if name == banned or name.startswith(banned + ".")
    ]
    assert not bad, "\n".join(bad)


def test_sensor_health_has_one_home() -> None:
    import agent.records
    import agent.sensors
    import agent.sensors.base

    assert agent.sensors.base.SensorHealth is agent.records.SensorHealth  # used, not redefined
    assert "SensorHealth" not in agent.sensors.__all__


def test_the_units_api_is_the_generic_server_plus_routes() -> None:
    from agent.httpserver import HttpServer
    from agent.units.http_api import LocalApi

    assert issubclass(LocalApi, HttpServer)
    source = (ROOT / "agent/units/http_api.py").read_text(encoding="utf-8")
    for plumbing in ("socketserver", "selectors", "BaseHTTPRequestHandler", "class _Pool"):
        assert plumbing not in source
