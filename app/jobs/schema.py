"""Bring a database to the current schema with Alembic, once, under a lock.

Every process that opens the records (API processes, workers) calls ``upgrade_database``;
when several start together, one upgrades while the others wait on the lock and then find
nothing to do. A database made before migrations existed (it has ``checks`` but no
``alembic_version``) is stamped at the baseline, then upgraded in place.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE = "0001"
"""The revision of the schema the service created before it had migrations."""

_PG_LOCK_KEY = 0x636B7074  # 'ckpt': the advisory lock taken while upgrading


def alembic_config(connection: Connection) -> Config:
    """An Alembic config for the packaged migrations, running on ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@functools.cache
def head_revision() -> str:
    """The newest revision shipped with this version of the service."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: not stamped)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade_database(engine: Engine) -> None:
    """Stamp a pre-migration database at the baseline, then upgrade to head, under a lock."""
    with _upgrade_lock(engine), engine.begin() as connection:
        config = alembic_config(connection)
        tables = set(inspect(connection).get_table_names())
        if "checks" in tables and "alembic_version" not in tables:
            command.stamp(config, BASELINE)
        if MigrationContext.configure(connection).get_current_revision() != head_revision():
            command.upgrade(config, "head")


@contextlib.contextmanager
def _upgrade_lock(engine: Engine) -> Iterator[None]:
    """PostgreSQL: a session advisory lock; SQLite: a lock file beside the database."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as holder:
            holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_LOCK_KEY})
            try:
                yield
            finally:
                holder.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_LOCK_KEY})
                holder.commit()
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with Path(f"{database}.migrate.lock").open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
