"""One family of errors rendered by one handler, as ``application/problem+json``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import (
    PROBLEM_BASE,
    AppError,
    DatabaseUnavailableError,
    InternalError,
    InvalidRequestError,
)

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"


def problem_response(error: AppError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The HTTP response for an error."""
    return JSONResponse(
        error.to_problem(),
        status_code=error.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": [str(part) for part in err.get("loc", ())], "msg": str(err.get("msg", ""))}
        for err in exc.errors()
    ]


DATABASE_RETRY_AFTER_SECONDS = 5
"""What a 503 database-unavailable tells clients to wait: about a server restart's time."""


def is_database_unavailable(exc: BaseException) -> bool:
    """True for the errors of a database that cannot be reached, not of a bad statement:
    ``OperationalError`` (refused, lost, shutting down), ``InterfaceError``, any DBAPI error
    that SQLAlchemy saw drop its connection, and a pool with no connection to give."""
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeoutError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    if not is_database_unavailable(exc):  # a bug (IntegrityError, ...): an internal error
        return await _unexpected(request, exc)
    log.warning("The database is unavailable: %s", exc.__class__.__name__)
    error = DatabaseUnavailableError(
        "The check records cannot be reached right now (the database is down or "
        "restarting). The service reconnects by itself: retry after a few seconds.",
        retry_after=DATABASE_RETRY_AFTER_SECONDS,
    )
    return await _app_error(request, error)


async def _app_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    # A problem that knows when to come back says so in the header clients read.
    retry_after = exc.extensions.get("retry_after")
    headers = {"Retry-After": str(retry_after)} if isinstance(retry_after, int) else None
    return problem_response(exc, headers=headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _validation_errors(exc)
    summary = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:5])
    return problem_response(
        InvalidRequestError(f"The request is invalid: {summary}", errors=errors)
    )


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    body = {
        "type": PROBLEM_BASE + "http-" + str(exc.status_code),
        "title": str(exc.detail) if exc.status_code < 500 else "Server error",
        "status": exc.status_code,
        "detail": str(exc.detail),
    }
    return JSONResponse(
        body,
        status_code=exc.status_code,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=getattr(exc, "headers", None),
    )


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return problem_response(InternalError("An unexpected error occurred; it was logged."))


def install_problem_handlers(app: FastAPI) -> None:
    """Render every error of the app as a problem."""
    app.add_exception_handler(AppError, _app_error)
    # DBAPIError is the base of OperationalError and InterfaceError; PoolTimeoutError is not.
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(PoolTimeoutError, _database_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
