"""Errors as RFC 9457 problem details: ``application/problem+json`` with a status, a title
and a one-line ``detail`` saying what is wrong and what to do, never a stack trace.

autonomic's own errors map to statuses here, in one place: a run that does not exist (or
belongs to another tenant) is 404, a request that cannot be honoured as asked is 400 or
409, a store that cannot answer is 503.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from autonomic.errors import (
    ApprovalRefused,
    AutonomicError,
    ConfigError,
    LeaseLost,
    ReplayDivergence,
    RunEnded,
    RunNotFound,
    StoreError,
)

__all__ = ["PROBLEM_RESPONSES", "Problem", "install_problem_handlers", "problem_response"]

log = logging.getLogger("autonomic.server")

MEDIA_TYPE = "application/problem+json"

_PROBLEM_SCHEMA = {
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
    },
    "required": ["title", "status", "detail"],
}
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": title, "content": {MEDIA_TYPE: {"schema": _PROBLEM_SCHEMA}}}
    for status, title in (
        (400, "Bad request"),
        (401, "Missing or refused API key"),
        (403, "The key lacks the scope"),
        (404, "No such run (for this key's tenant)"),
        (409, "Conflict with the run's state"),
        (413, "Request too large"),
        (422, "Invalid request"),
        (429, "Rate limited"),
    )
}
"""The error responses every endpoint may give, for the OpenAPI document."""


class Problem(Exception):
    """Raise to answer with a problem document."""

    def __init__(
        self, status: int, title: str, detail: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail
        self.headers = dict(headers or {})


def problem_response(
    status: int, title: str, detail: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"type": "about:blank", "title": title, "status": status, "detail": detail},
        status_code=status,
        media_type=MEDIA_TYPE,
        headers=dict(headers or {}),
    )


def _status_of(e: AutonomicError) -> tuple[int, str]:
    if isinstance(e, RunNotFound):
        return 404, "Not Found"
    if isinstance(e, ApprovalRefused | RunEnded | LeaseLost):
        return 409, "Conflict"
    if isinstance(e, ConfigError | ReplayDivergence):
        return 400, "Bad Request"
    if isinstance(e, StoreError):
        return 503, "Service Unavailable"
    return 500, "Internal Server Error"


def _validation_detail(e: RequestValidationError) -> str:
    parts = []
    for error in e.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        message = error.get("msg", "invalid")
        if error.get("type") == "json_invalid":
            message = f"not valid JSON ({error.get('ctx', {}).get('error', 'cannot parse')})"
        elif error.get("type") == "model_attributes_type" and where == "body":
            message = "must be a JSON object, sent with 'Content-Type: application/json'"
        parts.append(f"{where}: {message}")
    return "; ".join(parts) or "the request is not valid"


def install_problem_handlers(app: FastAPI) -> None:
    async def on_problem(request: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, Problem)
        return problem_response(e.status, e.title, e.detail, e.headers)

    async def on_http(request: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, StarletteHTTPException)
        return problem_response(
            e.status_code, _title(e.status_code), str(e.detail), getattr(e, "headers", None)
        )

    async def on_validation(request: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, RequestValidationError)
        return problem_response(422, "Unprocessable Content", _validation_detail(e))

    async def on_autonomic(request: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, AutonomicError)
        status, title = _status_of(e)
        if status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, e)
        return problem_response(status, title, str(e).splitlines()[0] if str(e) else title)

    async def on_crash(request: Request, e: Exception) -> JSONResponse:
        log.exception("%s %s crashed", request.method, request.url.path)
        return problem_response(500, "Internal Server Error", "the server failed; its log says why")

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(AutonomicError, on_autonomic)
    app.add_exception_handler(Exception, on_crash)


def _title(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
