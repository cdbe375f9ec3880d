"""MLflow model versions checked on MLflow's behalf (issue 15).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

``mlflow_versions`` has one row per (model, version, architecture, kwargs), keyed by their
hash so that one insert wins between API processes; it holds the check started for it and
the state of writing its outcome back to MLflow as tags.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mlflow_versions",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("model_name", sa.String(256), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("architecture", sa.String(300), nullable=False),
        sa.Column("architecture_kwargs", sa.Text(), nullable=False),
        sa.Column("check_id", sa.String(32), nullable=True),
        sa.Column("problem", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tags_state", sa.String(16), nullable=False),
        sa.Column("tags_next_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("tags_attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("tags_error", sa.String(300), nullable=True),
    )
    op.create_index("ix_mlflow_versions_tags_state", "mlflow_versions", ["tags_state"])


def downgrade() -> None:
    op.drop_index("ix_mlflow_versions_tags_state", "mlflow_versions")
    op.drop_table("mlflow_versions")
