"""The SQL of MLflow model versions checked on MLflow's behalf (migration 0005).

One row per (model, version, architecture, kwargs): its primary key is the hash of the four,
so of two deliveries (or a delivery and a reconciling pass, in two API processes) the first
insert wins and the other starts nothing. The row then carries the check it started (or the
problem that stopped it at submission) and the state of writing the outcome back as tags,
retried with backoff by one API process at a time (``app.integrations.mlflow_tags``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, DateTime, Engine, Integer, String, Text, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from app.jobs.db import Base, CheckRow
from app.jobs.repository import utcnow
from app.schemas import CheckStatus

STALE_START_SECONDS = 120.0
"""A row still starting after this long belongs to a process that died while submitting:
the next delivery or reconciling pass takes it over."""

_FINISHED = (CheckStatus.SUCCEEDED.value, CheckStatus.FAILED.value)


class TagState(StrEnum):
    STARTING = "starting"  # claimed; the check is being submitted
    PENDING = "pending"  # waiting for the check to finish, or for the next attempt
    WRITTEN = "written"  # the tags are on the model version
    ABANDONED = "abandoned"  # retried for CKPT_COMPAT_CALLBACK_RETRY_SECONDS in vain


class MlflowVersionRow(Base):
    """A model version checked for MLflow, and where writing its tags stands."""

    __tablename__ = "mlflow_versions"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(256))
    version: Mapped[str] = mapped_column(String(32))
    architecture: Mapped[str] = mapped_column(String(300))
    architecture_kwargs: Mapped[str] = mapped_column(Text)
    check_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    problem: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    tags_state: Mapped[str] = mapped_column(String(16), index=True)
    tags_next_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    tags_attempts: Mapped[int] = mapped_column(Integer, default=0)
    tags_error: Mapped[str | None] = mapped_column(String(300), nullable=True)


@dataclass(frozen=True, slots=True)
class VersionWork:
    """A row whose tags are due, with its check's outcome (None: no check, or deleted)."""

    key: str
    model_name: str
    version: str
    check_id: str | None
    problem: dict[str, Any] | None
    check_status: str | None
    check_error: dict[str, Any] | None
    attempts: int
    created_at: datetime


def version_key(model_name: str, version: str, architecture: str, kwargs: str) -> str:
    """The identity of one check of one version: sha256 hex of the four, kwargs canonical."""
    try:
        canonical = json.dumps(json.loads(kwargs or "{}"), sort_keys=True, separators=(",", ":"))
    except ValueError:
        canonical = kwargs  # invalid JSON: its check fails, once, with that text
    identity = json.dumps([model_name, version, architecture.strip(), canonical])
    return hashlib.sha256(identity.encode()).hexdigest()


class MlflowVersions:
    """Claims, outcomes and tag-writing state of the versions checked for MLflow."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def claim(
        self, key: str, *, model_name: str, version: str, architecture: str, kwargs: str
    ) -> bool:
        """Claim one check of a version; False when it was started already (by anyone)."""
        now = utcnow()
        with Session(self._engine) as session, session.begin():
            stale = now - timedelta(seconds=STALE_START_SECONDS)
            session.execute(
                delete(MlflowVersionRow)
                .where(MlflowVersionRow.key == key)
                .where(MlflowVersionRow.tags_state == TagState.STARTING.value)
                .where(MlflowVersionRow.created_at < stale)
            )
        row = MlflowVersionRow(
            key=key,
            model_name=model_name[:256],
            version=version[:32],
            architecture=architecture[:300],
            architecture_kwargs=kwargs,
            created_at=now,
            tags_state=TagState.STARTING.value,
            tags_attempts=0,
        )
        try:
            with Session(self._engine) as session, session.begin():
                session.add(row)
        except IntegrityError:
            return False
        return True

    def started(self, key: str, *, check_id: str | None, problem: dict[str, Any] | None) -> None:
        """The claim became a check (or a problem to report): its tags are due once it ends."""
        with Session(self._engine) as session, session.begin():
            row = session.get(MlflowVersionRow, key)
            if row is not None:
                row.check_id, row.problem = check_id, problem
                row.tags_state = TagState.PENDING.value

    def release(self, key: str) -> None:
        """Drop a claim whose submission failed for a passing reason: a retry may claim it."""
        with Session(self._engine) as session, session.begin():
            session.execute(delete(MlflowVersionRow).where(MlflowVersionRow.key == key))

    def due(self, now: datetime, *, limit: int = 20) -> list[VersionWork]:
        """Pending rows due by ``now`` whose check finished, was deleted, or never started."""
        next_at = MlflowVersionRow.tags_next_at
        query = (
            select(MlflowVersionRow, CheckRow.status, CheckRow.error)
            .outerjoin(CheckRow, CheckRow.id == MlflowVersionRow.check_id)
            .where(MlflowVersionRow.tags_state == TagState.PENDING.value)
            .where(next_at.is_(None) | (next_at <= now))
            .where(CheckRow.status.is_(None) | CheckRow.status.in_(_FINISHED))
            .order_by(MlflowVersionRow.created_at)
            .limit(limit)
        )
        with Session(self._engine) as session:
            return [
                VersionWork(
                    key=row.key,
                    model_name=row.model_name,
                    version=row.version,
                    check_id=row.check_id,
                    problem=row.problem,
                    check_status=status,
                    check_error=error,
                    attempts=row.tags_attempts,
                    created_at=row.created_at,
                )
                for row, status, error in session.execute(query)
            ]

    def record_attempt(
        self, key: str, *, state: TagState, next_at: datetime | None, error: str | None
    ) -> None:
        """One attempt at writing the tags: what came of it and when the next is due."""
        with Session(self._engine) as session, session.begin():
            row = session.get(MlflowVersionRow, key)
            if row is not None:
                row.tags_attempts += 1
                row.tags_state = state.value
                row.tags_next_at = next_at
                row.tags_error = error[:300] if error else None

    def get(self, key: str) -> MlflowVersionRow | None:
        """The row (detached), or None."""
        with Session(self._engine, expire_on_commit=False) as session:
            return session.get(MlflowVersionRow, key)
