"""Reads and writes of check records; the only module that speaks SQL."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, overload

from sqlalchemy import ColumnElement, Engine, Select, delete, func, select, true, update
from sqlalchemy.orm import Session

from app.jobs.callback_state import CallbackState
from app.jobs.db import CheckRow, UploadOwnerRow
from app.principals import Principal
from app.schemas import CheckStatus


def new_check_id() -> str:
    """128 random bits, hex: unguessable, and safe as a directory name."""
    return secrets.token_hex(16)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class CheckRecord:
    """A detached, immutable copy of a check row."""

    id: str
    status: CheckStatus
    architecture: str
    options: dict[str, Any]
    filename: str
    size_bytes: int
    sha256: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    stage: str
    fraction: float
    error: dict[str, Any] | None
    merged_filename: str | None
    source_path: str | None = None
    owner: str | None = None
    expired_at: datetime | None = None
    attempts: int = 0
    # Callback attempts so far (``{"attempt", "at", "status_code", "error"}``), oldest first.
    deliveries: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_row(cls, row: CheckRow) -> CheckRecord:
        return cls(
            id=row.id,
            status=CheckStatus(row.status),
            architecture=row.architecture,
            options=dict(row.options),
            filename=row.filename,
            size_bytes=row.size_bytes,
            sha256=row.sha256,
            created_at=_aware(row.created_at),
            started_at=_aware(row.started_at),
            finished_at=_aware(row.finished_at),
            stage=row.stage,
            fraction=row.fraction,
            error=row.error,
            merged_filename=row.merged_filename,
            source_path=row.source_path,
            owner=row.owner,
            expired_at=_aware(row.expired_at),
            attempts=row.attempts or 0,
            deliveries=tuple(row.deliveries or ()),
        )


@overload
def _aware(value: datetime) -> datetime: ...
@overload
def _aware(value: None) -> None: ...
def _aware(value: datetime | None) -> datetime | None:
    """SQLite drops the zone; every stored time is UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _visible_to(principal: Principal) -> ColumnElement[bool]:
    """The SQL filter of the checks a principal may see (``Principal.may_see``)."""
    if principal.admin:
        return true()
    if principal.owner is None:
        return CheckRow.owner.is_(None)
    return CheckRow.owner == principal.owner


def _live_checks_of(sha256: str) -> Select[int]:
    """Count of the checks that use an upload and still have results."""
    return (
        select(func.count())
        .select_from(CheckRow)
        .where(CheckRow.sha256 == sha256, CheckRow.expired_at.is_(None))
    )


def _same_owner(owner: str | None) -> ColumnElement[bool]:
    return CheckRow.owner.is_(None) if owner is None else CheckRow.owner == owner


class CheckRepository:
    """Check records in SQL; every method is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(
        self,
        *,
        architecture: str,
        options: dict[str, Any],
        filename: str,
        size_bytes: int,
        sha256: str,
        source_path: str | None = None,
        owner: str | None = None,
    ) -> CheckRecord:
        """Record a new queued check; ``source_path`` for a checkpoint read in place.

        A stored upload (no ``source_path``) is also held for ``owner``, who may then find
        it by id (``GET /v1/uploads/{id}``) and check it again.
        """
        row = CheckRow(
            id=new_check_id(),
            status=CheckStatus.QUEUED.value,
            architecture=architecture,
            options=options,
            filename=filename,
            size_bytes=size_bytes,
            sha256=sha256,
            created_at=utcnow(),
            started_at=None,
            finished_at=None,
            stage="queued",
            fraction=0.0,
            error=None,
            merged_filename=None,
            source_path=source_path,
            owner=owner,
            # Delivered once finished, by the delivery leader (app.callbacks.deliver).
            callback_state=CallbackState.PENDING.value if options.get("callback_url") else None,
        )
        with Session(self._engine) as session, session.begin():
            session.add(row)
            if source_path is None and owner is not None:
                session.merge(UploadOwnerRow(sha256=sha256, owner=owner))
            session.flush()
            return CheckRecord.from_row(row)

    def get(self, check_id: str) -> CheckRecord | None:
        """The check, or None."""
        with Session(self._engine) as session:
            row = session.get(CheckRow, check_id)
            return CheckRecord.from_row(row) if row else None

    def page(
        self, *, limit: int, offset: int, principal: Principal
    ) -> tuple[list[CheckRecord], int]:
        """A page of the checks ``principal`` may see, newest first, and their count."""
        visible = _visible_to(principal) & CheckRow.expired_at.is_(None)
        with Session(self._engine) as session:
            total = session.scalar(select(func.count()).select_from(CheckRow).where(visible)) or 0
            rows = session.scalars(
                select(CheckRow)
                .where(visible)
                .order_by(CheckRow.created_at.desc(), CheckRow.id)
                .limit(limit)
                .offset(offset)
            )
            return [CheckRecord.from_row(r) for r in rows], total

    def count_by_status(self) -> dict[str, int]:
        """How many checks are in each status (``GET /metrics``)."""
        with Session(self._engine) as session:
            rows = session.execute(select(CheckRow.status, func.count()).group_by(CheckRow.status))
            return {str(status): int(count) for status, count in rows}

    def finished_since(self, since: datetime, until: datetime) -> list[tuple[str, float]]:
        """(status, run seconds) of the checks that finished after ``since``, up to ``until``."""
        with Session(self._engine) as session:
            rows = session.execute(
                select(CheckRow.status, CheckRow.started_at, CheckRow.finished_at)
                .where(CheckRow.finished_at > since)
                .where(CheckRow.finished_at <= until)
                .where(CheckRow.started_at.is_not(None))
            )
            found = []
            for status, started, finished in rows:
                if started is None or finished is None:
                    continue
                seconds = (_aware(finished) - _aware(started)).total_seconds()
                found.append((str(status), max(0.0, seconds)))
            return found

    def ids_with_status(self, statuses: Sequence[CheckStatus]) -> Sequence[str]:
        """Ids of checks in any of the statuses, oldest first."""
        with Session(self._engine) as session:
            return list(
                session.scalars(
                    select(CheckRow.id)
                    .where(CheckRow.status.in_([s.value for s in statuses]))
                    .order_by(CheckRow.created_at)
                )
            )

    def succeeded_like(
        self, *, sha256: str, architecture: str, owner: str | None
    ) -> list[CheckRecord]:
        """One owner's succeeded checks of this content and architecture, newest first.

        Reuse stays within an owner: another principal's result would tell that someone
        else checked these bytes, and its report names their file.
        """
        with Session(self._engine) as session:
            rows = session.scalars(
                select(CheckRow)
                .where(_same_owner(owner))
                .where(CheckRow.expired_at.is_(None))
                .where(CheckRow.sha256 == sha256)
                .where(CheckRow.architecture == architecture)
                .where(CheckRow.status == CheckStatus.SUCCEEDED.value)
                .order_by(CheckRow.created_at.desc())
                .limit(20)
            )
            return [CheckRecord.from_row(r) for r in rows]

    def count_with_sha256(self, sha256: str) -> int:
        """How many checks with results use this upload (a blob is deleted when none does)."""
        with Session(self._engine) as session:
            return session.scalar(_live_checks_of(sha256)) or 0

    def finished_before(self, cutoff: datetime) -> list[CheckRecord]:
        """Finished checks whose results are older than ``cutoff`` and not yet expired."""
        with Session(self._engine) as session:
            rows = session.scalars(
                select(CheckRow)
                .where(CheckRow.status.in_([CheckStatus.SUCCEEDED.value, CheckStatus.FAILED.value]))
                .where(CheckRow.finished_at < cutoff)
                .where(CheckRow.expired_at.is_(None))
                .order_by(CheckRow.finished_at)
            )
            return [CheckRecord.from_row(r) for r in rows]

    def mark_expired(self, check_id: str) -> None:
        """Record that the check's results were removed; it answers 410 from now on."""
        self._update(check_id, expired_at=utcnow())

    def hold_upload(self, sha256: str, owner: str) -> None:
        """Record that ``owner`` sent these bytes (idempotent)."""
        with Session(self._engine) as session, session.begin():
            session.merge(UploadOwnerRow(sha256=sha256, owner=owner))

    def holds_upload(self, sha256: str, principal: Principal) -> bool:
        """Whether ``principal`` may use this upload: it sent the bytes, or it is an admin.

        Admins (and the one caller of a service without keys) hold every stored upload; the
        caller checks the blob exists.
        """
        if principal.admin:
            return True
        with Session(self._engine) as session:
            found = session.get(UploadOwnerRow, (sha256, principal.owner))
            return found is not None

    def count_checks_of(self, sha256: str, principal: Principal) -> int:
        """How many of the checks ``principal`` sees use this upload."""
        with Session(self._engine) as session:
            return session.scalar(_live_checks_of(sha256).where(_visible_to(principal))) or 0

    def release_upload(self, sha256: str, *, owner: str | None, every_holder: bool = False) -> bool:
        """Drop ``owner``'s hold on an upload (``every_holder``: everyone's, for admins).

        An owner keeps its hold while one of its checks still uses the bytes. Returns whether
        nothing uses the upload any more (no check, no holder): its blob may go.
        """
        with Session(self._engine) as session, session.begin():
            holds = delete(UploadOwnerRow).where(UploadOwnerRow.sha256 == sha256)
            if every_holder:
                session.execute(holds)
            elif owner is not None:
                mine = _live_checks_of(sha256).where(CheckRow.owner == owner)
                if not session.scalar(mine):
                    session.execute(holds.where(UploadOwnerRow.owner == owner))
            return self._unused(session, sha256)

    def forget_upload(self, sha256: str) -> None:
        """Remove every hold on an upload whose blob is gone (expired)."""
        with Session(self._engine) as session, session.begin():
            session.execute(delete(UploadOwnerRow).where(UploadOwnerRow.sha256 == sha256))

    def upload_unused(self, sha256: str) -> bool:
        """No check uses the upload and no principal holds it."""
        with Session(self._engine) as session:
            return self._unused(session, sha256)

    @staticmethod
    def _unused(session: Session, sha256: str) -> bool:
        checks = _live_checks_of(sha256)
        holders = (
            select(func.count()).select_from(UploadOwnerRow).where(UploadOwnerRow.sha256 == sha256)
        )
        return not session.scalar(checks) and not session.scalar(holders)

    def claim(self, check_id: str, *, worker: str, lease_seconds: float) -> CheckRecord | None:
        """Take a queued check for ``worker``: ``queued -> running`` only if still queued.

        Atomic in SQL, so of two deliveries of one check (a redelivered Celery message, two
        runners) one wins and the other does nothing. Returns the claimed record, or None.
        """
        now = utcnow()
        with Session(self._engine) as session, session.begin():
            claimed = session.execute(
                update(CheckRow)
                .where(CheckRow.id == check_id)
                .where(CheckRow.status == CheckStatus.QUEUED.value)
                .values(
                    status=CheckStatus.RUNNING.value,
                    started_at=now,
                    stage="starting",
                    fraction=0.0,
                    error=None,
                    worker=worker,
                    lease_expires_at=now + timedelta(seconds=lease_seconds),
                    attempts=CheckRow.attempts + 1,
                )
            )
            if not claimed.rowcount:  # type: ignore[attr-defined]
                return None
            row = session.get(CheckRow, check_id)
            assert row is not None
            return CheckRecord.from_row(row)

    def renew_lease(self, check_id: str, *, worker: str, lease_seconds: float) -> bool:
        """Extend the lease of a check this worker runs; False once it is not ours any more."""
        with Session(self._engine) as session, session.begin():
            renewed = session.execute(
                update(CheckRow)
                .where(CheckRow.id == check_id)
                .where(CheckRow.status == CheckStatus.RUNNING.value)
                .where(CheckRow.worker == worker)
                .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
            )
            return bool(renewed.rowcount)  # type: ignore[attr-defined]

    def mark_published(self, check_ids: Sequence[str]) -> None:
        """Record that these checks were handed to a runner now."""
        if not check_ids:
            return
        with Session(self._engine) as session, session.begin():
            session.execute(
                update(CheckRow)
                .where(CheckRow.id.in_(list(check_ids)))
                .values(published_at=utcnow())
            )

    def queued_unpublished_since(self, cutoff: datetime) -> list[str]:
        """Queued checks last published before ``cutoff`` (their message may be lost)."""
        with Session(self._engine) as session:
            published = CheckRow.published_at
            return list(
                session.scalars(
                    select(CheckRow.id)
                    .where(CheckRow.status == CheckStatus.QUEUED.value)
                    .where((published.is_(None)) | (published < cutoff))
                    .order_by(CheckRow.created_at)
                )
            )

    def reap_expired_leases(
        self, *, max_attempts: int, problem: dict[str, Any]
    ) -> tuple[list[str], list[str]]:
        """Running checks whose lease expired (their worker died or hangs): requeue those
        claimed fewer than ``max_attempts`` times, fail the others with ``problem``.

        Returns:
            The ids requeued (to publish again) and the ids failed.
        """
        now = utcnow()
        requeued: list[str] = []
        failed: list[str] = []
        with Session(self._engine) as session, session.begin():
            rows = session.scalars(
                select(CheckRow)
                .where(CheckRow.status == CheckStatus.RUNNING.value)
                .where(CheckRow.lease_expires_at < now)
                .with_for_update(skip_locked=True)
            ).all()
            for row in rows:
                row.worker = None
                row.lease_expires_at = None
                if (row.attempts or 0) < max_attempts:
                    row.status, row.stage, row.fraction = CheckStatus.QUEUED.value, "queued", 0.0
                    requeued.append(row.id)
                else:
                    row.status, row.stage = CheckStatus.FAILED.value, "failed"
                    row.finished_at, row.error = now, problem
                    failed.append(row.id)
        return requeued, failed

    def mark_running(self, check_id: str) -> None:
        self._update(
            check_id,
            status=CheckStatus.RUNNING.value,
            started_at=utcnow(),
            stage="starting",
            fraction=0.0,
            error=None,
        )

    def set_progress(self, check_id: str, stage: str, fraction: float) -> None:
        self._update(check_id, stage=stage, fraction=max(0.0, min(1.0, fraction)))

    def mark_succeeded(self, check_id: str, *, merged_filename: str | None) -> bool:
        """Finish a check; False when its record is gone (deleted while it ran)."""
        with Session(self._engine) as session, session.begin():
            done = session.execute(
                update(CheckRow)
                .where(CheckRow.id == check_id)
                .values(
                    status=CheckStatus.SUCCEEDED.value,
                    finished_at=utcnow(),
                    stage="done",
                    fraction=1.0,
                    merged_filename=merged_filename,
                    lease_expires_at=None,
                )
            )
            return bool(done.rowcount)  # type: ignore[attr-defined]

    def mark_failed(self, check_id: str, problem: dict[str, Any]) -> None:
        """Fail a check that has not finished; a finished check is left as it is."""
        with Session(self._engine) as session, session.begin():
            session.execute(
                update(CheckRow)
                .where(CheckRow.id == check_id)
                .where(CheckRow.status.in_([CheckStatus.QUEUED.value, CheckStatus.RUNNING.value]))
                .values(
                    status=CheckStatus.FAILED.value,
                    finished_at=utcnow(),
                    stage="failed",
                    error=problem,
                    lease_expires_at=None,
                )
            )

    def delete(self, check_id: str) -> CheckRecord | None:
        """Remove the record; returns what was removed."""
        with Session(self._engine) as session, session.begin():
            row = session.get(CheckRow, check_id)
            if row is None:
                return None
            record = CheckRecord.from_row(row)
            session.delete(row)
            return record

    def _update(self, check_id: str, **values: Any) -> None:
        with Session(self._engine) as session, session.begin():
            session.execute(update(CheckRow).where(CheckRow.id == check_id).values(**values))
