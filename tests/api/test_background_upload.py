"""BackgroundUpload: bytes hashed and written in order off the loop, limits on the loop."""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
from pathlib import Path
from typing import Any

import pytest

from app.api import background_upload
from app.api.background_upload import BackgroundUpload
from app.errors import InsufficientStorageError, UploadTooLargeError
from app.storage import BlobStore, UploadWriter, direct_file
from tests.full_disk import FullDisk


def _chunks(seed: int, total: int) -> list[bytes]:
    rng = random.Random(seed)
    out, sent = [], 0
    while sent < total:
        size = min(rng.randint(1, 300_000), total - sent)
        out.append(rng.randbytes(size))
        sent += size
    return out


def test_many_batches_in_flight_keep_the_bytes_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(background_upload, "BATCH_BYTES", 64 * 1024)  # ~150 batches
    chunks = _chunks(seed=1, total=10_000_000)
    blobs = BlobStore(tmp_path)
    writer = UploadWriter(blobs, max_bytes=10_000_000)
    threads: dict[str, set[str]] = {"write_block": set(), "hash_block": set()}
    for name in threads:
        real = getattr(writer, name)

        def spy(block: Any, name: str = name, real: Any = real) -> None:
            threads[name].add(threading.current_thread().name)
            real(block)

        monkeypatch.setattr(writer, name, spy)

    async def send() -> None:
        background = BackgroundUpload(writer)
        for chunk in chunks:
            await background.write(chunk)
        await background.finish()

    asyncio.run(send())
    digest, size = writer.commit()
    data = b"".join(chunks)
    assert (digest, size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert blobs.path_for(digest).read_bytes() == data
    # Each job on one thread of its own (so in order), neither on the event loop's thread.
    (stored,), (hashed,) = threads["write_block"], threads["hash_block"]
    assert stored != hashed
    assert threading.main_thread().name not in (stored, hashed)


def test_the_limit_is_enforced_on_the_loop_at_the_chunk_that_passes_it(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    writer = UploadWriter(blobs, max_bytes=1000)
    accepted: list[int] = []

    async def send() -> None:
        background = BackgroundUpload(writer)
        try:
            for chunk in [b"x" * 400] * 5:
                await background.write(chunk)
                accepted.append(len(chunk))
        finally:
            await background.drain()
            writer.abort()

    with pytest.raises(UploadTooLargeError, match="limit of 1000 bytes"):
        asyncio.run(send())
    assert accepted == [400, 400]  # the third chunk passes 1000 bytes and is refused
    assert writer.size_bytes == 0  # refused on the loop: no batch had reached the thread
    assert list(blobs.tmp_dir.iterdir()) == []


def test_a_full_disk_surfaces_as_507_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(background_upload, "BATCH_BYTES", 1024)
    blobs = BlobStore(tmp_path)
    writer = UploadWriter(blobs, max_bytes=10**9)

    monkeypatch.setattr(direct_file, "os", FullDisk())

    async def send() -> None:
        background = BackgroundUpload(writer)
        try:
            for chunk in _chunks(seed=2, total=2_000_000):
                await background.write(chunk)
            await background.finish()
        finally:
            await background.drain()
            writer.abort()

    with pytest.raises(InsufficientStorageError) as info:
        asyncio.run(send())
    assert info.value.status == 507
    assert list(blobs.tmp_dir.iterdir()) == []
