"""Signed callbacks and idempotency keys (issue 15).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

A check with ``options.callback_url`` carries its delivery state on its row
(``callback_state``, ``callback_next_at``, ``deliveries``), so retries survive restarts and
any API process can take over. ``idempotency_keys`` holds the keys of ``POST /v1/checks``; its
primary key decides between API processes that receive one key at once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("checks") as batch:
        batch.add_column(sa.Column("callback_state", sa.String(16), nullable=True))
        batch.add_column(sa.Column("callback_next_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("deliveries", sa.JSON(), nullable=True))
    op.create_index("ix_checks_callback_state", "checks", ["callback_state"])
    op.create_table(
        "idempotency_keys",
        sa.Column("owner", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("check_id", sa.String(32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    op.drop_index("ix_checks_callback_state", "checks")
    with op.batch_alter_table("checks") as batch:
        batch.drop_column("deliveries")
        batch.drop_column("callback_next_at")
        batch.drop_column("callback_state")
