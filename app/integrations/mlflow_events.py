"""One MLflow model-registry delivery, read and acted on.

MLflow (``mlflow/webhooks/delivery.py``) POSTs ``{"entity", "action", "timestamp", "data"}``;
for ``model_version.created`` the data holds the new version with its tags, for
``model_version_tag.set`` the one tag set. A version is checked when it carries
``ckpt_compat.architecture``; a tag event for any other key is ignored, which covers the
tags this service writes itself (each of them fires an event back to it).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from app.errors import MalformedRequestError
from app.integrations.mlflow_checks import MlflowIntegration, Started, start_version_check
from app.integrations.mlflow_registry import ARCHITECTURE_TAG, KWARGS_TAG, version_tags
from app.storage.mlflow_sources import mlflow_errors

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
CREATED = ("model_version", "created")
TAG_SET = ("model_version_tag", "set")


@dataclass(frozen=True, slots=True)
class Answer:
    """What the endpoint answers: ``ignored`` (with why) or what starting a check came to."""

    status: str
    reason: str | None = None
    check_id: str | None = None
    problem: dict[str, Any] | None = None


def read_delivery(body: bytes) -> tuple[tuple[str, str], dict[str, Any]]:
    """((entity, action), data) of a delivery body.

    Raises:
        MalformedRequestError: Not a JSON object with string ``entity``/``action`` and an
            object ``data`` (400).
    """
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise MalformedRequestError("The delivery is not JSON.") from None
    if not isinstance(payload, dict):
        raise MalformedRequestError("The delivery is not a JSON object.")
    entity, action, data = payload.get("entity"), payload.get("action"), payload.get("data")
    if not (isinstance(entity, str) and isinstance(action, str) and isinstance(data, dict)):
        raise MalformedRequestError("The delivery lacks entity, action or data.")
    return (entity, action), data


def _text(data: dict[str, Any], field: str) -> str:
    value = data.get(field)
    if not isinstance(value, str | int) or not str(value):
        raise MalformedRequestError(f"The delivery's data lacks {field!r}.")
    return str(value)


async def handle_delivery(integration: MlflowIntegration, body: bytes) -> Answer:
    """Act on a verified delivery: start the version's check, or say why not (logged)."""
    event, data = read_delivery(body)
    if event not in (CREATED, TAG_SET):
        return Answer("ignored", reason=f"{'.'.join(event)} events start no check")
    name, version = _text(data, "name"), _text(data, "version")
    answer = await _act(integration, event, data, name, version)
    log.info(
        "MLflow event %s for %s/%s: %s%s",
        ".".join(event),
        name,
        version,
        answer.status,
        f" ({answer.reason})" if answer.reason else "",
        extra={"event": "mlflow.delivery", "check": answer.check_id},
    )
    return answer


async def _act(
    integration: MlflowIntegration,
    event: tuple[str, str],
    data: dict[str, Any],
    name: str,
    version: str,
) -> Answer:
    if event == TAG_SET:
        if data.get("key") not in (ARCHITECTURE_TAG, KWARGS_TAG):
            return Answer(
                "ignored", reason=f"the tag {str(data.get('key'))[:100]!r} starts no check"
            )
        tracking = integration.settings.mlflow_tracking_uri
        uri = f"models:/{name}/{version}"

        def current() -> dict[str, str]:
            with mlflow_errors(uri):
                return version_tags(tracking, name, version).tags

        tags = await run_in_threadpool(current)
    else:
        raw = data.get("tags")
        tags = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
    if ARCHITECTURE_TAG not in tags:
        return Answer("ignored", reason=f"the version has no tag {ARCHITECTURE_TAG}")
    started: Started = await start_version_check(
        integration,
        model_name=name,
        version=version,
        architecture=tags[ARCHITECTURE_TAG],
        kwargs=tags.get(KWARGS_TAG, ""),
    )
    return Answer(started.outcome.value, check_id=started.check_id, problem=started.problem)
