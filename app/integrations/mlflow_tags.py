"""Tags out: a finished check's outcome written onto its MLflow model version, with retries.

As with callbacks (``app.callbacks.deliver``), one API process at a time (the
``mlflow-tags`` lock) reads what is due from the database, so checks finished by either
runner (local pool, Celery) are tagged, and a restart or another API process picks up where
the last left off. A failed write waits ``CKPT_COMPAT_CALLBACK_BACKOFF_SECONDS * 2**(n-1)``
(at most ``MAX_BACKOFF_SECONDS``); after ``CKPT_COMPAT_CALLBACK_RETRY_SECONDS`` it is
abandoned (its last error stays on the row and in the log).
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timedelta

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from app.config import Settings
from app.integrations.mlflow_registry import (
    CHECK_ID_TAG,
    ERROR_TAG,
    FRACTION_TAG,
    REPORT_URL_TAG,
    VERDICT_TAG,
    delete_tags,
    set_tags,
)
from app.jobs.locks import try_exclusive
from app.jobs.mlflow_versions import MlflowVersions, TagState, VersionWork
from app.jobs.repository import utcnow
from app.schemas import CheckStatus
from app.storage import ResultStore

log = logging.getLogger(__name__)

WRITE_EVERY_SECONDS = 1.0
"""How often the leader looks for versions whose tags are due (one indexed query)."""

MAX_BACKOFF_SECONDS = 600.0
_OUTCOME_TAGS = [VERDICT_TAG, FRACTION_TAG, REPORT_URL_TAG, ERROR_TAG]


def outcome_tags(work: VersionWork, *, results: ResultStore, public_url: str) -> dict[str, str]:
    """The tags that say how the version's check ended.

    Succeeded: check id, loaded parameter fraction (6 decimals), report URL, verdict.
    Failed (at submission or in the check): the check id if any, the problem's title. The
    verdict or error comes last, so a reader that sees it sees the rest.
    """
    if work.check_status == CheckStatus.SUCCEEDED.value and work.check_id is not None:
        data = results.read_report(work.check_id)
        if data is not None:
            summary = json.loads(data)["summary"]
            return {  # written in this order: the verdict last, once the others are there
                CHECK_ID_TAG: work.check_id,
                FRACTION_TAG: f"{float(summary['loaded_parameter_fraction']):.6f}",
                REPORT_URL_TAG: f"{public_url.rstrip('/')}/v1/checks/{work.check_id}/report",
                VERDICT_TAG: str(summary["verdict"]),
            }
    problem = work.problem or work.check_error
    if problem is not None:
        title = str(problem.get("title") or "The check failed")
    elif work.check_id is not None and work.check_status is None:
        title = "The check was deleted before it finished"
    else:
        title = "The report of the check is no longer stored"
    tags = {CHECK_ID_TAG: work.check_id} if work.check_id is not None else {}
    tags[ERROR_TAG] = title[:500]  # last, as the verdict is
    return tags


def write_once(versions: MlflowVersions, *, results: ResultStore, settings: Settings) -> int:
    """Make every due write once (call it as the leader); returns how many were tried."""
    due = versions.due(utcnow())
    for work in due:
        tags = outcome_tags(work, results=results, public_url=settings.public_url)
        try:
            stale = [key for key in _OUTCOME_TAGS if key not in tags]
            delete_tags(settings.mlflow_tracking_uri, work.model_name, work.version, stale)
            set_tags(settings.mlflow_tracking_uri, work.model_name, work.version, tags)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
            next_at = _next_attempt_at(work, now=utcnow(), settings=settings)
            state = TagState.PENDING if next_at else TagState.ABANDONED
            log.info("Tagging MLflow %s/%s failed: %s", work.model_name, work.version, error)
            versions.record_attempt(work.key, state=state, next_at=next_at, error=error)
            continue
        versions.record_attempt(work.key, state=TagState.WRITTEN, next_at=None, error=None)
    return len(due)


def _next_attempt_at(work: VersionWork, *, now: datetime, settings: Settings) -> datetime | None:
    """When to try again after a failed write; None: give up."""
    number = work.attempts + 1
    delay = min(settings.callback_backoff_seconds * 2 ** (number - 1), MAX_BACKOFF_SECONDS)
    retry_at = now + timedelta(seconds=delay)
    created = (
        work.created_at if work.created_at.tzinfo else work.created_at.replace(tzinfo=now.tzinfo)
    )
    if retry_at > created + timedelta(seconds=settings.callback_retry_seconds):
        return None
    return retry_at


def write_as_leader(engine: Engine, *, results: ResultStore, settings: Settings) -> int:
    """One pass, in the one API process that holds the ``mlflow-tags`` lock (else nothing)."""
    with try_exclusive(engine, "mlflow-tags") as leader:
        if not leader:
            return 0
        return write_once(MlflowVersions(engine), results=results, settings=settings)


async def write_periodically(engine: Engine, *, results: ResultStore, settings: Settings) -> None:
    """Run passes in a thread every ``WRITE_EVERY_SECONDS`` until cancelled (the lifespan)."""
    while True:
        try:
            await run_in_threadpool(write_as_leader, engine, results=results, settings=settings)
        except Exception:
            log.exception("Writing MLflow tags failed; trying again later.")
        await asyncio.sleep(WRITE_EVERY_SECONDS)
