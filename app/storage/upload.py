"""Streaming upload writer: hashes and counts bytes as they arrive, enforcing the size limit."""

from __future__ import annotations

import errno
import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from app.errors import InsufficientStorageError, UploadTooLargeError
from app.storage.backend import Block
from app.storage.blobs import BlobStore
from app.storage.local import LocalWriter


class UploadWriter:
    """Streams one upload into storage; ``commit`` files it by digest, ``abort`` drops it.

    The limit is checked on every chunk, so an oversized upload stops at the limit instead
    of filling the disk first. Used as a context manager, the unfinished write is gone on
    exit (stored by a commit, or dropped). Where the bytes go meanwhile is the backend's
    business (``Storage.open_writer``: a temp file written past the page cache on disk).
    """

    def __init__(self, blobs: BlobStore, *, max_bytes: int) -> None:
        self._blobs = blobs
        self._max_bytes = max_bytes
        self._writer = blobs.open_writer()
        self._hash = hashlib.sha256()
        self.size_bytes = 0
        self._done = False
        self.started = time.monotonic()  # for the upload-duration metric

    def check_size(self, size_bytes: int) -> None:
        """Raise UploadTooLargeError if an upload of ``size_bytes`` would pass the limit."""
        if size_bytes > self._max_bytes:
            raise UploadTooLargeError(
                f"The upload exceeds the limit of {self._max_bytes} bytes "
                "(setting CKPT_COMPAT_MAX_UPLOAD_BYTES). Nothing was kept.",
                limit="max_upload_bytes",
                limit_value=self._max_bytes,
            )

    def write(self, chunk: bytes) -> None:
        """Append a chunk; raises UploadTooLargeError past the limit."""
        self.write_many([chunk])

    def write_many(self, chunks: list[bytes]) -> None:
        """Append several chunks, on this thread."""
        for block in self.stage(chunks):
            self.write_block(block)
            self.hash_block(block)

    @property
    def tmp_path(self) -> Path:
        """The temp file being written (the directory backend only: tests look at it)."""
        assert isinstance(self._writer, LocalWriter)
        return self._writer.tmp_path

    def stage(self, chunks: list[bytes]) -> Iterator[Block]:
        """Count chunks and copy them into the writer's buffers, yielding each filled block.

        Each block goes to ``write_block`` and to ``hash_block``, each of which may run on a
        thread of its own: the block's memory serves both. Each must see the blocks in the
        order they are yielded; without such threads, write and hash each block before
        asking for the next.

        Raises:
            UploadTooLargeError: The chunks pass the limit (nothing of them is copied).
            InsufficientStorageError: An earlier write found the disk full.
        """
        size = self.size_bytes + sum(len(chunk) for chunk in chunks)
        self.check_size(size)
        self.size_bytes = size
        with _disk_full_is_507():
            yield from self._writer.fill(chunks)

    def write_block(self, block: Block) -> None:
        """Write a block from ``stage`` to storage.

        Raises:
            InsufficientStorageError: The disk is full.
        """
        with _disk_full_is_507():
            self._writer.write_block(block)

    def hash_block(self, block: Block) -> None:
        """Feed a block from ``stage`` to the sha256 (one call: the GIL is released for all of
        it) and release its memory."""
        try:
            self._hash.update(block.data)
        finally:
            block.release()

    def commit(self) -> tuple[str, int]:
        """Finish, file under the digest in the blob store, and return (sha256, size_bytes).

        When the bytes were stored already, this copy stays until ``abort`` (or the
        context's exit) removes it, so a server can answer first (``BlobStore.commit``).
        """
        digest = self._hash.hexdigest()
        with _disk_full_is_507():
            self._done = self._blobs.commit(self._writer, digest)
        return digest, self.size_bytes

    def abort(self) -> None:
        """Drop the write (idempotent): what an unfinished upload left, or the second copy
        of bytes that were stored already."""
        self._writer.abort()
        self._done = True

    def __enter__(self) -> UploadWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._done:
            self.abort()


@contextmanager
def _disk_full_is_507() -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientStorageError(
                "The server ran out of disk space while storing the upload. "
                "Nothing was kept; try again later."
            ) from None
        raise
