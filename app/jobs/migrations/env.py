"""Alembic environment: migrations run on the connection ``app.jobs.schema`` hands over.

SQLite alters tables in batch mode (copy and move), PostgreSQL in place. There is no
``alembic.ini``: the service calls ``upgrade_database(engine)`` itself, under a lock.
"""

from __future__ import annotations

from alembic import context

from app.jobs.db import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
