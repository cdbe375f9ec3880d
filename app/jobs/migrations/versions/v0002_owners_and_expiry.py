"""Owners of checks and uploads (API keys as principals), result expiry, 64-bit sizes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

Databases written by development builds of the same day may hold some of these columns
already (added then without migrations): each step is skipped when its object exists.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    columns = {c["name"] for c in inspector.get_columns("checks")}
    indexes = {i["name"] for i in inspector.get_indexes("checks")}
    with op.batch_alter_table("checks") as batch:
        if "owner" not in columns:
            batch.add_column(sa.Column("owner", sa.String(64), nullable=True))
        if "expired_at" not in columns:
            batch.add_column(sa.Column("expired_at", sa.DateTime(timezone=True), nullable=True))
        # PostgreSQL's INTEGER is 32-bit: uploads of 2 GiB and more need BIGINT.
        batch.alter_column("size_bytes", type_=sa.BigInteger(), existing_nullable=False)
    if "ix_checks_owner" not in indexes:
        op.create_index("ix_checks_owner", "checks", ["owner"])
    if not inspector.has_table("upload_owners"):
        op.create_table(
            "upload_owners",
            sa.Column("sha256", sa.String(64), primary_key=True),
            sa.Column("owner", sa.String(64), primary_key=True),
        )


def downgrade() -> None:
    op.drop_table("upload_owners")
    op.drop_index("ix_checks_owner", "checks")
    with op.batch_alter_table("checks") as batch:
        batch.drop_column("expired_at")
        batch.drop_column("owner")
        batch.alter_column("size_bytes", type_=sa.Integer(), existing_nullable=False)
