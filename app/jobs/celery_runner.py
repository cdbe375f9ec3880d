"""The Celery runner (``CKPT_COMPAT_QUEUE=celery``): the API side of the distributed mode.

Checks are published as ``ckpt_compat.run_job`` tasks named by the check id (so a republished
or revoked check is one task id); calls go as ``ckpt_compat.call`` with a Redis list to
answer on; the catalogue is the snapshot a worker published; ``?wait`` is woken by the
one Redis subscription of this process (``FinishedListener``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from app.config import Settings
from app.errors import ServiceUnavailableError, error_from_problem
from app.jobs import redis_bus
from app.jobs.celery_app import CALL, QUEUE, RUN_JOB, celery_app

CALL_TIMEOUT_SECONDS = 60.0
"""How long a call waits for a worker's answer before a 503."""


class CeleryRunner:
    """``JobRunner`` over Celery workers on Redis (``ckpt-compat worker``)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._url = settings.broker_url
        self._app = celery_app(settings.model_dump_json())
        self._listener = redis_bus.FinishedListener(self._url)

    def start(self) -> None:
        """Subscribe to finished checks (call from the event loop that serves requests)."""
        self._listener.start()

    def stop(self) -> None:
        self._listener.cancel()

    def submit_job(self, job_id: str) -> None:
        self._app.send_task(RUN_JOB, args=[job_id], task_id=job_id)

    def cancel_job(self, job_id: str) -> None:
        """Revoke the check's task and stop the child running it (the check is deleted)."""
        self._app.control.revoke(job_id, terminate=True, signal="SIGTERM")

    async def wait_job(self, job_id: str, timeout: float) -> None:
        if timeout > 0:
            await self._listener.wait(job_id, timeout)

    async def call(self, fn: str, /, *, urgent: bool = True, **kwargs: Any) -> Any:
        """Run a worker call and wait for its answer; the catalogue comes from the snapshot."""
        if fn == "catalog":
            rows = await asyncio.to_thread(redis_bus.read_catalogue, self._url)
            if rows is not None:
                return rows
        key = redis_bus.new_reply_key()
        self._app.send_task(CALL, args=[fn, kwargs, key], priority=9 if urgent else 0)
        answer = await redis_bus.await_reply(self._url, key, CALL_TIMEOUT_SECONDS)
        if answer is None:
            raise ServiceUnavailableError(
                "No Celery worker answered within 60 s (or the broker is unreachable); start "
                "one with `ckpt-compat worker`."
            )
        if answer["ok"]:
            return answer["result"]
        raise error_from_problem(answer["problem"])

    @property
    def ready_workers(self) -> int:
        """Workers whose heartbeat is fresh (a blocking Redis call: use off the event loop)."""
        try:
            return redis_bus.live_workers(self._url)
        except Exception:
            return 0

    @property
    def backlog(self) -> int:
        return redis_bus.backlog(self._url, QUEUE)
