"""The SQL of idempotency keys: claim a key for a request, bind it to the check it made.

The primary key (owner, key) decides: of two API processes inserting the same key at once,
one wins and the other reads the winner's row. Keys older than the TTL are deleted by whoever
claims next, so no sweeper is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.jobs.db import IdempotencyKeyRow
from app.jobs.repository import utcnow

STALE_CLAIM_SECONDS = 120.0
"""A claim not bound to a check after this long belongs to a request that died (its process
stopped between claiming and recording): another request may take the key over."""


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """A key's row: the request it was first sent with, and its check (None: in flight)."""

    fingerprint: str
    check_id: str | None


class IdempotencyKeys:
    """Idempotency keys per owner (``""`` for the one caller of a service without keys)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def claim(
        self, owner: str, key: str, fingerprint: str, *, ttl_seconds: float
    ) -> KeyEntry | None:
        """Claim ``key`` for a request; returns None when claimed, else the key's live entry."""
        now = utcnow()
        with Session(self._engine) as session, session.begin():
            expired = IdempotencyKeyRow.created_at < now - timedelta(seconds=ttl_seconds)
            session.execute(delete(IdempotencyKeyRow).where(expired))
        for _ in range(3):  # an entry may vanish (taken over, expired) between insert and read
            row = IdempotencyKeyRow(
                owner=owner, key=key, fingerprint=fingerprint, check_id=None, created_at=now
            )
            try:
                with Session(self._engine) as session, session.begin():
                    session.add(row)
                return None
            except IntegrityError:
                pass
            entry = self._read(owner, key, now=now)
            if entry is not None:
                return entry
        raise RuntimeError("idempotency key contention did not settle")  # pragma: no cover

    def _read(self, owner: str, key: str, *, now: datetime) -> KeyEntry | None:
        """The live entry, after dropping a stale in-flight claim (then None: claim again)."""
        with Session(self._engine) as session, session.begin():
            row = session.get(IdempotencyKeyRow, (owner, key))
            if row is None:
                return None
            created = row.created_at
            if created.tzinfo is None:  # SQLite drops the zone; every stored time is UTC
                created = created.replace(tzinfo=now.tzinfo)
            if row.check_id is None and now - created > timedelta(seconds=STALE_CLAIM_SECONDS):
                session.delete(row)
                return None
            return KeyEntry(row.fingerprint, row.check_id)

    def bind(self, owner: str, key: str, check_id: str) -> None:
        """Record the check the claiming request made: replays answer with it from now on."""
        with Session(self._engine) as session, session.begin():
            session.execute(
                update(IdempotencyKeyRow)
                .where(IdempotencyKeyRow.owner == owner, IdempotencyKeyRow.key == key)
                .values(check_id=check_id)
            )

    def release(self, owner: str, key: str) -> None:
        """Drop a claim whose request failed or whose check is gone: the key is free again."""
        with Session(self._engine) as session, session.begin():
            session.execute(
                delete(IdempotencyKeyRow).where(
                    IdempotencyKeyRow.owner == owner, IdempotencyKeyRow.key == key
                )
            )
