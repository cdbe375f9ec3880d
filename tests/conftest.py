"""Real servers shared by the whole test session: PostgreSQL and redis-server (tests/servers.py).

No test builds the whole catalogue index (about 4 CPU-minutes, in a cache shared by data
directories): apps started by tests neither build it in the background nor read a
developer's own cache; tests that need an index build a small one in ``tmp_path``
(``tests/catalog_index/helpers.py``).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from tests.servers import PostgresServer, RedisServer, running_postgres, running_redis

_CACHE = tempfile.mkdtemp(prefix="ckpt-compat-test-cache-")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ.setdefault("CKPT_COMPAT_INDEX_ON_START", "false")
os.environ.setdefault("CKPT_COMPAT_CACHE_DIR", _CACHE)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server
