"""Uploads no check uses expire once not sent for a while; used ones never do."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from app.jobs.db import make_engine
from app.jobs.expiry import expire_uploads
from app.jobs.repository import CheckRepository
from app.storage import BlobStore, UploadWriter

DAY = 86400.0


def _send(blobs: BlobStore, body: bytes, *, days_ago: float = 0.0) -> str:
    with UploadWriter(blobs, max_bytes=1000) as writer:
        writer.write(body)
        digest, _ = writer.commit()
    if days_ago:
        past = time.time() - days_ago * DAY
        os.utime(blobs.path_for(digest), (past, past))
    return digest


def test_only_uploads_unused_and_unsent_past_the_ttl_are_removed(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    repository = CheckRepository(make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    old_unused = _send(blobs, b"old, unused", days_ago=2)
    old_used = _send(blobs, b"old, used by a check", days_ago=2)
    fresh = _send(blobs, b"sent an hour ago", days_ago=1 / 24)
    repository.create(
        architecture="torchvision:resnet18",
        options={},
        filename="x.pth",
        size_bytes=1,
        sha256=old_used,
    )
    removed = expire_uploads(blobs, repository, threading.Lock(), ttl_seconds=DAY)
    assert removed == [old_unused]
    assert sorted(blobs.stored()) == sorted([old_used, fresh])
    assert expire_uploads(blobs, repository, threading.Lock(), ttl_seconds=DAY) == []


def test_sending_the_same_bytes_again_starts_the_time_over(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    repository = CheckRepository(make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    digest = _send(blobs, b"kept alive", days_ago=2)
    assert _send(blobs, b"kept alive") == digest  # stored once, sent again now
    assert expire_uploads(blobs, repository, threading.Lock(), ttl_seconds=DAY) == []
    assert blobs.exists(digest)


def test_results_of_checks_finished_past_the_ttl_expire_and_release_their_upload(
    tmp_path: Path,
) -> None:
    from app.jobs.expiry import expire_results
    from app.storage import ResultStore

    blobs, results = BlobStore(tmp_path), ResultStore(tmp_path)
    repository = CheckRepository(make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    digest = _send(blobs, b"checked once")

    def finished_check(owner: str | None) -> str:
        record = repository.create(
            architecture="torchvision:resnet18",
            options={},
            filename="x.pth",
            size_bytes=1,
            sha256=digest,
            owner=owner,
        )
        repository.mark_succeeded(record.id, merged_filename=None)
        results.write_report(record.id, {"check_id": record.id})
        return record.id

    old = finished_check("alice")
    time.sleep(0.3)
    fresh = finished_check("bob")
    running = repository.create(
        architecture="torchvision:resnet18", options={}, filename="x", size_bytes=1, sha256=digest
    )
    lock = threading.Lock()
    finished_at = repository.get(old).finished_at  # type: ignore[union-attr]
    assert finished_at is not None
    one_day_later = finished_at.timestamp() + DAY
    assert (
        expire_results(results, blobs, repository, lock, ttl_seconds=DAY, now=one_day_later) == []
    )
    expired = expire_results(
        results, blobs, repository, lock, ttl_seconds=DAY, now=one_day_later + 0.15
    )
    assert expired == [old]
    assert old in expired and running.id not in expired
    record = repository.get(old)
    assert record is not None and record.expired_at is not None
    assert results.read_report(old) is None
    assert blobs.exists(digest)  # Bob's check and the queued one still use it
    assert repository.count_with_sha256(digest) == 2
    repository.mark_succeeded(running.id, merged_filename=None)
    later = expire_results(results, blobs, repository, lock, ttl_seconds=0.0, now=time.time() + 1)
    assert sorted(later) == sorted([fresh, running.id])
    assert not blobs.exists(digest)  # the last check's results went: so did the upload
