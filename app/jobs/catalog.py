"""The web process's view of the architecture registry, fetched from a worker and cached.

The registry lives with torch in the workers; the web process asks once for the list of
names (they only change when packages do) and resolves names locally with the same rules.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from typing import Any

from app.jobs.pool import WorkerPool
from app.names import QualifiedName, resolve_in

_DESCRIBE_CACHE_SIZE = 64


class ArchitectureCatalog:
    """Cached architecture names and descriptions, backed by worker calls."""

    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool
        self._names: list[QualifiedName] | None = None
        self._lock = asyncio.Lock()
        self._described: OrderedDict[str, dict[str, Any]] = OrderedDict()

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
        """The ArchitectureDetail dict for a name and constructor kwargs."""
        key = json.dumps([str(name), kwargs], sort_keys=True)
        if key in self._described:
            self._described.move_to_end(key)
            return self._described[key]
        detail: dict[str, Any] = await self._pool.call(
            "describe_architecture", name=str(name), kwargs=kwargs
        )
        self._described[key] = detail
        while len(self._described) > _DESCRIBE_CACHE_SIZE:
            self._described.popitem(last=False)
        return detail
