"""No check stays ``queued`` or ``running`` forever: the reaper, run by one API process at a time.

- A running check whose lease expired (its worker died, hung or lost its machine) is
  requeued if it was claimed fewer than ``MAX_ATTEMPTS`` times, else failed with a problem.
- A queued check not handed to a runner for ``REPUBLISH_AFTER_SECONDS``, while the runner
  has nothing waiting, had its message lost (a Redis restarted without persistence, an API
  process that died before publishing): it is published again. Publishing twice is safe,
  since only one delivery can claim a check.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from app.errors import WorkerCrashedError
from app.jobs.repository import CheckRepository, utcnow
from app.jobs.runner import JobRunner

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2
"""Claims a check gets: the first run and one retry."""

REPUBLISH_AFTER_SECONDS = 60.0

LOST_TWICE = WorkerCrashedError(
    "The worker running this check stopped (it was killed, ran out of memory or lost its "
    "machine) twice; the check was not retried again. Submit it again, and if it fails the "
    "same way the file is probably too large for the workers."
).to_problem()


@dataclass(frozen=True, slots=True)
class Reaped:
    """What one pass did."""

    requeued: tuple[str, ...]
    failed: tuple[str, ...]
    republished: tuple[str, ...]


def publish(repository: CheckRepository, runner: JobRunner, check_ids: list[str]) -> None:
    """Hand queued checks to the runner and record when."""
    for check_id in check_ids:
        runner.submit_job(check_id)
    repository.mark_published(check_ids)


def reap_once(
    repository: CheckRepository,
    runner: JobRunner,
    *,
    republish_after: float = REPUBLISH_AFTER_SECONDS,
) -> Reaped:
    """One pass (call it under ``try_exclusive(engine, "reaper")``)."""
    requeued, failed = repository.reap_expired_leases(max_attempts=MAX_ATTEMPTS, problem=LOST_TWICE)
    if requeued:
        publish(repository, runner, requeued)
    stale: list[str] = []
    if runner.backlog == 0:
        cutoff = utcnow() - timedelta(seconds=republish_after)
        stale = [c for c in repository.queued_unpublished_since(cutoff) if c not in requeued]
        publish(repository, runner, stale)
    if requeued or failed or stale:
        log.info(
            "reaper: %d requeued, %d failed, %d published again",
            len(requeued),
            len(failed),
            len(stale),
        )
    return Reaped(tuple(requeued), tuple(failed), tuple(stale))
