"""The seam between the API and whatever runs checks: one ``JobRunner`` protocol, two runners.

The local pool (``WorkerPool``: worker processes of this web process, the default) and
Celery (``CeleryRunner``: workers anywhere, on Redis) both run ``app.jobs.task.run_job``;
routes know neither, and ``make_runner`` is the one place that chooses.
"""

from __future__ import annotations

from typing import Any, Protocol

from app.config import Settings
from app.jobs.pool import JobFailed


class JobRunner(Protocol):
    """What the API asks of a runner."""

    def start(self) -> None:
        """Start (workers, subscriptions); called once from the serving event loop."""

    def stop(self) -> None:
        """Stop; queued checks stay queued in the database."""

    def submit_job(self, job_id: str) -> Any:
        """Hand a queued check to a worker (idempotent: the worker's claim decides)."""

    def cancel_job(self, job_id: str) -> None:
        """Drop a queued check or stop the worker running it (it is being deleted)."""

    async def wait_job(self, job_id: str, timeout: float) -> None:
        """Return when the check finishes or after ``timeout`` seconds."""

    async def call(self, fn: str, /, *, urgent: bool = True, **kwargs: Any) -> Any:
        """Run one of ``app.jobs.calls.CALLS`` on a worker; its AppError is re-raised."""

    @property
    def ready_workers(self) -> int:
        """Workers able to take work now."""

    @property
    def backlog(self) -> int:
        """Checks and calls waiting for a worker."""


def make_runner(settings: Settings, *, on_job_failed: JobFailed) -> JobRunner:
    """The runner the settings ask for (``CKPT_COMPAT_QUEUE``)."""
    if settings.queue == "celery":
        from app.jobs.celery_runner import CeleryRunner

        return CeleryRunner(settings)
    from app.jobs.pool import WorkerPool

    return WorkerPool(
        settings.workers,
        settings=settings.model_dump(mode="json"),
        timeout=settings.check_timeout_seconds,
        max_tasks=settings.worker_max_tasks,
        max_rss_bytes=settings.worker_max_rss_bytes,
        on_job_failed=on_job_failed,
    )
