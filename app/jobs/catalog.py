"""The web process's view of the architecture registry, fetched from a worker and cached.

The registry lives with torch in the workers; the web process asks once for the list of
names (they only change when packages do) and resolves names locally with the same rules.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from typing import Any

from app.jobs.runner import JobRunner
from app.names import QualifiedName, resolve_in

DESCRIBE_CACHE_BYTES = 16 * 1024 * 1024
"""Bytes of architecture descriptions (as JSON) the web process keeps; the size of one is
chosen by the caller's kwargs (BERT with 3000 layers is 30 MB), so the bound is bytes."""

DESCRIBE_CACHE_ENTRY_BYTES = DESCRIBE_CACHE_BYTES // 8
"""A description larger than this is answered but not kept."""


class ArchitectureCatalog:
    """Cached architecture names and descriptions, backed by worker calls."""

    def __init__(self, pool: JobRunner) -> None:
        self._pool = pool
        self._names: list[QualifiedName] | None = None
        self._lock = asyncio.Lock()
        self._described: OrderedDict[str, tuple[dict[str, Any], int]] = OrderedDict()
        self._described_bytes = 0

    async def names(self) -> list[QualifiedName]:
        """Every architecture, sorted by name then source."""
        if self._names is None:
            async with self._lock:
                if self._names is None:
                    rows = await self._pool.call("catalog")
                    names = [
                        QualifiedName(source, str(qn).partition(":")[2]) for qn, source in rows
                    ]
                    self._names = sorted(names, key=lambda q: (q.name, q.source))
        return self._names

    async def resolve(self, text: str) -> QualifiedName:
        """Resolve a possibly bare name; unknown names raise ArchitectureNotFoundError."""
        return resolve_in(text, await self.names())

    async def describe(self, name: QualifiedName, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The ArchitectureDetail dict for a name and constructor kwargs.

        Described by a worker in turn with queued checks (``pool.call(..., urgent=False)``):
        a burst of costly descriptions cannot hold checks back.
        """
        key = json.dumps([str(name), kwargs], sort_keys=True)
        if key in self._described:
            self._described.move_to_end(key)
            return self._described[key][0]
        detail: dict[str, Any] = await self._pool.call(
            "describe_architecture", urgent=False, name=str(name), kwargs=kwargs
        )
        self._keep(key, detail)
        return detail

    def _keep(self, key: str, detail: dict[str, Any]) -> None:
        size = len(key) + len(json.dumps(detail, separators=(",", ":")))
        if size > DESCRIBE_CACHE_ENTRY_BYTES or key in self._described:
            return
        self._described[key] = (detail, size)
        self._described_bytes += size
        while self._described_bytes > DESCRIBE_CACHE_BYTES:
            _key, (_detail, evicted) = self._described.popitem(last=False)
            self._described_bytes -= evicted

    @property
    def cached_bytes(self) -> int:
        """Bytes of descriptions held (for tests and metrics)."""
        return self._described_bytes
