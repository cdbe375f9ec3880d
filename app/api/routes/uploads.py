"""``/v1/uploads``: send a checkpoint as the raw request body, then check it by its id.

The body is hashed and written while it arrives (``BackgroundUpload``: the event loop
receives the next batches while two threads hash and write the earlier ones). Each content
is stored once (its id is its sha256); past the size limit the answer is 413 at once and
nothing is kept. An upload no check uses can be deleted.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request, Response
from starlette.concurrency import run_in_threadpool

from app.api.auth import PrincipalDep
from app.api.background_upload import BackgroundUpload
from app.api.deps import Services, ServicesDep
from app.api.problems import PROBLEM_MEDIA_TYPE
from app.errors import (
    SourceNotFoundError,
    UnsupportedMediaTypeError,
    UploadInUseError,
    UploadTooLargeError,
)
from app.principals import Principal
from app.schemas import Upload
from app.storage import UploadWriter

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])

OCTET_STREAM = "application/octet-stream"
_PROBLEM = {"content": {PROBLEM_MEDIA_TYPE: {}}, "description": "A problem (RFC 9457)."}
_RAW_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}},
        "description": "The checkpoint's bytes (.pt, .pth, .bin, .ckpt, .safetensors).",
    }
}


def _check_declared_size(request: Request, max_bytes: int) -> None:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise UploadTooLargeError(
            f"The request declares {declared} bytes, over the upload limit of {max_bytes} "
            "bytes (setting CKPT_COMPAT_MAX_UPLOAD_BYTES). Nothing was kept.",
            limit="max_upload_bytes",
            limit_value=max_bytes,
        )


@router.put(
    "",
    status_code=201,
    response_model=Upload,
    summary="Upload a checkpoint as the raw request body",
    openapi_extra=_RAW_BODY,
    responses={413: _PROBLEM, 415: _PROBLEM, 507: _PROBLEM},
)
async def put_upload(
    request: Request,
    response: Response,
    services: ServicesDep,
    principal: PrincipalDep,
    tasks: BackgroundTasks,
) -> Upload:
    """Send the file's bytes with `Content-Type: application/octet-stream`.

    Answers 201 with `upload_id` (the sha256 of the bytes) and `size_bytes`; the same bytes
    sent again are stored once. Then `POST /v1/checks` with `{"source": {"upload_id": ...}}`.
    The answer is the same whether or not someone else stored these bytes before: an upload
    is yours to use once you have sent its bytes.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != OCTET_STREAM:
        raise UnsupportedMediaTypeError(
            f"Send the checkpoint's bytes as {OCTET_STREAM} "
            f"(got {content_type or 'no content type'!r})."
        )
    max_bytes = services.settings.max_upload_bytes
    _check_declared_size(request, max_bytes)
    writer = await run_in_threadpool(UploadWriter, services.blobs, max_bytes=max_bytes)
    try:
        background = BackgroundUpload(writer)
        try:
            async for chunk in request.stream():
                await background.write(chunk)
            await background.finish()
        finally:
            await background.drain()  # nothing in flight when the file is committed or removed
        sha256, size = await run_in_threadpool(services.commit_upload, writer, principal)
    except BaseException:
        await run_in_threadpool(writer.abort)
        raise
    tasks.add_task(writer.abort)  # a second copy of stored bytes goes after the answer
    response.headers["Location"] = f"/v1/uploads/{sha256}"
    return Upload(upload_id=sha256, size_bytes=size)


@router.get(
    "/{upload_id}",
    response_model=Upload,
    summary="Whether an upload is stored (to skip sending it again)",
    responses={404: _PROBLEM},
)
def get_upload(upload_id: str, services: ServicesDep, principal: PrincipalDep) -> Upload:
    """Found only when you sent these bytes (or you are an admin): asking about bytes someone
    else sent answers 404, as for bytes nobody sent."""
    size = stored_upload_size(services, upload_id, principal)
    return Upload(upload_id=upload_id, size_bytes=size)


@router.delete(
    "/{upload_id}",
    status_code=204,
    summary="Delete a stored upload that no check uses",
    responses={404: _PROBLEM, 409: _PROBLEM},
)
def delete_upload(upload_id: str, services: ServicesDep, principal: PrincipalDep) -> Response:
    """Free the disk an upload takes once you are done with it.

    An upload that your checks still use is kept (409): their reports and merges read it.
    Delete those checks first (`DELETE /v1/checks/{id}`), which removes the upload with the
    last one. The bytes themselves stay while someone else has sent them too.
    """
    with services.uploads_lock:  # no check is recorded against it meanwhile
        stored_upload_size(services, upload_id, principal)  # 404: unknown, or not yours
        users = services.repository.count_checks_of(upload_id, principal)
        if users:
            raise UploadInUseError(
                f"{users} check(s) use this upload; delete them first "
                "(DELETE /v1/checks/{id}), which removes the upload with the last one."
            )
        unused = services.repository.release_upload(
            upload_id, owner=principal.owner, every_holder=principal.admin
        )
        if unused:
            services.blobs.delete(upload_id)
    return Response(status_code=204)


def stored_upload_size(services: Services, upload_id: str, principal: Principal) -> int:
    """The size of a stored upload that ``principal`` sent (admins: any stored upload).

    Raises:
        SourceNotFoundError: No upload has this id, or the principal never sent its bytes
            (the same 404: an id tells nothing about what others stored).
    """
    try:
        size = services.blobs.size(upload_id)
    except ValueError:  # not a digest
        size = None
    if size is None or not services.repository.holds_upload(upload_id, principal):
        raise SourceNotFoundError(
            f"No upload with id {upload_id[:80]!r}; send it with PUT /v1/uploads first."
        )
    return size
