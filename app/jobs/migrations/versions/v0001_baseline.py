"""Baseline: the checks table as the service created it before migrations existed.

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "checks",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("architecture", sa.String(300), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("filename", sa.String(300), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("fraction", sa.Float(), nullable=False),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("merged_filename", sa.String(300), nullable=True),
        sa.Column("source_path", sa.String(4096), nullable=True),
    )
    op.create_index("ix_checks_sha256", "checks", ["sha256"])
    op.create_index("ix_checks_status", "checks", ["status"])
    op.create_index("ix_checks_created_at", "checks", ["created_at"])


def downgrade() -> None:
    op.drop_table("checks")
