"""Streaming upload writer: hashes and counts bytes as they arrive, enforcing the size limit."""

from __future__ import annotations

import errno
import hashlib
import mmap
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from app.errors import InsufficientStorageError, UploadTooLargeError
from app.storage.blobs import BlobStore
from app.storage.direct_file import DirectFile

HASH_BUFFER_BYTES = 8 * 1024 * 1024  # batches up to this size are hashed in one call


class UploadWriter:
    """Writes one upload to a temp file; ``commit`` files it by digest, ``abort`` removes it.

    The limit is checked on every chunk, so an oversized upload stops at the limit instead
    of filling the disk first. Used as a context manager, anything but a commit removes the
    temp file.
    """

    def __init__(self, blobs: BlobStore, *, max_bytes: int) -> None:
        self._blobs = blobs
        self._max_bytes = max_bytes
        fd, name = tempfile.mkstemp(prefix="upload-", dir=blobs.tmp_dir)
        self._file = DirectFile(fd)  # past the page cache: written once, read back rarely
        self.tmp_path = Path(name)
        self._hash = hashlib.sha256()
        self._hash_buffer: mmap.mmap | None = None
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
        self.store_many([chunk])
        self.hash_many([chunk])

    def write_many(self, chunks: list[bytes]) -> None:
        """Append several chunks (one thread hop for a batch of parser output)."""
        self.store_many(chunks)
        self.hash_many(chunks)

    def store_many(self, chunks: list[bytes]) -> None:
        """Count and write chunks, without hashing them.

        With ``hash_many``, lets two threads share an upload: one hashes while the other
        writes, each keeping the order of its own calls.

        Raises:
            UploadTooLargeError: The chunks pass the limit (nothing of them is written).
            InsufficientStorageError: The disk is full.
        """
        size = self.size_bytes + sum(len(chunk) for chunk in chunks)
        self.check_size(size)
        self.size_bytes = size
        with _disk_full_is_507():
            for chunk in chunks:
                self._file.write(chunk)

    def hash_many(self, chunks: list[bytes]) -> None:
        """Feed chunks to the sha256, in the order they were stored.

        A batch of several chunks is copied into one reused buffer and hashed in one call.
        On a thread beside a busy event loop, every hash call releases the GIL and then
        waits to win it back; per network chunk (~240 KiB) those waits cost about half as
        much as the hashing itself. The buffer is an anonymous mapping, not the allocator's
        memory, so it leaves the process's heap as it was.
        """
        size = sum(len(chunk) for chunk in chunks)
        if len(chunks) == 1 or size > HASH_BUFFER_BYTES:
            for chunk in chunks:
                self._hash.update(chunk)
            return
        if self._hash_buffer is None:
            self._hash_buffer = mmap.mmap(-1, HASH_BUFFER_BYTES)
        view = memoryview(self._hash_buffer)
        try:
            offset = 0
            for chunk in chunks:
                view[offset : offset + len(chunk)] = chunk
                offset += len(chunk)
            self._hash.update(view[:offset])
        finally:
            view.release()

    def commit(self) -> tuple[str, int]:
        """Close, move into the blob store, and return (sha256, size_bytes)."""
        with _disk_full_is_507():
            self._file.close()
        self._close_hash_buffer()
        digest = self._hash.hexdigest()
        self._blobs.commit(self.tmp_path, digest)
        self._done = True
        return digest, self.size_bytes

    def abort(self) -> None:
        """Close and delete the temp file (idempotent)."""
        self._file.discard()
        self._close_hash_buffer()
        self.tmp_path.unlink(missing_ok=True)
        self._done = True

    def _close_hash_buffer(self) -> None:
        if self._hash_buffer is not None:
            self._hash_buffer.close()
            self._hash_buffer = None

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
