"""Reconcile: check the versions whose delivery never arrived.

MLflow retries a delivery only a few times within seconds, so a version created while this
service was down (or unreachable) is never announced again. On start-up and every
``CKPT_COMPAT_MLFLOW_RECONCILE_SECONDS`` one API process (the ``mlflow-reconcile`` lock)
searches the registry for versions tagged ``ckpt_compat.architecture`` that have no
``ckpt_compat.verdict`` and starts their checks; the claim per (model, version, architecture,
kwargs) keeps a version that was started already, or refused, from starting again.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from app.errors import AppError
from app.integrations.mlflow_checks import MlflowIntegration, Outcome, start_version_check
from app.integrations.mlflow_registry import (
    ARCHITECTURE_TAG,
    KWARGS_TAG,
    VERDICT_TAG,
    VersionTags,
    tagged_versions,
)
from app.jobs.locks import try_exclusive
from app.storage.mlflow_sources import mlflow_errors

log = logging.getLogger(__name__)


def unchecked_versions(tracking_uri: str) -> list[VersionTags]:
    """Versions tagged for a check that carry no verdict yet.

    Raises:
        SourceUnreachableError: MLflow could not be reached.
    """
    with mlflow_errors(tracking_uri or "the MLflow tracking server"):
        return [v for v in tagged_versions(tracking_uri) if VERDICT_TAG not in v.tags]


async def reconcile_once(integration: MlflowIntegration, engine: Engine) -> int:
    """One pass as the leader (else nothing); returns how many checks it started."""
    with try_exclusive(engine, "mlflow-reconcile") as leader:
        if not leader:
            return 0
        tracking = integration.settings.mlflow_tracking_uri
        found = await run_in_threadpool(unchecked_versions, tracking)
        started = 0
        for version in found:
            try:
                result = await start_version_check(
                    integration,
                    model_name=version.model_name,
                    version=version.version,
                    architecture=version.tags[ARCHITECTURE_TAG],
                    kwargs=version.tags.get(KWARGS_TAG, ""),
                )
            except AppError as exc:  # MLflow went away mid-pass: the next pass retries
                log.info("Reconciling stopped: %s", exc.detail)
                break
            started += result.outcome is Outcome.STARTED
        if started:
            log.info("Reconciling MLflow started %d checks.", started)
        return started


async def reconcile_periodically(integration: MlflowIntegration, engine: Engine) -> None:
    """A pass at once (start-up), then every ``mlflow_reconcile_seconds`` (0: no more)."""
    every = integration.settings.mlflow_reconcile_seconds
    while True:
        try:
            await reconcile_once(integration, engine)
        except Exception:
            log.exception("Reconciling with MLflow failed; trying again later.")
        if not every:
            return
        await asyncio.sleep(every)
