"""What ``POST /v1/checks`` accepts: a multipart upload, or JSON naming a source on the server.

Both forms end as one ``Submission`` (a stored or checked checkpoint plus what to check it
against), so the route has a single tail: record, reuse or submit, answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from starlette.background import BackgroundTasks
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from app.api.deps import Services
from app.api.early_checks import EarlyChecks
from app.api.early_sniff import HEAD_BYTES, refuse_unlikely_head
from app.api.multipart import clean_filename, receive_form
from app.api.routes.uploads import stored_upload_size
from app.callbacks.hosts import parse_host_patterns, require_allowed
from app.errors import InvalidOptionsError, InvalidRequestError
from app.names import QualifiedName
from app.principals import Principal
from app.schemas import CheckOptions, CheckRequest, UploadSource
from app.schemas.checks import UriSource
from app.storage.mlflow_sources import join_artifact_path
from app.storage.sources import resolve_source
from app.storage.uri_sources import resolve_source_uri

MAX_JSON_BYTES = 1024 * 1024

CHECK_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "architecture"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "The checkpoint (.pt, .pth, .bin, .ckpt, .safetensors).",
                        },
                        "architecture": {
                            "type": "string",
                            "example": "torchvision:resnet18",
                            "description": "source:name, or a bare name.",
                        },
                        "options": {
                            "type": "string",
                            "example": '{"architecture_kwargs": {}}',
                            "description": "CheckOptions as a JSON string (optional).",
                        },
                    },
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["source", "architecture"],
                    "properties": {
                        "source": {
                            "oneOf": [
                                {
                                    "type": "object",
                                    "required": ["upload_id"],
                                    "properties": {
                                        "upload_id": {"type": "string"},
                                        "filename": {"type": "string"},
                                    },
                                },
                                {
                                    "type": "object",
                                    "required": ["path"],
                                    "properties": {"path": {"type": "string"}},
                                },
                                {
                                    "type": "object",
                                    "required": ["uri"],
                                    "properties": {
                                        "uri": {"type": "string"},
                                        "artifact_path": {"type": "string"},
                                    },
                                },
                            ],
                            "description": "An id from PUT /v1/uploads, a path under "
                            "CKPT_COMPAT_SOURCE_ROOTS (file, directory of shards, *.index.json), "
                            "or a URI under CKPT_COMPAT_SOURCE_URIS: s3:// (same kinds), "
                            "models:/, runs:/ or mlflow-artifacts:/ (MLflow).",
                        },
                        "architecture": {"type": "string", "example": "transformers:bert"},
                        "options": {"type": "object", "description": "CheckOptions (optional)."},
                    },
                }
            },
        },
    }
}


def parse_options(raw: str | None) -> CheckOptions:
    """Options from their JSON text; anything invalid is a 422 that says which field."""
    if raw is None or not raw.strip():
        return CheckOptions()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidOptionsError(
            f"options is not valid JSON: {exc.msg} at position {exc.pos}."
        ) from None
    except ValueError:  # an integer over Python's 4300-digit conversion limit
        raise InvalidOptionsError("options holds an integer that is too large.") from None
    except RecursionError:
        raise InvalidOptionsError("options nests deeper than JSON parsing allows.") from None
    if not isinstance(data, dict):
        raise InvalidOptionsError("options must be a JSON object.")
    try:
        return CheckOptions.model_validate(data)
    except ValidationError as exc:
        errors, summary = validation_summary(exc, root="options")
        raise InvalidOptionsError(f"Invalid options: {summary}", errors=errors) from None


def validation_summary(
    exc: ValidationError, root: str = "body"
) -> tuple[list[dict[str, Any]], str]:
    """The errors as ``{"loc", "msg"}`` dicts, and one line naming each field."""
    errors = [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"]} for e in exc.errors()]
    summary = "; ".join(f"{'.'.join(e['loc']) or root}: {e['msg']}" for e in errors)
    return errors, summary


def require_allowed_callback(options: CheckOptions, services: Services) -> None:
    """Refuse a ``callback_url`` outside ``CKPT_COMPAT_CALLBACK_HOSTS`` before anything is kept.

    Raises:
        CallbackNotAllowedError: Callbacks are off, or the host is not allowed (422).
    """
    if options.callback_url is not None:
        hosts = parse_host_patterns(services.settings.callback_hosts)
        require_allowed(options.callback_url, hosts)


@dataclass(frozen=True)
class Submission:
    """A checkpoint received (stored upload or checked path) with what to check it against."""

    architecture: QualifiedName
    options: CheckOptions
    filename: str
    size_bytes: int
    sha256: str
    source_path: str | None = None


async def receive_multipart(
    request: Request, services: Services, tasks: BackgroundTasks
) -> Submission:
    """The multipart form: the file streamed into the blob store, committed once valid.

    A second copy of bytes stored already is removed by ``tasks``, after the answer.
    """

    def parse_and_allow(raw: str) -> CheckOptions:
        options = parse_options(raw)
        require_allowed_callback(options, services)  # a refused callback host fails fast too
        return options

    checks = EarlyChecks(resolve=services.catalog.resolve, parse_options=parse_and_allow)
    form = await receive_form(
        request,
        blobs=services.blobs,
        max_bytes=services.settings.max_upload_bytes,
        file_field="file",
        text_fields=frozenset({"architecture", "options"}),
        on_field=checks.on_field,  # fields sent before the file fail before it is read
        on_head=refuse_unlikely_head,
        head_bytes=HEAD_BYTES,
    )
    upload = form.upload
    try:
        if upload is None:
            raise InvalidRequestError("The part 'file' is missing: attach the checkpoint file.")
        # Each field was parsed, resolved and checked as it arrived (``EarlyChecks``).
        qualified, options = checks.architecture, checks.options
        if qualified is None:
            raise InvalidRequestError(
                "The part 'architecture' is missing: name one, e.g. torchvision:resnet18."
            )
        sha256, size = await run_in_threadpool(services.commit_upload, upload)
    except BaseException:
        if upload is not None:
            await run_in_threadpool(upload.abort)  # a large file takes a while to unlink
        raise
    tasks.add_task(upload.abort)
    return Submission(qualified, options, form.filename, size, sha256)


async def receive_json(request: Request, services: Services, principal: Principal) -> Submission:
    """The JSON form: a source already on the server (an upload id, or a path under a root)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BYTES:
            raise InvalidRequestError(f"The JSON body is over {MAX_JSON_BYTES} bytes.")
    try:
        wanted = CheckRequest.model_validate_json(bytes(body))
    except ValidationError as exc:
        errors, summary = validation_summary(exc)
        raise InvalidRequestError(f"Invalid request: {summary}", errors=errors) from None
    require_allowed_callback(wanted.options, services)
    qualified = await services.catalog.resolve(wanted.architecture)
    source = wanted.source
    if isinstance(source, UploadSource):
        size = await run_in_threadpool(stored_upload_size, services, source.upload_id, principal)
        name = clean_filename(source.filename or f"upload-{source.upload_id[:12]}")
        return Submission(qualified, wanted.options, name, size, source.upload_id)
    if isinstance(source, UriSource):
        uri = join_artifact_path(source.uri, source.artifact_path)
        return await _receive_uri(uri, qualified, wanted.options, services)
    found = await run_in_threadpool(resolve_source, source.path, services.settings.source_roots)
    return Submission(
        qualified,
        wanted.options,
        clean_filename(found.filename),
        found.size_bytes,
        found.fingerprint,
        source_path=str(found.path),
    )


async def _receive_uri(
    uri: str, qualified: QualifiedName, options: CheckOptions, services: Services
) -> Submission:
    """A URI source looked up now (HEAD, LIST), so a bad URI or store is answered at once."""
    settings = services.settings
    found = await run_in_threadpool(
        lambda: resolve_source_uri(
            uri, settings.source_uris, tracking_uri=settings.mlflow_tracking_uri
        )
    )
    return Submission(
        qualified,
        options,
        clean_filename(found.filename),
        found.size_bytes,
        found.fingerprint,
        source_path=found.uri,
    )
