"""Streaming upload writer: hashes and counts bytes as they arrive, enforcing the size limit."""

from __future__ import annotations

import errno
import hashlib
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from app.errors import InsufficientStorageError, UploadTooLargeError
from app.storage.blobs import BlobStore
from app.storage.direct_file import DirectFile, FilledBlock


class UploadWriter:
    """Writes one upload to a temp file; ``commit`` files it by digest, ``abort`` removes it.

    The limit is checked on every chunk, so an oversized upload stops at the limit instead
    of filling the disk first. Used as a context manager, the temp file is gone on exit
    (moved into the store by a commit, or removed).
    """

    def __init__(self, blobs: BlobStore, *, max_bytes: int) -> None:
        self._blobs = blobs
        self._max_bytes = max_bytes
        fd, name = tempfile.mkstemp(prefix="upload-", dir=blobs.tmp_dir)
        self._file = DirectFile(fd)  # past the page cache: written once, read back rarely
        self.tmp_path = Path(name)
        self._hash = hashlib.sha256()
        self.size_bytes = 0
        self._done = False

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

    def stage(self, chunks: list[bytes]) -> Iterator[FilledBlock]:
        """Count chunks and copy them into the file's buffers, yielding each filled block.

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
            yield from self._file.fill(chunks)

    def write_block(self, block: FilledBlock) -> None:
        """Write a block from ``stage`` to the file.

        Raises:
            InsufficientStorageError: The disk is full.
        """
        with _disk_full_is_507():
            self._file.write_block(block)

    def hash_block(self, block: FilledBlock) -> None:
        """Feed a block from ``stage`` to the sha256 (one call: the GIL is released for all of
        it) and release its memory."""
        try:
            self._hash.update(block.data)
        finally:
            block.release()

    def commit(self) -> tuple[str, int]:
        """Close, move into the blob store, and return (sha256, size_bytes).

        When the bytes were stored already, the temp file stays until ``abort`` (or the
        context's exit) removes it, so a server can answer first (``BlobStore.commit``).
        """
        with _disk_full_is_507():
            self._file.close()
        digest = self._hash.hexdigest()
        self._done = self._blobs.commit(self.tmp_path, digest)
        return digest, self.size_bytes

    def abort(self) -> None:
        """Close and delete the temp file, if any (idempotent): what an unfinished upload
        left, or the second copy of bytes that were stored already."""
        self._file.discard()
        self.tmp_path.unlink(missing_ok=True)
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
