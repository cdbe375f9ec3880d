"""The check and upload-owner tables (SQLAlchemy 2, SQLite by default) and their engine."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Engine,
    Float,
    Integer,
    String,
    create_engine,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class CheckRow(Base):
    """One check as stored; the wire shape is built from it in the API layer."""

    __tablename__ = "checks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    architecture: Mapped[str] = mapped_column(String(300))
    options: Mapped[dict[str, Any]] = mapped_column(JSON)
    filename: Mapped[str] = mapped_column(String(300))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stage: Mapped[str] = mapped_column(String(32))
    fraction: Mapped[float] = mapped_column(Float)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    merged_filename: Mapped[str | None] = mapped_column(String(300), nullable=True)
    # A check of a path source reads this file or directory in place (no blob is stored).
    source_path: Mapped[str | None] = mapped_column(String(4096), nullable=True)
    # The principal (API key name) that made the check; NULL for checks made with keys off
    # or before owners existed, which only admins see once keys are on.
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    # When the results were removed (CKPT_COMPAT_RESULT_TTL_SECONDS); the row stays so the
    # check answers 410 instead of 404.
    expired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Claims (migration 0003): how often a worker claimed the check, until when the claiming
    # worker holds it (renewed while it runs), which worker, and when it was last published.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lease_expires_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Callbacks (migration 0004): NULL without options.callback_url, else pending, delivered
    # or abandoned; when the next attempt is due; every attempt so far (``deliveries`` on the
    # wire). Kept on the row: one writer (the delivery leader), and a read needs no join.
    callback_state: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True)
    callback_next_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    deliveries: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)


class UploadOwnerRow(Base):
    """One principal's claim on a stored upload (uploads are stored once per content).

    Who sent which bytes: ``GET``/``DELETE /v1/uploads/{id}`` and ``upload_id`` sources
    answer only to the principals listed here (and admins), so an upload id learnt elsewhere
    reveals nothing. The blob itself goes when no check uses it and no principal holds it.
    """

    __tablename__ = "upload_owners"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), primary_key=True)


class IdempotencyKeyRow(Base):
    """An ``Idempotency-Key`` a principal sent with ``POST /v1/checks`` (migration 0004).

    The primary key (owner, key) is what decides between two API processes receiving the same
    key at once: one insert wins. ``check_id`` is NULL while the first request is in flight.
    """

    __tablename__ = "idempotency_keys"

    owner: Mapped[str] = mapped_column(String(64), primary_key=True)  # "" with keys off
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    check_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


def make_engine(url: str, *, migrate: bool = True) -> Engine:
    """An engine for the records; the schema is brought to head (``app.jobs.schema``).

    SQLite gets WAL and a busy timeout, so the web process and local workers share it;
    PostgreSQL gets pre-ping, so a restarted server is reconnected to on the next request.
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
    if migrate:
        from app.jobs.schema import upgrade_database

        upgrade_database(engine)
    return engine
