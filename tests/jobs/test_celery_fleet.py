"""The distributed mode end to end: API processes and Celery workers on Redis and PostgreSQL.

Everything is real: ``redis-server`` and PostgreSQL on free loopback ports, two ``ckpt-compat
serve`` processes and two ``ckpt-compat worker`` processes sharing one database and one data
directory. Checks must run exactly once, survive a worker killed mid-check and a Redis
restart, and wake ``?wait`` on either API process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from app.jobs import redis_bus
from tests.security.conftest import good_checkpoint
from tests.security.test_faults import slow_checkpoint
from tests.servers import (
    PostgresServer,
    RedisServer,
    free_port,
    running_redis,
    start_cli,
    stop_process,
)

pytestmark = pytest.mark.slow


def _env(data_dir: Path, redis: RedisServer, database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "CKPT_COMPAT_QUEUE": "celery",
        "CKPT_COMPAT_BROKER_URL": redis.url,
        "CKPT_COMPAT_DATABASE_URL": database_url,
        "CKPT_COMPAT_DATA_DIR": str(data_dir),
        "CKPT_COMPAT_LEASE_SECONDS": "3",
        "CKPT_COMPAT_REPUBLISH_AFTER_SECONDS": "2",
        "CKPT_COMPAT_INDEX_ON_START": "false",
        "CKPT_COMPAT_CHECK_TIMEOUT_SECONDS": "120",
    }


def _wait(predicate: Any, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (httpx.TransportError, OSError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class Fleet:
    """Two API processes and two Celery workers; ``apis`` are their base URLs."""

    def __init__(self, tmp: Path, redis: RedisServer, database_url: str) -> None:
        self.tmp = tmp
        self.redis = redis
        self.database_url = database_url
        self.env = _env(tmp / "data", redis, database_url)
        self.apis: list[str] = []
        self.workers: list[subprocess.Popen[bytes]] = []
        self.stack = ExitStack()

    def start_worker(self) -> subprocess.Popen[bytes]:
        index = len(self.workers)
        worker = start_cli(
            ["worker", "--concurrency", "1"], self.env, self.tmp / f"worker{index}.log"
        )
        self.stack.callback(stop_process, worker)
        self.workers.append(worker)
        return worker

    def start_api(self) -> str:
        port = free_port()
        index = len(self.apis)
        api = start_cli(["serve", "--port", str(port)], self.env, self.tmp / f"api{index}.log")
        self.stack.callback(stop_process, api)
        base = f"http://127.0.0.1:{port}"
        _wait(lambda: httpx.get(f"{base}/livez").status_code == 200, f"API {index}")
        self.apis.append(base)
        return base

    def wait_for_workers(self, count: int) -> None:
        _wait(lambda: redis_bus.live_workers(self.redis.url) >= count, f"{count} workers")

    def attempts(self, check_id: str) -> int:
        engine = create_engine(self.database_url)
        try:
            with engine.connect() as connection:
                found = connection.execute(
                    text("SELECT attempts FROM checks WHERE id = :id"), {"id": check_id}
                ).scalar()
        finally:
            engine.dispose()
        return int(found)


@pytest.fixture
def fleet(tmp_path: Path, postgres: PostgresServer) -> Iterator[Fleet]:
    with running_redis() as redis:
        fleet = Fleet(tmp_path, redis, postgres.new_database())
        with fleet.stack:
            yield fleet


def _post(base: str, content: bytes, *, wait: float = 0, merge: bool = False) -> dict[str, Any]:
    response = httpx.post(
        f"{base}/v1/checks",
        params={"wait": wait},
        data={
            "architecture": "torchvision:resnet18",
            "options": '{"merge": {}}' if merge else "{}",
        },
        files={"file": ("upload.pt", content)},
        timeout=90,
    )
    assert response.status_code in (200, 202), response.text
    check: dict[str, Any] = response.json()
    return check


def _get(base: str, check_id: str, wait: float = 0) -> dict[str, Any]:
    response = httpx.get(f"{base}/v1/checks/{check_id}", params={"wait": wait}, timeout=90)
    check: dict[str, Any] = response.json()
    return check


def test_celery_fleet_checks_run_once_across_api_processes_and_workers(fleet: Fleet) -> None:
    first, second = fleet.start_api(), fleet.start_api()
    fleet.start_worker()
    fleet.start_worker()
    fleet.wait_for_workers(2)
    names = httpx.get(f"{second}/v1/architectures", params={"q": "resnet18"}).json()["items"]
    assert "torchvision:resnet18" in {n["name"] for n in names}  # the workers' snapshot
    submitted = [_post((first, second)[i % 2], good_checkpoint(), merge=i == 0) for i in range(8)]
    for i, check in enumerate(submitted):
        # ?wait on the other API process than the one that queued it: woken over Redis.
        done = _get((second, first)[i % 2], check["id"], wait=60)
        assert done["status"] == "succeeded", done["error"]
        assert fleet.attempts(check["id"]) == 1
    merged = httpx.get(f"{second}{submitted[0]['links']['merged']}", timeout=60)
    assert merged.status_code == 200 and len(merged.content) > 40_000_000
    ready = httpx.get(f"{first}/readyz").json()
    assert ready["checks"]["workers"] == "2 ready"


def test_celery_fleet_a_worker_killed_mid_check_is_retried_by_another(fleet: Fleet) -> None:
    api = fleet.start_api()
    fleet.start_worker()
    fleet.start_worker()
    fleet.wait_for_workers(2)
    check = _post(api, slow_checkpoint(count=60_000))
    engine = create_engine(fleet.database_url)
    running: dict[str, Any] = {}

    def started() -> bool:
        with engine.connect() as connection:
            row = connection.execute(
                text("SELECT status, worker FROM checks WHERE id = :id"), {"id": check["id"]}
            ).one()
        running.update(status=row[0], worker=row[1])
        return row[0] == "running"

    _wait(started, "the check to start", timeout=60)
    engine.dispose()
    child = int(running["worker"].rsplit(":", 1)[1])
    os.kill(child, signal.SIGKILL)  # the child process running the check
    done = _get(api, check["id"], wait=60)
    deadline = time.monotonic() + 90
    while done["status"] in ("queued", "running") and time.monotonic() < deadline:
        done = _get(api, check["id"], wait=10)
    assert done["status"] == "succeeded", done
    assert fleet.attempts(check["id"]) == 2  # the lost run and the retry, no more


def test_celery_fleet_checks_queued_when_redis_restarts_are_not_lost(fleet: Fleet) -> None:
    api = fleet.start_api()
    first = fleet.start_worker()
    fleet.wait_for_workers(1)
    assert _post(api, good_checkpoint(), wait=60)["status"] == "succeeded"
    stop_process(first)  # queue four checks while no worker takes them
    submitted = [_post(api, good_checkpoint())["id"] for _ in range(4)]
    fleet.redis.restart()  # no persistence: the four messages are gone
    fleet.start_worker()
    fleet.wait_for_workers(1)
    for check_id in submitted:
        done = _get(api, check_id, wait=60)
        deadline = time.monotonic() + 60
        while done["status"] == "queued" and time.monotonic() < deadline:
            done = _get(api, check_id, wait=10)
        assert done["status"] == "succeeded", done
        assert fleet.attempts(check_id) == 1


def test_celery_fleet_delete_cancels_a_running_check(fleet: Fleet) -> None:
    api = fleet.start_api()
    fleet.start_worker()
    fleet.wait_for_workers(1)
    check = _post(api, slow_checkpoint(count=60_000))
    _wait(lambda: _get(api, check["id"])["status"] == "running", "the check to start", 60)
    assert httpx.delete(f"{api}/v1/checks/{check['id']}").status_code == 204
    assert httpx.get(f"{api}/v1/checks/{check['id']}").status_code == 404
    after = _post(api, good_checkpoint(), wait=60)  # the worker serves the next check
    assert after["status"] == "succeeded"
    assert not (fleet.tmp / "data" / "results" / check["id"]).exists()
