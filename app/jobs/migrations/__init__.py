"""Alembic migrations of the check records (SQLite and PostgreSQL); run by ``app.jobs.schema``."""
