"""The local API's units routes: ``POST /v1/units`` and ``GET /healthz``.

``LocalApi`` is the agent's HTTP server (``agent.httpserver``: pool, deadlines, auth,
JSON errors) with these routes added; more routes join the table in ``__init__``.

Status codes of ``POST /v1/units`` besides the server's own (see ``agent.httpserver``):

- 202 ``{"accepted": N}``: the reports were counted.
- 400 the body is not UTF-8 JSON, has the wrong shape, a field has the wrong type, a
  field is missing or unknown, or a count is negative, not finite or too large.
- 422 a well-formed report this agent's configuration refuses: unknown app, an app
  without a unit, or the wrong unit for the app.

Errors name the ``field`` at fault and, for a batch, the ``index`` of the report. A
rejected request counts nothing, not even the valid reports of its batch.
"""

from __future__ import annotations

from typing import Any

from agent.config import HttpConfig
from agent.httpserver import HttpError, HttpServer, Request, Response, json_response
from agent.units.counter import UnitCounter, UnitError, kind_of

REPORT_FIELDS = ("app", "unit", "count")


class LocalApi(HttpServer):
    """The local HTTP endpoint: ``POST /v1/units`` and ``GET /healthz``."""

    def __init__(self, config: HttpConfig, counter: UnitCounter) -> None:
        super().__init__(config)
        self.counter = counter
        self.add_route("GET", "/healthz", self._healthz, auth=False)
        self.add_route("POST", "/v1/units", self._post_units)

    # -- handlers ---------------------------------------------------------------

    def _healthz(self, request: Request) -> Response:
        return json_response(200, {"status": "ok"})

    def _post_units(self, request: Request) -> Response:
        payload = request.json()
        batch = isinstance(payload, list)
        if isinstance(payload, list):
            items: list[Any] = payload
        elif isinstance(payload, dict):
            items = [payload]
        else:
            raise HttpError(
                400, f"body must be a JSON object or an array of objects, got {kind_of(payload)}"
            )
        reports = [_report(item, i if batch else None) for i, item in enumerate(items)]
        try:
            self.counter.add_many(reports)
        except UnitError as exc:
            index = exc.index if batch else None
            where = f"item {index}: " if index is not None else ""
            status = 400 if exc.field == "count" else 422
            raise HttpError(status, where + exc.message, exc.field, index=index) from None
        return json_response(202, {"accepted": len(reports)})


def _report(item: object, index: int | None) -> tuple[str, str, Any]:
    """Check the shape of one report; its values are checked by the counter."""
    where = f"item {index}: " if index is not None else ""
    if not isinstance(item, dict):
        raise HttpError(
            400, f"{where}a report must be a JSON object, got {kind_of(item)}", index=index
        )
    for key in REPORT_FIELDS:
        if key not in item:
            raise HttpError(400, f"{where}missing field {key!r}", key, index=index)
    for key in item:
        if key not in REPORT_FIELDS:
            raise HttpError(
                400,
                f"{where}unknown field {key[:64]!r} (expected app, unit, count)",
                key[:64],
                index=index,
            )
    for key in ("app", "unit"):
        if not isinstance(item[key], str):
            raise HttpError(
                400, f"{where}{key} must be a string, got {kind_of(item[key])}", key, index=index
            )
    return item["app"], item["unit"], item["count"]
