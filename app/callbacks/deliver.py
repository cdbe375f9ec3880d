"""The delivery loop: due callbacks POSTed by one API process at a time, retried with backoff.

The loop reads what is due from the database, so it serves checks finished by either runner
(local pool or Celery), survives restarts (the next leader finds the same rows) and never sits
in a worker's path. Attempt ``n`` failing waits ``backoff * 2**(n-1)`` (at most
``MAX_BACKOFF_SECONDS``) before the next; after ``callback_retry_seconds`` from the check's
end the callback is abandoned (its attempts stay listed on the check).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from app.callbacks.hosts import parse_host_patterns
from app.callbacks.send import Attempt, post_signed
from app.config import Settings
from app.jobs.callback_state import CallbackState
from app.jobs.deliveries import DeliveryRepository
from app.jobs.locks import try_exclusive
from app.jobs.repository import CheckRecord, utcnow

log = logging.getLogger(__name__)

DELIVER_EVERY_SECONDS = 1.0
"""How often the leader looks for due callbacks (one indexed query)."""

MAX_BACKOFF_SECONDS = 600.0

Render = Callable[[CheckRecord], str]
"""The check as ``GET /v1/checks/{id}`` answers it (JSON text); supplied by the API layer."""


def next_attempt_at(
    record: CheckRecord, attempt_number: int, *, now: datetime, settings: Settings
) -> datetime | None:
    """When to try again after failed attempt ``attempt_number``; None: give up."""
    delay = min(settings.callback_backoff_seconds * 2 ** (attempt_number - 1), MAX_BACKOFF_SECONDS)
    retry_at = now + timedelta(seconds=delay)
    finished = record.finished_at or now
    if retry_at > finished + timedelta(seconds=settings.callback_retry_seconds):
        return None
    return retry_at


def deliver_once(deliveries: DeliveryRepository, *, render: Render, settings: Settings) -> int:
    """Make every due attempt once (call it as the leader); returns how many were made."""
    hosts = parse_host_patterns(settings.callback_hosts)
    due = deliveries.due(utcnow())
    for record in due:
        url = str(record.options.get("callback_url") or "")
        sent_at = utcnow()
        result = post_signed(
            url,
            render(record),
            message_id=f"check_{record.id}",
            sent_at=sent_at,
            secret=settings.webhook_secret,
            hosts=hosts,
            timeout=settings.callback_timeout_seconds,
        )
        number = len(record.deliveries) + 1
        _record(deliveries, record, result, number=number, sent_at=sent_at, settings=settings)
    return len(due)


def _record(
    deliveries: DeliveryRepository,
    record: CheckRecord,
    result: Attempt,
    *,
    number: int,
    sent_at: datetime,
    settings: Settings,
) -> None:
    entry = {
        "attempt": number,
        "at": sent_at.isoformat(),
        "status_code": result.status_code,
        "error": result.error,
    }
    if result.delivered:
        state, next_at = CallbackState.DELIVERED, None
    else:
        next_at = next_attempt_at(record, number, now=utcnow(), settings=settings)
        state = CallbackState.PENDING if next_at else CallbackState.ABANDONED
        log.info("Callback of check %s failed (attempt %d): %s", record.id, number, entry)
    deliveries.record_attempt(record.id, entry, state=state, next_at=next_at)


def deliver_as_leader(engine: Engine, *, render: Render, settings: Settings) -> int:
    """One pass, in the one API process that holds the ``callbacks`` lock (else nothing)."""
    with try_exclusive(engine, "callbacks") as leader:
        if not leader:
            return 0
        return deliver_once(DeliveryRepository(engine), render=render, settings=settings)


async def deliver_periodically(engine: Engine, *, render: Render, settings: Settings) -> None:
    """Run passes in a thread every ``DELIVER_EVERY_SECONDS`` until cancelled (the lifespan)."""
    while True:
        try:
            await run_in_threadpool(deliver_as_leader, engine, render=render, settings=settings)
        except Exception:
            log.exception("Delivering callbacks failed; trying again later.")
        await asyncio.sleep(DELIVER_EVERY_SECONDS)
