"""The local API's units routes: ``POST /v1/units`` and ``GET /healthz``.

``LocalApi`` is the agent's HTTP server (``agent.httpserver``: pool, deadlines, auth,
JSON errors) with these routes added; more routes join the table in ``__init__``.

Status codes of ``POST /v1/units`` besides the server's own (see ``agent.httpserver``):

- 202 ``{"accepted": N}``: the reports were counted. ``POST /v1/calls`` (remote AI
  calls, see docs/ai-calls.md) answers and refuses exactly like ``/v1/units``.
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
from agent.remote import calls as remote_calls  # a module: agent.remote imports agent.units
from agent.units.counter import UnitCounter, UnitError, kind_of

REPORT_FIELDS = ("app", "unit", "count")


class LocalApi(HttpServer):
    """The local HTTP endpoint: ``POST /v1/units`` and ``GET /healthz``."""

    def __init__(
        self,
        config: HttpConfig,
        counter: UnitCounter,
        calls: remote_calls.CallLedger | None = None,
    ) -> None:
        super().__init__(config)
        self.counter = counter
        self.calls = calls  # remote AI calls (``POST /v1/calls``), when the agent counts them
        self.add_route("GET", "/healthz", self._healthz, auth=False)
        self.add_route("POST", "/v1/units", self._post_units)
        if calls is not None:
            self.add_route("POST", "/v1/calls", self._post_calls)

    # -- handlers ---------------------------------------------------------------

    def _healthz(self, request: Request) -> Response:
        return json_response(200, {"status": "ok"})

    def _post_units(self, request: Request) -> Response:
        items, batch = _reports(request.json())
        reports = [_report(item, i if batch else None) for i, item in enumerate(items)]
        try:
            self.counter.add_many(reports)
        except UnitError as exc:
            status = 400 if exc.field == "count" else 422
            raise _refused(exc, status, batch) from None
        return json_response(202, {"accepted": len(reports)})

    def _post_calls(self, request: Request) -> Response:
        """``POST /v1/calls``: remote AI calls, checked like units (all or nothing)."""
        if self.calls is None:  # pragma: no cover - the route exists only with a ledger
            raise HttpError(404, "no such path: /v1/calls")
        items, batch = _reports(request.json())
        for i, item in enumerate(items):
            index = i if batch else None
            _shape(item, index, remote_calls.REQUIRED_FIELDS, remote_calls.OPTIONAL_FIELDS)
        try:
            accepted = self.calls.add_many(items)
        except UnitError as exc:
            status = 422 if isinstance(exc, remote_calls.UnknownApp) else 400
            raise _refused(exc, status, batch) from None
        return json_response(202, {"accepted": accepted})


def _reports(payload: object) -> tuple[list[Any], bool]:
    """A body's reports, and whether they came as a batch (an array)."""
    if isinstance(payload, list):
        return payload, True
    if isinstance(payload, dict):
        return [payload], False
    raise HttpError(
        400, f"body must be a JSON object or an array of objects, got {kind_of(payload)}"
    )


def _refused(exc: UnitError, status: int, batch: bool) -> HttpError:
    """A report's value refused: the error names its field (and its index in a batch)."""
    index = exc.index if batch else None
    where = f"item {index}: " if index is not None else ""
    return HttpError(status, where + exc.message, exc.field, index=index)


def _shape(
    item: object, index: int | None, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Check that one report is an object with the ``required`` fields and no unknown one."""
    where = f"item {index}: " if index is not None else ""
    if not isinstance(item, dict):
        raise HttpError(
            400, f"{where}a report must be a JSON object, got {kind_of(item)}", index=index
        )
    for key in required:
        if key not in item:
            raise HttpError(400, f"{where}missing field {key!r}", key, index=index)
    for key in item:
        if key not in required and key not in optional:
            raise HttpError(
                400,
                f"{where}unknown field {key[:64]!r} (expected {', '.join(required + optional)})",
                key[:64],
                index=index,
            )
    return item


def _report(item: object, index: int | None) -> tuple[str, str, Any]:
    """Check the shape of one report; its values are checked by the counter."""
    where = f"item {index}: " if index is not None else ""
    item = _shape(item, index, REPORT_FIELDS)
    for key in ("app", "unit"):
        if not isinstance(item[key], str):
            raise HttpError(
                400, f"{where}{key} must be a string, got {kind_of(item[key])}", key, index=index
            )
    return item["app"], item["unit"], item["count"]
