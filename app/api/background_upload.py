"""Hash and write an upload on background threads while the event loop receives more.

Handing each network chunk (64-256 KiB) to a thread and waiting for it leaves the loop idle
while the thread hashes and the thread idle while the loop reads, and the client stalls in
between. Here chunks are gathered into batches, and a few batches may be in flight on two
threads of the upload's own. The store thread copies each batch into the file's buffers
(without the GIL) and writes them; the hash thread hashes the same buffers meanwhile. Each
thread keeps the bytes' order, so receiving, copying, writing and hashing overlap. The size
limit is checked on the loop as bytes arrive.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from app.storage import UploadWriter

# 16 MiB batches: each is one O_DIRECT write and one hash call; on the benchmark's VM the
# upload of 1.13 GB took 1.27 s with these and 1.39 s with 4 MiB batches.
BATCH_BYTES = 16 * 1024 * 1024
MAX_IN_FLIGHT = 2  # batches not yet written and hashed: at most 32 MiB of chunks held


class BackgroundUpload:
    """Feeds an ``UploadWriter`` from the event loop; call ``finish`` or ``drain`` at the end."""

    def __init__(self, writer: UploadWriter) -> None:
        self.writer = writer
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload-hash")
        self._storer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload-write")
        self._in_flight: deque[asyncio.Task[None]] = deque()
        self._batch: list[bytes] = []
        self._batched = 0
        self._received = 0

    async def write(self, chunk: bytes) -> None:
        """Take a chunk; waits only when ``MAX_IN_FLIGHT`` batches are not written yet.

        Raises:
            UploadTooLargeError: The bytes received so far pass the writer's limit.
            InsufficientStorageError: An earlier batch found the disk full.
        """
        self._received += len(chunk)
        self.writer.check_size(self._received)
        self._batch.append(chunk)
        self._batched += len(chunk)
        if self._batched >= BATCH_BYTES:
            await self._submit()

    async def finish(self) -> None:
        """Write what is left and wait until every byte is hashed and written."""
        await self._submit()
        while self._in_flight:
            await self._in_flight.popleft()
        self._shutdown()

    async def drain(self) -> None:
        """Wait for the batches in flight, ignoring their errors, so the file can be removed."""
        while self._in_flight:
            with contextlib.suppress(BaseException):
                await self._in_flight.popleft()
        self._shutdown()

    def _shutdown(self) -> None:
        self._hasher.shutdown(wait=False)
        self._storer.shutdown(wait=False)

    async def _submit(self) -> None:
        if not self._batch:
            return
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            await self._in_flight.popleft()
        batch, self._batch, self._batched = self._batch, [], 0
        self._in_flight.append(asyncio.ensure_future(self._complete(batch)))

    async def _complete(self, batch: list[bytes]) -> None:
        loop = asyncio.get_running_loop()
        hashed = await loop.run_in_executor(self._storer, self._store, batch)
        for future in hashed:
            await asyncio.wrap_future(future)

    def _store(self, batch: list[bytes]) -> list[concurrent.futures.Future[None]]:
        """On the store thread: copy and write the batch, handing each block to the hasher."""
        hashed: list[concurrent.futures.Future[None]] = []
        try:
            for block in self.writer.stage(batch):
                hashed.append(self._hasher.submit(self.writer.hash_block, block))
                self.writer.write_block(block)
        except BaseException:
            concurrent.futures.wait(hashed)  # no thread reads the buffers once this raises
            raise
        return hashed
