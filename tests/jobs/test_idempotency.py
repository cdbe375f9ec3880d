"""Idempotency keys in SQL: one claim wins across processes (SQLite and PostgreSQL), keys
expire after their TTL, a claim whose request died is taken over, and bind/release."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from app.jobs import idempotency
from app.jobs.db import IdempotencyKeyRow, make_engine
from app.jobs.idempotency import IdempotencyKeys, KeyEntry
from app.jobs.repository import utcnow
from tests.servers import PostgresServer

CLAIM = """
import sys
from app.jobs.db import make_engine
from app.jobs.idempotency import IdempotencyKeys
keys = IdempotencyKeys(make_engine(sys.argv[1], migrate=False))
print("claimed" if keys.claim("alice", "k", "f" * 64, ttl_seconds=60) is None else "taken")
"""


def _claim_in_processes(url: str, count: int) -> list[str]:
    make_engine(url).dispose()  # migrated once, before the race
    processes = [
        subprocess.Popen([sys.executable, "-c", CLAIM, url], stdout=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    return sorted(p.communicate(timeout=60)[0].strip() for p in processes)


def test_idempotency_claim_one_process_wins_on_sqlite(tmp_path: Path) -> None:
    assert _claim_in_processes(f"sqlite:///{tmp_path / 'db.sqlite'}", 4) == [
        "claimed",
        "taken",
        "taken",
        "taken",
    ]


def test_idempotency_claim_one_process_wins_on_postgres(postgres: PostgresServer) -> None:
    assert _claim_in_processes(postgres.new_database(), 4) == [
        "claimed",
        "taken",
        "taken",
        "taken",
    ]


def test_idempotency_claim_bind_and_replay(tmp_path: Path) -> None:
    keys = IdempotencyKeys(make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    assert keys.claim("alice", "k", "f1", ttl_seconds=60) is None
    assert keys.claim("alice", "k", "f1", ttl_seconds=60) == KeyEntry("f1", None)
    keys.bind("alice", "k", "c" * 32)
    assert keys.claim("alice", "k", "f2", ttl_seconds=60) == KeyEntry("f1", "c" * 32)
    assert keys.claim("bob", "k", "f2", ttl_seconds=60) is None  # per principal
    keys.release("alice", "k")
    assert keys.claim("alice", "k", "f2", ttl_seconds=60) is None


def test_idempotency_keys_expire_after_the_ttl(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    keys = IdempotencyKeys(engine)
    assert keys.claim("alice", "k", "f1", ttl_seconds=60) is None
    keys.bind("alice", "k", "c" * 32)
    with Session(engine) as session, session.begin():
        session.execute(update(IdempotencyKeyRow).values(created_at=utcnow() - timedelta(hours=2)))
    assert keys.claim("alice", "k", "f2", ttl_seconds=3600) is None  # expired: a new request


def test_idempotency_stale_in_flight_claim_is_taken_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = IdempotencyKeys(make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    assert keys.claim("alice", "k", "f1", ttl_seconds=3600) is None
    monkeypatch.setattr(idempotency, "STALE_CLAIM_SECONDS", -1.0)  # its request died
    assert keys.claim("alice", "k", "f1", ttl_seconds=3600) is None
