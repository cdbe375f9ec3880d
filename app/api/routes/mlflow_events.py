"""``POST /v1/integrations/mlflow/events``: MLflow model-registry webhooks (MLflow 3.3+).

No API key: MLflow cannot send one, so the delivery's signature (``X-MLflow-Signature``,
keyed by ``CKPT_COMPAT_MLFLOW_WEBHOOK_SECRET``) is what authenticates it. Without the secret
the endpoint answers 404, as if it were not there.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api.problems import PROBLEM_MEDIA_TYPE
from app.errors import IntegrationDisabledError, MalformedRequestError
from app.integrations.mlflow_checks import MlflowIntegration
from app.integrations.mlflow_events import MAX_BODY_BYTES, handle_delivery
from app.integrations.mlflow_signature import (
    DELIVERY_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify,
)

router = APIRouter(prefix="/v1/integrations/mlflow", tags=["integrations"])
_PROBLEM = {"content": {PROBLEM_MEDIA_TYPE: {}}, "description": "A problem (RFC 9457)."}


@router.post(
    "/events",
    summary="Receive an MLflow model-registry webhook",
    responses={
        202: {"description": "A check of the version was started."},
        400: _PROBLEM,
        401: _PROBLEM,
        404: _PROBLEM,
        502: _PROBLEM,
    },
)
async def receive_mlflow_event(request: Request) -> JSONResponse:
    """A `model_version.created` or `model_version_tag.set` delivery, signed by MLflow.

    A version tagged `ckpt_compat.architecture` (kwargs JSON in
    `ckpt_compat.architecture_kwargs`) is checked once per model, version, architecture and
    kwargs; its outcome is written back as `ckpt_compat.*` tags. Other events and tags are
    answered 200 `ignored`; a check refused at submission 200 `refused` (the problem goes to
    the `ckpt_compat.error` tag); MLflow unreachable 502, so MLflow delivers again.
    """
    integration: MlflowIntegration | None = getattr(request.app.state, "mlflow", None)
    if integration is None:
        raise IntegrationDisabledError(
            "MLflow events are off on this service: set CKPT_COMPAT_MLFLOW_WEBHOOK_SECRET "
            "(and CKPT_COMPAT_PUBLIC_URL, CKPT_COMPAT_MLFLOW_TRACKING_URI)."
        )
    body = await _read_body(request)
    verify(
        integration.settings.mlflow_webhook_secret,
        delivery_id=request.headers.get(DELIVERY_ID_HEADER),
        timestamp=request.headers.get(TIMESTAMP_HEADER),
        signature=request.headers.get(SIGNATURE_HEADER),
        body=body,
        tolerance_seconds=integration.settings.mlflow_webhook_tolerance_seconds,
    )
    answer = await handle_delivery(integration, body)
    content: dict[str, Any] = {k: v for k, v in asdict(answer).items() if v is not None}
    return JSONResponse(content, status_code=202 if answer.status == "started" else 200)


async def _read_body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise MalformedRequestError(f"The delivery is over {MAX_BODY_BYTES} bytes.")
    return bytes(body)
