"""``/v1/checks``: submit a checkpoint with an architecture, follow the check, fetch results."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Query, Request, Response
from fastapi.responses import FileResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from app.api.auth import PrincipalDep
from app.api.conditional import is_not_modified, not_modified, strong_etag
from app.api.deps import Services, ServicesDep
from app.api.idempotency import IdempotencyKeyHeader, claim_key
from app.api.problems import PROBLEM_MEDIA_TYPE
from app.api.submissions import (
    CHECK_REQUEST_BODY,
    Submission,
    receive_json,
    receive_multipart,
)
from app.errors import (
    CheckExpiredError,
    CheckFailedError,
    CheckNotFoundError,
    MergedNotAvailableError,
    ReportNotReadyError,
    SourceNotFoundError,
    UnsupportedMediaTypeError,
)
from app.jobs.reaper import publish
from app.jobs.repository import CheckRecord
from app.jobs.reuse import reuse_result
from app.principals import Principal
from app.schemas import (
    Check,
    CheckList,
    CheckOptions,
    CheckStatus,
    Report,
)
from app.web.report_page import render_report, wants_html

router = APIRouter(prefix="/v1/checks", tags=["checks"])

_POLL_SECONDS = 0.2
RETRY_AFTER_SECONDS = 2
"""Sent with a 202: when to ask again (or use ?wait=, which answers as soon as it finishes)."""
_PROBLEM = {"content": {PROBLEM_MEDIA_TYPE: {}}, "description": "A problem (RFC 9457)."}

WaitQuery = Annotated[
    float, Query(ge=0, le=60, description="Seconds to hold the request until the check finishes.")
]


def to_wire(record: CheckRecord) -> Check:
    """The wire shape of a stored check."""
    base = f"/v1/checks/{record.id}"
    options = CheckOptions.model_validate(record.options)
    return Check.model_validate(
        {
            "id": record.id,
            "status": record.status,
            "architecture": record.architecture,
            "options": options,
            "checkpoint": {
                "filename": record.filename,
                "size_bytes": record.size_bytes,
                "sha256": record.sha256,
            },
            "created_at": record.created_at,
            "started_at": record.started_at,
            "finished_at": record.finished_at,
            "progress": {"stage": record.stage, "fraction": record.fraction},
            "error": record.error,
            "links": {
                "self": base,
                "report": f"{base}/report",
                "merged": f"{base}/merged" if options.merge else None,
            },
            "deliveries": record.deliveries,
        }
    )


def visible_record(
    services: Services, check_id: str, principal: Principal, *, allow_expired: bool = False
) -> CheckRecord:
    """The check, when ``principal`` may see it.

    Raises:
        CheckNotFoundError: No such check, or another principal's (the same 404: a check id
            says nothing about checks one may not see).
        CheckExpiredError: Its results expired (410), unless ``allow_expired``.
    """
    record = services.repository.get(check_id)
    if record is None or not principal.may_see(record.owner):
        raise CheckNotFoundError(f"No check with id {check_id[:80]!r}.")
    if record.expired_at is not None and not allow_expired:
        ttl = services.settings.result_ttl_seconds
        raise CheckExpiredError(
            f"The results of this check were removed {ttl:.0f} s after it finished "
            "(setting CKPT_COMPAT_RESULT_TTL_SECONDS); submit it again.",
            expired_at=record.expired_at.isoformat(),
        )
    return record


async def _get_record(services: Services, check_id: str, principal: Principal) -> CheckRecord:
    return await run_in_threadpool(visible_record, services, check_id, principal)


async def _wait_until_finished(
    services: Services, record: CheckRecord, wait: float, principal: Principal
) -> CheckRecord:
    """Hold until the check finishes or ``wait`` seconds pass; returns the latest record."""
    deadline = time.monotonic() + min(wait, services.settings.max_wait_seconds)
    # Checks queued by this process finish a future; others (another web process) are polled.
    await services.runner.wait_job(record.id, deadline - time.monotonic())
    record = await _get_record(services, record.id, principal)
    while not record.status.finished and time.monotonic() < deadline:
        await asyncio.sleep(_POLL_SECONDS)
        record = await _get_record(services, record.id, principal)
    return record


@router.post(
    "",
    status_code=202,
    response_model=Check,
    summary="Check a checkpoint against an architecture",
    openapi_extra=CHECK_REQUEST_BODY,
    responses={
        200: {"model": Check, "description": "Finished within `wait`."},
        403: _PROBLEM,
        404: _PROBLEM,
        409: _PROBLEM,
        413: _PROBLEM,
        415: _PROBLEM,
        422: _PROBLEM,
    },
)
async def create_check(
    request: Request,
    response: Response,
    services: ServicesDep,
    principal: PrincipalDep,
    tasks: BackgroundTasks,
    wait: WaitQuery = 0,
    idempotency_key: IdempotencyKeyHeader = None,
) -> Check:
    """Upload `file` (multipart) with an `architecture` name and optional `options` JSON.

    Or send JSON naming a source already on the server: `{"source": {"upload_id": ...}}`
    (from `PUT /v1/uploads`) or `{"source": {"path": ...}}` (under CKPT_COMPAT_SOURCE_ROOTS,
    read in place; outside them 403), with `architecture` and `options`. The same content,
    architecture and options checked again reuse the stored result (`reused_from` in the
    report).

    Answers 202 with the queued check and its `Location`; with `?wait=N` it answers 200 with
    the finished check when it finishes within N seconds. With `Idempotency-Key`, a repeat of
    the same request answers with the same check (200 once finished, else 202 with
    `Retry-After`, as the first answer).
    """
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("application/json"):
        submission = await receive_json(request, services, principal)
    elif content_type.startswith("multipart/form-data"):
        submission = await receive_multipart(request, services, tasks)
    else:
        raise UnsupportedMediaTypeError(
            "Send multipart/form-data with the parts file, architecture and options, or "
            "application/json with source, architecture and options "
            f"(got {content_type.split(';')[0] or 'no content type'!r})."
        )
    claimed = None
    if idempotency_key is not None:
        claim = await run_in_threadpool(claim_key, services, principal, idempotency_key, submission)
        if isinstance(claim, str):  # the same request again: its check, as it is now
            return await _replay(services, claim, principal, response, wait)
        claimed = claim
    try:
        record = await run_in_threadpool(_record, services, submission, principal)
    except BaseException:
        if claimed is not None:
            await run_in_threadpool(claimed.release)
        raise
    if claimed is not None:
        await run_in_threadpool(claimed.bind, record.id)
    reused = None
    if services.settings.reuse_results:
        reused = await run_in_threadpool(
            lambda: reuse_result(record, repository=services.repository, results=services.results)
        )
    if reused is not None:
        record = reused
    else:
        await run_in_threadpool(publish, services.repository, services.runner, [record.id])
        if wait > 0:
            record = await _wait_until_finished(services, record, wait, principal)
    return _answer(response, record, done=wait > 0 and record.status.finished)


async def _replay(
    services: Services, check_id: str, principal: Principal, response: Response, wait: float
) -> Check:
    """The answer to a repeated request: the first one's check, 200 once it finished."""
    record = await _get_record(services, check_id, principal)
    if wait > 0 and not record.status.finished:
        record = await _wait_until_finished(services, record, wait, principal)
    return _answer(response, record, done=record.status.finished)


def _answer(response: Response, record: CheckRecord, *, done: bool) -> Check:
    """A submission's answer, first request or replay alike: its ``Location``, and 200 when
    ``done``, else 202 with ``Retry-After`` (when to ask again)."""
    response.headers["Location"] = f"/v1/checks/{record.id}"
    if done:
        response.status_code = 200
    else:
        response.status_code = 202
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return to_wire(record)


@router.get("", response_model=CheckList, summary="List checks, newest first")
def list_checks(
    services: ServicesDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,  # SQLite integers are 64-bit
) -> CheckList:
    records, total = services.repository.page(limit=limit, offset=offset, principal=principal)
    return CheckList(items=[to_wire(r) for r in records], total=total)


@router.get(
    "/{check_id}",
    response_model=Check,
    responses={404: _PROBLEM, 410: _PROBLEM},
    summary="Get a check (optionally wait for it to finish)",
)
async def get_check(
    check_id: str, services: ServicesDep, principal: PrincipalDep, wait: WaitQuery = 0
) -> Check:
    record = await _get_record(services, check_id, principal)
    if wait > 0 and not record.status.finished:
        record = await _wait_until_finished(services, record, wait, principal)
    return to_wire(record)


@router.delete(
    "/{check_id}",
    status_code=204,
    responses={404: _PROBLEM},
    summary="Delete a check (cancelling it if it is queued or running), its report and files",
)
def delete_check(check_id: str, services: ServicesDep, principal: PrincipalDep) -> Response:
    """A queued or running check is cancelled first: its task is dropped or its worker
    stopped, and a worker that finishes it anyway finds no record and keeps nothing."""
    record = visible_record(services, check_id, principal, allow_expired=True)
    if not record.status.finished:
        services.runner.cancel_job(check_id)
    with services.uploads_lock:  # no check is recorded against the upload meanwhile
        services.repository.delete(check_id)
        # The upload goes with the owner's last check of it, unless someone else holds it.
        if services.repository.release_upload(record.sha256, owner=record.owner):
            services.blobs.delete(record.sha256)
    services.results.delete(check_id)
    return Response(status_code=204)


def _record(services: Services, submission: Submission, principal: Principal) -> CheckRecord:
    """Record a check; a stored upload must still be there (deletion and expiry wait).

    Raises:
        SourceNotFoundError: The upload was deleted after the request was read.
    """
    with services.uploads_lock:
        if submission.source_path is None and not services.blobs.exists(submission.sha256):
            raise SourceNotFoundError(
                f"The upload {submission.sha256[:12]}... was deleted (DELETE /v1/uploads, or "
                "expired) while this check was being created; send the file again."
            )
        return services.repository.create(
            architecture=str(submission.architecture),
            options=submission.options.model_dump(mode="json"),
            filename=submission.filename,
            size_bytes=submission.size_bytes,
            sha256=submission.sha256,
            source_path=submission.source_path,
            owner=principal.owner,
        )


def _finished_record(services: Services, check_id: str, principal: Principal) -> CheckRecord:
    record = visible_record(services, check_id, principal)
    if record.status is CheckStatus.FAILED:
        detail = (record.error or {}).get("detail", "")
        raise CheckFailedError(
            f"The check failed, so it has no result: {detail}", error=record.error
        )
    if not record.status.finished:
        raise ReportNotReadyError(
            f"The check is {record.status.value}; retry later or GET /v1/checks/{check_id}?wait=30."
        )
    return record


@router.get(
    "/{check_id}/report",
    response_model=Report,
    summary="The compatibility report",
    responses={404: _PROBLEM, 409: _PROBLEM, 410: _PROBLEM},
)
def get_report(
    check_id: str, request: Request, services: ServicesDep, principal: PrincipalDep
) -> Response:
    """The report as JSON, or as the report page when `Accept` prefers `text/html`.

    The JSON has a strong `ETag`; `If-None-Match` with it answers 304 without the body.
    """
    record = _finished_record(services, check_id, principal)
    data = services.results.read_report(check_id)
    if data is None:
        raise CheckNotFoundError(f"The report of check {check_id!r} is no longer stored.")
    if wants_html(request):
        return render_report(request, record, data)
    etag = strong_etag(data)
    if is_not_modified(request, etag):
        return not_modified(etag, vary="Accept")
    headers = {"Vary": "Accept", "ETag": etag}
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(data))
        return Response(media_type="application/json", headers=headers)
    return Response(content=data, media_type="application/json", headers=headers)


@router.head("/{check_id}/report", include_in_schema=False)
def head_report(
    check_id: str, request: Request, services: ServicesDep, principal: PrincipalDep
) -> Response:
    """The headers of ``GET /report`` (status, ``ETag``, ``Content-Length``), no body."""
    return get_report(check_id, request, services, principal)


@router.get(
    "/{check_id}/merged",
    summary="Download the merged state_dict",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        404: _PROBLEM,
        409: _PROBLEM,
        410: _PROBLEM,
    },
)
def get_merged(
    check_id: str, request: Request, services: ServicesDep, principal: PrincipalDep
) -> Response:
    """The file with a strong `ETag`; `If-None-Match` with it answers 304 without the body."""
    record = visible_record(services, check_id, principal)
    if not CheckOptions.model_validate(record.options).merge:
        raise MergedNotAvailableError(
            'This check did not ask for a merge; submit it again with options {"merge": {}}.'
        )
    record = _finished_record(services, check_id, principal)
    if record.merged_filename is None:
        raise MergedNotAvailableError("This check has no merged state_dict.")
    try:
        download = services.results.merged_download(check_id, record.merged_filename)
    except FileNotFoundError:
        raise MergedNotAvailableError(
            "The merged file of this check is no longer stored."
        ) from None
    if download.url is not None:  # object storage serves the bytes itself
        return RedirectResponse(download.url, status_code=307)
    assert download.path is not None
    stat = download.path.stat()
    etag = strong_etag(check_id, record.merged_filename, str(stat.st_size), str(stat.st_mtime_ns))
    if is_not_modified(request, etag):
        return not_modified(etag)
    stem = record.filename.rsplit(".", 1)[0] or "checkpoint"
    arch = record.architecture.replace(":", "-")
    ext = record.merged_filename.rsplit(".", 1)[-1]
    return FileResponse(  # sends the headers alone for HEAD
        download.path,
        media_type="application/octet-stream",
        filename=f"{stem}.{arch}.merged.{ext}",
        headers={"ETag": etag},
    )


@router.head("/{check_id}/merged", include_in_schema=False)
def head_merged(
    check_id: str, request: Request, services: ServicesDep, principal: PrincipalDep
) -> Response:
    """The headers of ``GET /merged`` (``ETag``, ``Content-Length``), no body."""
    return get_merged(check_id, request, services, principal)
