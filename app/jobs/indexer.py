"""The web process's side of the catalogue index: is it ready, and build it in the background.

The build runs in workers, one chunk of architectures per call queued behind checks
(``urgent=False``), so a worker is never taken from checks for more than one chunk (a few
seconds) and the web process never imports torch. Readiness is the index file's existence,
so a build finished by ``ckpt-compat index`` or by another data directory's server counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from app.catalog_index.store import CHUNK_SIZE, index_path
from app.jobs.runner import JobRunner

log = logging.getLogger(__name__)

MIN_RETRY_AFTER = 5  # seconds
MAX_RETRY_AFTER = 600  # seconds


class CatalogIndexer:
    """Tells whether the catalogue index is ready, and builds it in the background.

    Args:
        pool: The worker pool that runs the build.
        cache_dir: ``CKPT_COMPAT_CACHE_DIR``.
        names: Qualified names to index; the whole catalogue when None (tests index a few).
    """

    def __init__(self, pool: JobRunner, cache_dir: Path, *, names: list[str] | None = None) -> None:
        self._pool = pool
        self._path = index_path(cache_dir)
        self._names = names
        self._task: asyncio.Task[None] | None = None
        self.total = 0
        self.built = 0
        self._chunk_seconds = 10.0
        self.failed = False

    @property
    def ready(self) -> bool:
        """Whether the index for the installed libraries is on disk."""
        return self._path.exists()

    @property
    def building(self) -> bool:
        """Whether a background build is running in this process."""
        return self._task is not None and not self._task.done()

    def retry_after(self) -> int:
        """Seconds until the index is probably ready (for ``Retry-After``)."""
        left = max(0, self.total - self.built)
        chunks = -(-left // CHUNK_SIZE) if left else 1
        return int(min(MAX_RETRY_AFTER, max(MIN_RETRY_AFTER, chunks * self._chunk_seconds)))

    def start(self) -> None:
        """Start the background build unless the index is ready or one is running."""
        if self.ready or self.building:
            return
        self._task = asyncio.create_task(self._build(), name="catalog-index")

    async def stop(self) -> None:
        """Cancel a running build; its finished chunks stay on disk for the next start."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait(self) -> None:
        """Wait for the background build to end (tests)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _build(self) -> None:
        try:
            plan = await self._pool.call("index_plan", urgent=False, names=self._names)
            if plan["ready"]:
                return
            names: list[str] = plan["names"]
            self.total = len(names)
            self.built = self.total - sum(len(c) for c in plan["chunks"])
            log.info(
                "Building the catalogue index: %d of %d to go.", self.total - self.built, self.total
            )
            for chunk in plan["chunks"]:
                started = time.monotonic()
                try:
                    await self._pool.call("index_chunk", urgent=False, names=chunk)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a crashed or timed-out chunk is left out, not retried
                    log.exception("A chunk of the catalogue index failed; it is left out.")
                self._chunk_seconds = time.monotonic() - started
                self.built += len(chunk)
            summary = await self._pool.call("index_finish", urgent=False, names=names)
            log.info("The catalogue index is ready: %s.", summary)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.failed = True
            log.exception("Building the catalogue index failed; run 'ckpt-compat index'.")
