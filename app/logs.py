"""Logs an operator can search: text by default, JSON lines with ``CKPT_COMPAT_LOG_FORMAT=json``.

Every record carries the request id (``X-Request-ID``, taken from the request or made up, and
sent back) and the check id it concerns, from context variables, so one request's lines and
one check's lines (start, finish with verdict and duration, failure with its problem type)
can be followed across the web process and the worker. JSON lines come from
python-json-logger, a maintained formatter, not a hand-written one.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Literal

from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import Response

LogFormat = Literal["text", "json"]

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
check_id: ContextVar[str | None] = ContextVar("check_id", default=None)

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
REQUEST_ID_HEADER = "X-Request-ID"
_access = logging.getLogger("ckpt_compat.access")
_TEXT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s %(check_id)s] %(message)s"
_JSON = "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(check_id)s"


class ContextIds(logging.Filter):
    """Adds ``request_id`` and ``check_id`` to every record (``-`` when there is none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get() or "-"
        if not hasattr(record, "check_id"):
            record.check_id = check_id.get() or "-"
        return True


def formatter(fmt: LogFormat) -> logging.Formatter:
    """The formatter of a log format."""
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        return JsonFormatter(_JSON, rename_fields={"asctime": "time", "levelname": "level"})
    return logging.Formatter(_TEXT)


def configure_logging(fmt: LogFormat, level: int | str = logging.INFO) -> None:
    """One handler on the root logger, with the context ids; uvicorn's loggers propagate to it."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(fmt))
    handler.addFilter(ContextIds())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


def uvicorn_log_config(fmt: LogFormat) -> dict[str, object]:
    """uvicorn's ``log_config``: its loggers through our handler and format."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"ids": {"()": ContextIds}},
        "formatters": {
            "main": {"()": formatter, "fmt": fmt},
        },
        "handlers": {
            "main": {"class": "logging.StreamHandler", "formatter": "main", "filters": ["ids"]}
        },
        "root": {"handlers": ["main"], "level": "INFO"},
        "loggers": {
            "uvicorn": {"level": "INFO"},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"level": "INFO"},
        },
    }


def route_template(request: Request) -> str:
    """The matched route's path template (``/v1/checks/{check_id}``), never the ids in it."""
    return getattr(request.scope.get("route"), "path", None) or "unmatched"


class RequestIds(BaseHTTPMiddleware):
    """Takes a well-formed ``X-Request-ID`` or makes one; logs see it; the answer carries it.

    It also logs one line per request (method, route template, status, duration) while the
    id is set: uvicorn's own access line is written after the app returned, without it."""

    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        value = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        token = request_id.set(value)
        started = time.monotonic()
        try:
            response = await call_next(request)
            route = route_template(request)
            _access.info(
                "%s %s %d",
                request.method,
                route,
                response.status_code,
                extra={
                    "event": "http.request",
                    "method": request.method,
                    "route": route,
                    "status": response.status_code,
                    "duration_seconds": round(time.monotonic() - started, 4),
                },
            )
        finally:
            request_id.reset(token)
        response.headers[REQUEST_ID_HEADER] = value
        return response
