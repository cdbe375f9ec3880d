"""Uploads no check uses are removed once they have not been sent for a while.

A registry may ``PUT`` uploads it never checks, or checks and deletes the checks but not the
upload: without expiry the disk fills. An upload that checks use is never removed here (it
goes with the last of them); sending the same bytes again starts its time over.
"""

from __future__ import annotations

import threading
import time

from app.jobs.repository import CheckRepository
from app.storage import BlobStore


def expire_uploads(
    blobs: BlobStore,
    repository: CheckRepository,
    lock: threading.Lock,
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
