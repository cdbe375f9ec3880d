"""Claims and leases: a check runs at most once to completion across processes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

A worker claims a queued check atomically (``attempts`` counts claims), holds it with a lease
it renews while it runs (``lease_expires_at``, ``worker``), and the reaper requeues or fails
checks whose lease expired; ``published_at`` tells when the check was last handed to a
runner, so a check whose message was lost is published again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("checks") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("worker", sa.String(200), nullable=True))
        batch.add_column(sa.Column("published_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("checks") as batch:
        batch.drop_column("published_at")
        batch.drop_column("worker")
        batch.drop_column("lease_expires_at")
        batch.drop_column("attempts")
