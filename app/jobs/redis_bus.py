"""What Celery workers tell API processes through Redis, besides the task messages.

- ``ckpt-compat:finished`` (pub/sub): a check finished. Each API process holds one
  subscription (``FinishedListener``) and wakes its own ``?wait`` requests, so waiting costs
  no poll per request.
- ``ckpt-compat:reply:<id>`` (a list): the JSON answer of a call (``/v1/architectures``).
- ``ckpt-compat:catalogue`` and ``ckpt-compat:worker:<name>``: the catalogue a worker
  published when it started, and each worker's heartbeat (``/readyz``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections import OrderedDict
from typing import Any

import redis
import redis.asyncio as aioredis

log = logging.getLogger(__name__)

FINISHED = "ckpt-compat:finished"
CATALOGUE = "ckpt-compat:catalogue"
WORKER_PREFIX = "ckpt-compat:worker:"
REPLY_PREFIX = "ckpt-compat:reply:"
REPLY_TTL_SECONDS = 120
HEARTBEAT_TTL_SECONDS = 30


@contextlib.contextmanager
def _client(url: str) -> Any:
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        yield client
    finally:
        client.close()


def publish_finished(url: str, check_id: str) -> None:
    """Tell every API process that a check finished (best effort: waiters also poll)."""
    try:
        with _client(url) as client:
            client.publish(FINISHED, check_id)
    except redis.RedisError:
        log.warning("could not announce that check %s finished", check_id)


def push_reply(url: str, key: str, payload: str) -> None:
    """Hand a call's JSON answer to the API process waiting on ``key``."""
    with _client(url) as client:
        client.rpush(key, payload)
        client.expire(key, REPLY_TTL_SECONDS)


def new_reply_key() -> str:
    return REPLY_PREFIX + secrets.token_hex(12)


async def await_reply(url: str, key: str, timeout: float) -> dict[str, Any] | None:
    """The answer pushed to ``key`` within ``timeout`` seconds, or None (also when Redis
    cannot be reached: the caller answers 503, never 500)."""
    wait = max(1, int(timeout))
    client = aioredis.Redis.from_url(url, socket_timeout=wait + 10, socket_connect_timeout=5)
    try:
        found = await client.blpop([key], timeout=wait)
    except redis.RedisError:
        log.warning("waiting for a worker's answer on Redis failed")
        return None
    finally:
        await client.aclose()
    if found is None:
        return None
    answer: dict[str, Any] = json.loads(found[1])
    return answer


def publish_catalogue(url: str, rows: list[list[str]]) -> None:
    """Store the catalogue a worker computed, for API processes without local workers."""
    with _client(url) as client:
        client.set(CATALOGUE, json.dumps(rows))


def read_catalogue(url: str) -> list[list[str]] | None:
    with _client(url) as client:
        raw = client.get(CATALOGUE)
    return json.loads(raw) if raw else None


def beat(url: str, worker: str, catalogue: list[list[str]]) -> None:
    """A worker is alive (the key expires unless renewed); the catalogue is published again
    if Redis lost it (a restart without persistence)."""
    with _client(url) as client:
        client.set(WORKER_PREFIX + worker, "1", ex=HEARTBEAT_TTL_SECONDS)
        client.set(CATALOGUE, json.dumps(catalogue), nx=True)


def reachable(url: str) -> bool:
    """The broker answers a ping."""
    try:
        with _client(url) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def live_workers(url: str) -> int:
    with _client(url) as client:
        return sum(1 for _ in client.scan_iter(match=WORKER_PREFIX + "*", count=100))


def backlog(url: str, queue: str) -> int:
    """Messages waiting in the broker's queue (Celery keeps a Redis list per queue)."""
    with _client(url) as client:
        return int(client.llen(queue))


class FinishedListener:
    """One subscription per API process; ``wait(check_id)`` resolves when it is announced."""

    RECENT = 10_000
    """Announcements remembered, so a check that finished between the caller's read of its
    record and ``wait`` returns at once instead of waiting out the timeout."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._listen())

    def cancel(self) -> None:
        """Stop listening (from the lifespan's shutdown; the task ends on its next await)."""
        if self._task is not None:
            self._task.cancel()

    async def wait(self, check_id: str, timeout: float) -> None:
        """Until the check is announced finished, or ``timeout`` seconds."""
        if check_id in self._recent:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(check_id, []).append(future)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            pass
        finally:
            waiters = self._waiters.get(check_id, [])
            if future in waiters:
                waiters.remove(future)
            if not waiters:
                self._waiters.pop(check_id, None)

    async def _listen(self) -> None:
        while True:
            client = aioredis.Redis.from_url(self._url)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(FINISHED)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._wake(message["data"].decode())
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis restarted or unreachable: resubscribe shortly
                log.warning("lost the Redis subscription; resubscribing")
                await asyncio.sleep(1.0)
            finally:
                await client.aclose()

    def _wake(self, check_id: str) -> None:
        self._recent[check_id] = None
        while len(self._recent) > self.RECENT:
            self._recent.popitem(last=False)
        for future in self._waiters.pop(check_id, []):
            if not future.done():
                future.set_result(None)
