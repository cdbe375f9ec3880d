"""Routes of the pages: ``/`` (upload and list), the key form, and the report page.

Pages answer HTML for every outcome a person can meet (sign in, not ready yet, not found),
and see exactly what the API shows the same caller: another principal's check is the same
"not found" as an unknown id.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from app.api.auth import identify
from app.api.deps import ServicesDep
from app.api.key_cookie import (
    clear_key_cookie,
    cookie_key,
    csrf_token,
    local_path,
    same_origin_form,
    set_key_cookie,
)
from app.api.keys import OPEN_KEYRING, Keyring
from app.api.routes.checks import _finished_record
from app.errors import AppError, CheckNotFoundError, ReportNotReadyError
from app.web.render import render_page
from app.web.report_page import page_context, render_report

router = APIRouter(include_in_schema=False)

_CHECKS_ON_PAGE = 50


def _sign_in(
    request: Request, *, error: str = "", status_code: int = 401, target: str | None = None
) -> HTMLResponse:
    """The key form; after it the browser goes back to ``target`` (by default this page)."""
    if target is None:
        query = f"?{request.url.query}" if request.url.query else ""
        target = local_path(request.url.path + query)
    return render_page(
        "key.html",
        status_code=status_code,
        title="API key",
        error=error,
        next=target,
        **page_context(request),
    )


def _problem_page(request: Request, error: AppError) -> HTMLResponse:
    problem = error.to_problem()
    refresh = 2 if isinstance(error, ReportNotReadyError) else 0
    return render_page(
        "problem.html",
        status_code=error.status,
        title=str(problem.get("title", "Error")),
        problem=problem,
        refresh=refresh,
        **page_context(request),
    )


@router.get("/", response_class=HTMLResponse)
def index_page(request: Request, services: ServicesDep) -> HTMLResponse:
    """Upload a checkpoint and see the caller's checks, newest first."""
    principal = identify(request)
    if principal is None:
        if cookie_key(request) is None:
            return _sign_in(request, status_code=200)
        return _sign_in(request, error="The key this browser kept is no longer valid.")
    records, total = services.repository.page(limit=_CHECKS_ON_PAGE, offset=0, principal=principal)
    checks = [
        {
            "id": r.id,
            "created": r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            "filename": r.filename,
            "architecture": r.architecture,
            "status": r.status.value,
            "error": (r.error or {}).get("title", ""),
            "report": f"/v1/checks/{r.id}/report.html",
            "self": f"/v1/checks/{r.id}",
        }
        for r in records
    ]
    return render_page(
        "index.html", title="Checks", checks=checks, total=total, **page_context(request)
    )


@router.get("/v1/checks/{check_id}/report.html", response_class=HTMLResponse)
def report_page(check_id: str, request: Request, services: ServicesDep) -> HTMLResponse:
    """The report of a finished check, for people."""
    principal = identify(request)
    if principal is None:
        return _sign_in(request)
    try:
        record = _finished_record(services, check_id, principal)
    except AppError as error:
        return _problem_page(request, error)
    data = services.results.read_report(check_id)
    if data is None:
        gone = CheckNotFoundError(f"The report of check {check_id[:80]!r} is no longer stored.")
        return _problem_page(request, gone)
    return render_report(request, record, data)


@router.post("/ui/key")
async def take_key(
    request: Request, key: Annotated[str, Form()], next: Annotated[str, Form()] = "/"
) -> Response:
    """Check the key once and keep it in an HttpOnly, SameSite=Strict cookie."""
    target = local_path(next)
    if not same_origin_form(request):
        error = "Sign in from this site's own page."
        return _sign_in(request, error=error, status_code=403, target=target)
    keyring: Keyring = getattr(request.app.state, "keyring", OPEN_KEYRING)
    principal = await run_in_threadpool(keyring.identify, key) if keyring.enabled else None
    if keyring.enabled and principal is None:
        return _sign_in(request, error="That key is not valid.", target=target)
    response = RedirectResponse(target, status_code=303)
    if keyring.enabled:
        set_key_cookie(response, request, key)
    return response


@router.post("/ui/logout")
async def forget_key(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    """Drop the key cookie (with the page's CSRF token, so no other site signs one out)."""
    key = cookie_key(request)
    if key is not None and not hmac.compare_digest(csrf.encode(), csrf_token(key).encode()):
        return _sign_in(request, error="Sign out from this site's own page.", status_code=403)
    response = RedirectResponse("/", status_code=303)
    clear_key_cookie(response)
    return response
