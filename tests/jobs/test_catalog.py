"""The web process's architecture catalogue: descriptions cached by bytes, not by count."""

from __future__ import annotations

import asyncio
from typing import Any

from app.jobs.catalog import DESCRIBE_CACHE_BYTES, DESCRIBE_CACHE_ENTRY_BYTES, ArchitectureCatalog
from app.names import QualifiedName


class _DescribingPool:
    """Answers ``describe_architecture`` with ``layers`` tensors; records each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def call(self, fn: str, /, *, urgent: bool = True, **kwargs: Any) -> Any:
        self.calls.append((fn, {"urgent": urgent, **kwargs}))
        layers = kwargs["kwargs"]["layers"]
        return {"tensors": [{"key": f"layer.{i}.weight" + "x" * 90} for i in range(layers)]}


def _describe(catalog: ArchitectureCatalog, layers: int) -> dict[str, Any]:
    name = QualifiedName("transformers", "bert")
    return asyncio.run(catalog.describe(name, {"layers": layers}))


def test_catalog_describe_cache_is_bounded_by_bytes() -> None:
    pool = _DescribingPool()
    catalog = ArchitectureCatalog(pool)  # type: ignore[arg-type]
    for layers in range(1000, 1200):  # about 100 KB each: 20 MB in all
        _describe(catalog, layers)
    assert 0 < catalog.cached_bytes <= DESCRIBE_CACHE_BYTES
    calls = len(pool.calls)
    _describe(catalog, 1199)  # the newest is kept
    assert len(pool.calls) == calls
    _describe(catalog, 1000)  # the oldest went
    assert len(pool.calls) == calls + 1
    assert all(call[1]["urgent"] is False for call in pool.calls)


def test_catalog_describe_answers_but_does_not_keep_a_huge_description() -> None:
    pool = _DescribingPool()
    catalog = ArchitectureCatalog(pool)  # type: ignore[arg-type]
    huge = DESCRIBE_CACHE_ENTRY_BYTES // 100 + 1000
    assert len(_describe(catalog, huge)["tensors"]) == huge
    assert catalog.cached_bytes == 0
    _describe(catalog, huge)
    assert len(pool.calls) == 2
