"""Start the check of one MLflow model version, once per (model, version, architecture, kwargs).

A delivery and a reconciling pass both end here. The claim (``app.jobs.mlflow_versions``)
makes a repeat a no-op; the check reads ``models:/<name>/<version>`` like any URI source
(allowed by ``CKPT_COMPAT_SOURCE_URIS``, the checkpoint chosen by the documented rule) and is
owned by ``CKPT_COMPAT_MLFLOW_PRINCIPAL``. A problem at submission (unknown architecture,
bad kwargs, MLflow's pytorch flavour) is kept on the claim and written back as
``ckpt_compat.error``; an unreachable MLflow releases the claim, so a retry starts it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from starlette.concurrency import run_in_threadpool

from app.config import Settings
from app.errors import AppError, InvalidOptionsError, SourceUnreachableError
from app.jobs.catalog import ArchitectureCatalog
from app.jobs.mlflow_versions import MlflowVersions, version_key
from app.jobs.reaper import publish
from app.jobs.repository import CheckRepository
from app.jobs.reuse import reuse_result
from app.jobs.runner import JobRunner
from app.schemas import CheckOptions
from app.storage import ResultStore
from app.storage.uri_sources import resolve_source_uri

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    STARTED = "started"  # a check was recorded (or answered from an identical one)
    DUPLICATE = "duplicate"  # this version was checked against this architecture already
    REFUSED = "refused"  # the submission failed; the problem goes to ckpt_compat.error


@dataclass(frozen=True, slots=True)
class Started:
    """What starting a version's check came to."""

    outcome: Outcome
    check_id: str | None = None
    problem: dict[str, Any] | None = None


@dataclass(frozen=True)
class MlflowIntegration:
    """What the MLflow routes and loops of one API process use (built in the lifespan)."""

    settings: Settings
    repository: CheckRepository
    results: ResultStore
    runner: JobRunner
    catalog: ArchitectureCatalog
    versions: MlflowVersions


async def start_version_check(
    integration: MlflowIntegration,
    *,
    model_name: str,
    version: str,
    architecture: str,
    kwargs: str,
) -> Started:
    """Check ``models:/<model_name>/<version>`` against ``architecture``, unless done before.

    Raises:
        SourceUnreachableError: MLflow could not be reached (the claim is released).
    """
    key = version_key(model_name, version, architecture, kwargs)
    claimed = await run_in_threadpool(
        integration.versions.claim,
        key,
        model_name=model_name,
        version=version,
        architecture=architecture,
        kwargs=kwargs,
    )
    if not claimed:
        return Started(Outcome.DUPLICATE)
    try:
        check_id = await _submit(integration, model_name, version, architecture, kwargs)
    except SourceUnreachableError:
        await run_in_threadpool(integration.versions.release, key)
        raise
    except AppError as exc:
        problem = exc.to_problem()
        await run_in_threadpool(integration.versions.started, key, check_id=None, problem=problem)
        log.info("MLflow %s/%s not checked: %s", model_name, version, exc.detail)
        return Started(Outcome.REFUSED, problem=problem)
    except BaseException:
        await run_in_threadpool(integration.versions.release, key)
        raise
    await run_in_threadpool(integration.versions.started, key, check_id=check_id, problem=None)
    return Started(Outcome.STARTED, check_id=check_id)


def parse_kwargs(text: str) -> CheckOptions:
    """The check's options from the ``ckpt_compat.architecture_kwargs`` tag (a JSON object).

    Raises:
        InvalidOptionsError: Not a JSON object, or kwargs the options refuse.
    """
    try:
        kwargs = json.loads(text) if text.strip() else {}
    except ValueError:
        raise InvalidOptionsError(
            f"The tag ckpt_compat.architecture_kwargs is not JSON: {text[:200]!r}."
        ) from None
    if not isinstance(kwargs, dict):
        raise InvalidOptionsError("The tag ckpt_compat.architecture_kwargs must be a JSON object.")
    try:
        return CheckOptions.model_validate({"architecture_kwargs": kwargs})
    except ValueError as exc:
        raise InvalidOptionsError(
            f"The tag ckpt_compat.architecture_kwargs is refused: {str(exc)[:300]}"
        ) from None


async def _submit(
    integration: MlflowIntegration, model_name: str, version: str, architecture: str, kwargs: str
) -> str:
    """Record the check (reused or published); returns its id."""
    settings = integration.settings
    options = parse_kwargs(kwargs)
    qualified = await integration.catalog.resolve(architecture.strip())
    uri = f"models:/{model_name}/{version}"
    found = await run_in_threadpool(
        lambda: resolve_source_uri(
            uri, settings.source_uris, tracking_uri=settings.mlflow_tracking_uri
        )
    )

    def record() -> str:
        created = integration.repository.create(
            architecture=str(qualified),
            options=options.model_dump(mode="json"),
            filename=found.filename[:300],
            size_bytes=found.size_bytes,
            sha256=found.fingerprint,
            source_path=found.uri,
            owner=settings.mlflow_principal,
        )
        reused = None
        if settings.reuse_results:
            reused = reuse_result(
                created, repository=integration.repository, results=integration.results
            )
        if reused is None:
            publish(integration.repository, integration.runner, [created.id])
        return created.id

    return await run_in_threadpool(record)
