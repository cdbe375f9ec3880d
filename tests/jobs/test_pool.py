"""The worker pool with real spawned processes: crashes and timeouts fail one task only."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.errors import ArchitectureNotFoundError
from app.jobs.pool import WorkerPool
from tests.jobs.fake_worker import fake_worker_main


def _wait_for(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path.name} never appeared")
        time.sleep(0.05)


Failures = list[tuple[str, dict[str, Any]]]


@contextlib.contextmanager
def running_pool(
    marks: Path, failures: Failures | None = None, **overrides: Any
) -> Iterator[WorkerPool]:
    """A one-worker pool of stand-in workers that leave marks in ``marks``; stopped after."""
    options: dict[str, Any] = {"timeout": 30, "max_tasks": 100}
    options.update(overrides)
    recorded = failures if failures is not None else []
    pool = WorkerPool(
        1,
        settings={"marks": str(marks)},
        on_job_failed=lambda job_id, problem: recorded.append((job_id, problem)),
        worker_target=fake_worker_main,
        **options,
    )
    pool.start()
    try:
        yield pool
    finally:
        pool.stop()


@pytest.fixture
def failures() -> Failures:
    return []


@pytest.fixture
def fake_pool(tmp_path: Path, failures: Failures) -> Iterator[WorkerPool]:
    with running_pool(tmp_path, failures) as pool:
        yield pool


def test_pool_fails_only_the_task_of_a_killed_worker(
    fake_pool: WorkerPool, tmp_path: Path, failures: Failures
) -> None:
    hung = fake_pool.submit_job("hang-1")
    _wait_for(tmp_path / "hang-1.pid")
    os.kill(int((tmp_path / "hang-1.pid").read_text()), signal.SIGKILL)
    hung.result(timeout=30)
    assert [job for job, _ in failures] == ["hang-1"]
    assert failures[0][1]["type"] == "/problems/worker-crashed"
    assert failures[0][1]["status"] == 500

    fake_pool.submit_job("ok-2").result(timeout=60)
    assert (tmp_path / "ok-2.done").exists()
    assert len(failures) == 1


def test_pool_kills_a_worker_past_the_time_limit(tmp_path: Path, failures: Failures) -> None:
    with running_pool(tmp_path, failures, timeout=1.0) as pool:
        pool.submit_job("hang-timeout").result(timeout=30)
        assert failures[0][0] == "hang-timeout"
        assert failures[0][1]["type"] == "/problems/check-timed-out"
        assert failures[0][1]["limit"] == "check_timeout_seconds"
        pool.submit_job("after").result(timeout=60)
        assert (tmp_path / "after.done").exists()


def test_pool_recycles_workers_after_max_tasks(tmp_path: Path) -> None:
    with running_pool(tmp_path, max_tasks=1) as pool:
        pool.submit_job("first").result(timeout=60)
        pool.submit_job("second").result(timeout=60)
        assert (tmp_path / "first.pid").read_text() != (tmp_path / "second.pid").read_text()


def test_pool_call_returns_the_worker_result(fake_pool: WorkerPool) -> None:
    assert asyncio.run(fake_pool.call("echo")) == "echo"


@pytest.mark.slow
def test_pool_real_worker_reraises_app_errors(tmp_path: Path) -> None:
    from app.config import Settings

    settings = Settings(data_dir=tmp_path, workers=1)
    pool = WorkerPool(
        1,
        settings=settings.model_dump(mode="json"),
        timeout=120,
        max_tasks=10,
        on_job_failed=lambda *_: None,
    )
    pool.start()
    try:
        detail = asyncio.run(
            pool.call("describe_architecture", name="torchvision:resnet18", kwargs={})
        )
        assert detail["tensor_count"] == 122
        with pytest.raises(ArchitectureNotFoundError, match="resnet18"):
            asyncio.run(pool.call("describe_architecture", name="torchvision:resnet81", kwargs={}))
    finally:
        pool.stop()


@pytest.mark.parametrize(("ceiling", "recycled"), [(1, True), (0, False)])
def test_pool_recycles_workers_above_the_memory_ceiling(
    tmp_path: Path, ceiling: int, recycled: bool
) -> None:
    with running_pool(tmp_path, max_rss_bytes=ceiling) as pool:
        pool.submit_job("first").result(timeout=60)
        pool.submit_job("second").result(timeout=60)
        pids = {(tmp_path / f"{name}.pid").read_text() for name in ("first", "second")}
        assert (len(pids) == 2) is recycled


def test_pool_resident_bytes_reads_this_process() -> None:
    from app.jobs.pool import resident_bytes

    rss = resident_bytes(os.getpid())
    assert rss is not None and rss > 1024 * 1024
    assert resident_bytes(2**22 + 12345) is None


def test_pool_urgent_calls_go_first_and_other_calls_queue_behind_checks(tmp_path: Path) -> None:
    """A burst of costly descriptions (non-urgent calls) cannot hold queued checks back."""

    async def scenario(pool: WorkerPool) -> None:
        pool.submit_job("hang-busy")  # holds the only worker until its time limit
        _wait_for(tmp_path / "hang-busy.pid")
        pool.submit_job("queued-check")
        later = asyncio.ensure_future(pool.call("described", urgent=False))
        first = asyncio.ensure_future(pool.call("catalogue"))
        await asyncio.sleep(0.1)  # both enqueued while the worker is busy
        assert await asyncio.gather(first, later) == ["catalogue", "described"]

    with running_pool(tmp_path, timeout=1.5) as pool:
        asyncio.run(scenario(pool))
        _wait_for(tmp_path / "queued-check.done")
    started = {
        name: (tmp_path / f"{name}.pid").stat().st_mtime_ns
        for name in ("catalogue", "queued-check", "described")
    }
    assert sorted(started, key=started.__getitem__) == ["catalogue", "queued-check", "described"]
