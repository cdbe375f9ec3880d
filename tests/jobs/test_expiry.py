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
