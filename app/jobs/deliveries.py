"""The SQL of callback deliveries: which finished checks have a callback due, and each attempt.

Only the delivery leader (one API process at a time, ``app.callbacks.deliver``) writes here,
so appending to a row's ``deliveries`` list needs no more than its own short transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.jobs.callback_state import CallbackState
from app.jobs.db import CheckRow
from app.jobs.repository import CheckRecord
from app.schemas import CheckStatus

_FINISHED = (CheckStatus.SUCCEEDED.value, CheckStatus.FAILED.value)


class DeliveryRepository:
    """Due callbacks and their attempts, on the check rows."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def due(self, now: datetime, *, limit: int = 20) -> list[CheckRecord]:
        """Finished checks whose callback is pending and due by ``now``, longest waiting first."""
        with Session(self._engine) as session:
            next_at = CheckRow.callback_next_at
            rows = session.scalars(
                select(CheckRow)
                .where(CheckRow.callback_state == CallbackState.PENDING.value)
                .where(CheckRow.status.in_(_FINISHED))
                .where(next_at.is_(None) | (next_at <= now))
                .order_by(CheckRow.finished_at)
                .limit(limit)
            )
            return [CheckRecord.from_row(row) for row in rows]

    def record_attempt(
        self,
        check_id: str,
        attempt: dict[str, Any],
        *,
        state: CallbackState,
        next_at: datetime | None,
    ) -> None:
        """Append an attempt to the check's list and set what comes next (gone: nothing)."""
        with Session(self._engine) as session, session.begin():
            row = session.get(CheckRow, check_id)
            if row is None:  # deleted while the attempt was made
                return
            row.deliveries = [*(row.deliveries or ()), attempt]  # a new list: JSON is not tracked
            row.callback_state = state.value
            row.callback_next_at = next_at
