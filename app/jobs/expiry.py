"""Uploads no check uses, and finished checks' results, are removed after a while.

A registry may ``PUT`` uploads it never checks, or checks and deletes the checks but not the
upload: without expiry the disk fills. An upload that checks use is never removed here (it
goes with the last of them); sending the same bytes again starts its time over. A finished
check's report and merged file go ``result_ttl_seconds`` after it finished; its record stays,
so it answers 410 (not 404), and its upload is released as by ``DELETE``.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from datetime import UTC, datetime

from app.jobs.repository import CheckRepository
from app.storage import BlobStore, ResultStore


def expire_uploads(
    blobs: BlobStore,
    repository: CheckRepository,
    lock: AbstractContextManager[object],
    *,
    ttl_seconds: float,
    now: float | None = None,
) -> list[str]:
    """Remove the uploads that no check uses and that were last sent ``ttl_seconds`` ago.

    ``lock`` is the one held while checks are recorded and uploads committed, so an upload is
    never removed while a check or a second copy of it is on its way in.

    Returns:
        The ids of the uploads removed.
    """
    cutoff = (time.time() if now is None else now) - ttl_seconds
    removed = []
    for sha256 in blobs.stored():
        sent_at = blobs.sent_at(sha256)
        if sent_at is None or sent_at > cutoff:
            continue
        with lock:
            sent_at = blobs.sent_at(sha256)  # again: it may have been sent meanwhile
            if sent_at is None or sent_at > cutoff or repository.count_with_sha256(sha256):
                continue
            blobs.delete(sha256)
            repository.forget_upload(sha256)
        removed.append(sha256)
    return removed


def expire_results(
    results: ResultStore,
    blobs: BlobStore,
    repository: CheckRepository,
    lock: AbstractContextManager[object],
    *,
    ttl_seconds: float,
    now: float | None = None,
) -> list[str]:
    """Remove the results of checks that finished ``ttl_seconds`` ago; mark them expired.

    Returns:
        The ids of the checks whose results were removed.
    """
    cutoff = datetime.fromtimestamp((time.time() if now is None else now) - ttl_seconds, UTC)
    expired = []
    for record in repository.finished_before(cutoff):
        with lock:  # as DELETE: no check is recorded against the upload meanwhile
            repository.mark_expired(record.id)
            if repository.release_upload(record.sha256, owner=record.owner):
                blobs.delete(record.sha256)
        results.delete(record.id)
        expired.append(record.id)
    return expired
