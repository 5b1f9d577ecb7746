"""Errors at the HTTP edge: one table from runstream's exceptions to an HTTP status and MLflow's
error body ``{"error_code": ..., "message": ...}``, and the handlers that apply it.

MLflow clients read ``error_code``, not the status (``get_experiment_by_name`` returns None only
for RESOURCE_DOES_NOT_EXIST), and retry 5xx for minutes, so bad input must always be a 4xx:
request-validation errors become 400 INVALID_PARAMETER_VALUE, not FastAPI's 422.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from runstream import errors
from runstream.api.responses import JSONResponse

log = logging.getLogger(__name__)

# Most specific first: the first class an exception is an instance of decides.
ERROR_TABLE: tuple[tuple[type[errors.RunstreamError], int, str], ...] = (
    (errors.AlreadyExists, 400, "RESOURCE_ALREADY_EXISTS"),
    (errors.InvalidFilter, 400, "INVALID_PARAMETER_VALUE"),
    (errors.InvalidInput, 400, "INVALID_PARAMETER_VALUE"),
    (errors.ConfigError, 400, "INVALID_PARAMETER_VALUE"),
    (errors.Conflict, 400, "INVALID_PARAMETER_VALUE"),
    (errors.NotFound, 404, "RESOURCE_DOES_NOT_EXIST"),
    (errors.NotReady, 503, "TEMPORARILY_UNAVAILABLE"),
    (errors.LogError, 503, "TEMPORARILY_UNAVAILABLE"),
    (errors.RunstreamError, 500, "INTERNAL_ERROR"),
)

# Starlette's own errors (no route, wrong method) in the same shape.
_HTTP_CODES = {404: "ENDPOINT_NOT_FOUND", 405: "BAD_REQUEST"}


def status_and_code(exc: errors.RunstreamError) -> tuple[int, str]:
    """The HTTP status and MLflow error code of one of our exceptions."""
    for cls, status, code in ERROR_TABLE:
        if isinstance(exc, cls):
            return status, code
    return 500, "INTERNAL_ERROR"  # pragma: no cover - RunstreamError closes the table


def error_response(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error_code": code, "message": message, **extra}, status_code=status)


def _runstream_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.RunstreamError)
    status, code = status_and_code(exc)
    if status >= 500:
        log.error("%s: %s", type(exc).__name__, exc)
    extra: dict[str, Any] = {}
    if isinstance(exc, errors.InvalidFilter):
        # Where the filter went wrong, for a UI to point at.
        extra["details"] = {
            "position": exc.position, "expected": exc.expected, "clause_index": exc.clause_index
        }
    return error_response(status, code, str(exc), **extra)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        where = ".".join(loc) or "request body"
        if err.get("type") == "missing":
            parts.append(f"Missing value for required parameter '{where}'.")
        else:
            parts.append(f"Invalid value for parameter '{where}': {err.get('msg')}.")
    return " ".join(parts) or "Invalid request."


def _request_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(400, "INVALID_PARAMETER_VALUE", _validation_message(exc))


def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "BAD_REQUEST" if exc.status_code < 500 else "INTERNAL_ERROR")
    return JSONResponse(
        {"error_code": code, "message": str(exc.detail)},
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


def _unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "INTERNAL_ERROR", f"internal error: {type(exc).__name__}")


def install_error_handlers(app: FastAPI) -> None:
    """Route every error of ``app`` through the table above."""
    app.add_exception_handler(errors.RunstreamError, _runstream_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
