"""The distributed mode against the local pool: overhead per check, and throughput.

    .venv/bin/python -m benchmarks.fleet [--checks 500] [--overhead-runs 30]

Starts a real PostgreSQL and redis-server (as the tests do, ``tests/servers.py``) and real
``ckpt-compat serve`` / ``ckpt-compat worker`` processes on loopback.

- Overhead: one small check end to end (``POST /v1/checks?wait=60`` until the answer), the
  median of ``--overhead-runs``, Celery mode against the local pool on the same PostgreSQL
  (goal: within 50 ms); the local pool on SQLite, the default, is listed too.
- Throughput: ``--checks`` small checks submitted at once, with 1 and then 2 Celery worker
  processes; checks per second, the ratio, and errors, lost (not succeeded) and duplicated
  (claimed more than once) checks, read from the database.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch
from sqlalchemy import create_engine, text

from tests.servers import (
    free_port,
    running_postgres,
    running_redis,
)
from tests.servers import (
    start_cli as start,
)
from tests.servers import (
    stop_process as stop,
)
from tests.servers import (
    wait_until_ready as wait_ready,
)


def small_checkpoint(serial: int) -> bytes:
    """A valid, different file each time (no result reuse): resnet18's head only."""
    buffer = io.BytesIO()
    torch.save(
        {"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.full((1000,), float(serial))}, buffer
    )
    return buffer.getvalue()


def post(base: str, content: bytes, wait: float) -> dict[str, Any]:
    response = httpx.post(
        f"{base}/v1/checks",
        params={"wait": wait},
        data={"architecture": "torchvision:resnet18"},
        files={"file": ("c.pt", content)},
        timeout=120,
    )
    response.raise_for_status()
    check: dict[str, Any] = response.json()
    return check


def overhead(base: str, runs: int, serial: int) -> float:
    """Median seconds of one small check end to end."""
    post(base, small_checkpoint(serial), 60)  # warm: catalogue, connections
    times = []
    for i in range(runs):
        content = small_checkpoint(serial + 1 + i)
        started = time.perf_counter()
        check = post(base, content, 60)
        times.append(time.perf_counter() - started)
        assert check["status"] == "succeeded", check
    return statistics.median(times)


def throughput(base: str, count: int, database_url: str, serial: int) -> dict[str, Any]:
    files = [small_checkpoint(serial + i) for i in range(count)]
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ids = [c["id"] for c in pool.map(lambda f: post(base, f, 0), files)]
    errors = 0
    pending = set(ids)
    deadline = time.monotonic() + 1800
    engine = create_engine(database_url)
    while pending and time.monotonic() < deadline:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT id, status FROM checks WHERE status IN ('succeeded', 'failed')")
            ).all()
        done = {row[0] for row in rows}
        pending -= done
        time.sleep(0.2)
    elapsed = time.perf_counter() - started
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT status, attempts FROM checks WHERE id = ANY(:ids)"), {"ids": ids}
        ).all()
    engine.dispose()
    errors = sum(1 for status, _ in rows if status == "failed")
    lost = len(ids) - sum(1 for status, _ in rows if status == "succeeded")
    duplicated = sum(1 for _, attempts in rows if attempts > 1)
    return {
        "checks": count,
        "seconds": round(elapsed, 2),
        "per_second": round(count / elapsed, 2),
        "errors": errors,
        "lost": lost,
        "duplicated": duplicated,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checks", type=int, default=500)
    parser.add_argument("--overhead-runs", type=int, default=30)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="fleet-") as tmp,
        running_postgres() as pg,
        running_redis() as redis,
    ):
        # No catalogue index (an empty cache): the small checkpoint is incompatible with
        # resnet18, and ranking the catalogue for it would measure ranking, not the runner.
        base_env = {
            **os.environ,
            "CKPT_COMPAT_INDEX_ON_START": "false",
            "CKPT_COMPAT_CACHE_DIR": f"{tmp}/cache",
            "CKPT_COMPAT_WORKERS": "1",
        }
        processes: list[subprocess.Popen[bytes]] = []
        try:
            # The local pool: one API process with one worker process, on SQLite (the
            # default) and on the PostgreSQL the fleet uses, so the runner's own cost shows.
            database_url = pg.new_database()
            for name, extra in (
                ("local_sqlite_p50_ms", {}),
                ("local_p50_ms", {"CKPT_COMPAT_DATABASE_URL": database_url}),
            ):
                port = free_port()
                local_env = {**base_env, "CKPT_COMPAT_DATA_DIR": f"{tmp}/{name}", **extra}
                log = Path(tmp, f"{name}.log")
                processes.append(start(["serve", "--port", str(port)], local_env, log))
                local = f"http://127.0.0.1:{port}"
                wait_ready(local)
                serial = 0 if extra else 5_000
                results[name] = round(overhead(local, args.overhead_runs, serial) * 1000, 1)
                stop(processes.pop())
            celery_env = {
                **base_env,
                "CKPT_COMPAT_QUEUE": "celery",
                "CKPT_COMPAT_BROKER_URL": redis.url,
                "CKPT_COMPAT_DATABASE_URL": database_url,
                "CKPT_COMPAT_DATA_DIR": f"{tmp}/fleet",
            }
            port = free_port()
            processes.append(
                start(["serve", "--port", str(port)], celery_env, Path(tmp, "api.log"))
            )
            api = f"http://127.0.0.1:{port}"
            processes.append(
                start(["worker", "--concurrency", "1"], celery_env, Path(tmp, "w1.log"))
            )
            wait_ready(api)
            results["celery_p50_ms"] = round(overhead(api, args.overhead_runs, 10_000) * 1000, 1)
            results["overhead_ms"] = round(results["celery_p50_ms"] - results["local_p50_ms"], 1)
            results["one_worker"] = throughput(api, args.checks, database_url, 20_000)
            processes.append(
                start(["worker", "--concurrency", "1"], celery_env, Path(tmp, "w2.log"))
            )
            deadline = time.monotonic() + 180
            while httpx.get(f"{api}/readyz").json()["checks"]["workers"] != "2 ready":
                if time.monotonic() > deadline:
                    raise TimeoutError("the second worker never became ready")
                time.sleep(0.5)
            results["two_workers"] = throughput(api, args.checks, database_url, 40_000)
            results["throughput_ratio"] = round(
                results["two_workers"]["per_second"] / results["one_worker"]["per_second"], 2
            )
        finally:
            for process in processes:
                stop(process)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
