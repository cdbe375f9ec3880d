"""The catalogue index built in the background by real workers, a chunk per call."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.config import Settings
from app.jobs.indexer import MAX_RETRY_AFTER, MIN_RETRY_AFTER, CatalogIndexer
from app.jobs.pool import WorkerPool

pytestmark = pytest.mark.slow

NAMES = ["torchvision:resnet18", "timm:resnet18"]


def test_indexer_builds_the_index_in_a_worker_and_then_is_ready(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", workers=1)
    pool = WorkerPool(
        1,
        settings=settings.model_dump(mode="json"),
        timeout=300,
        max_tasks=100,
        on_job_failed=lambda _id, _problem: None,
    )
    pool.start()
    indexer = CatalogIndexer(pool, settings.cache_dir, names=NAMES)
    assert not indexer.ready
    assert MIN_RETRY_AFTER <= indexer.retry_after() <= MAX_RETRY_AFTER

    async def build() -> None:
        indexer.start()
        assert indexer.building
        await indexer.wait()
        indexer.start()  # ready: nothing to do
        assert not indexer.building

    try:
        asyncio.run(build())
    finally:
        pool.stop()
    assert indexer.ready and not indexer.failed
    assert (indexer.built, indexer.total) == (2, 2)
