"""Alembic migrations: fresh databases, databases made before migrations, locked upgrades."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from app.jobs.db import make_engine
from app.jobs.repository import CheckRepository
from app.jobs.schema import BASELINE, current_revision, head_revision, upgrade_database
from app.principals import Principal
from tests.servers import PostgresServer

# The schema exactly as the service created it before migrations (main of 2026-11-28).
PRE_MIGRATION_DDL = """
CREATE TABLE checks (
    id VARCHAR(32) NOT NULL, status VARCHAR(16) NOT NULL, architecture VARCHAR(300) NOT NULL,
    options JSON NOT NULL, filename VARCHAR(300) NOT NULL, size_bytes INTEGER NOT NULL,
    sha256 VARCHAR(64) NOT NULL, created_at DATETIME NOT NULL, started_at DATETIME,
    finished_at DATETIME, stage VARCHAR(32) NOT NULL, fraction FLOAT NOT NULL, error JSON,
    merged_filename VARCHAR(300), source_path VARCHAR(4096), PRIMARY KEY (id)
);
CREATE INDEX ix_checks_sha256 ON checks (sha256);
CREATE INDEX ix_checks_status ON checks (status);
CREATE INDEX ix_checks_created_at ON checks (created_at);
INSERT INTO checks VALUES ('0123456789abcdef0123456789abcdef', 'succeeded',
    'torchvision:resnet18', '{}', 'old.pth', 46830571, 'ab', '2026-11-28 10:00:00.000000',
    NULL, '2026-11-28 10:00:01.000000', 'done', 1.0, NULL, NULL, NULL);
"""


def _repository_roundtrip(repository: CheckRepository) -> None:
    record = repository.create(
        architecture="timm:vit_base_patch16_224",
        options={"merge": {}},
        filename="big.safetensors",
        size_bytes=20 * 1024**3,  # over 32 bits
        sha256="cd" * 32,
        owner="alice",
    )
    repository.hold_upload("cd" * 32, "alice")
    stored = repository.get(record.id)
    assert stored is not None and stored.size_bytes == 20 * 1024**3 and stored.owner == "alice"
    page, total = repository.page(limit=10, offset=0, principal=Principal("alice"))
    assert total == 1 and page[0].id == record.id
    assert repository.holds_upload("cd" * 32, Principal("alice"))


def test_schema_fresh_sqlite_database_is_at_head(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'new.db'}")
    assert current_revision(engine) == head_revision()
    assert {"checks", "upload_owners", "alembic_version"} <= set(inspect(engine).get_table_names())
    _repository_roundtrip(CheckRepository(engine))


def test_schema_pre_migration_database_is_stamped_and_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as connection:
        connection.executescript(PRE_MIGRATION_DDL)
    engine = create_engine(f"sqlite:///{path}")
    assert current_revision(engine) is None
    upgrade_database(engine)
    assert current_revision(engine) == head_revision() != BASELINE
    repository = CheckRepository(engine)
    old = repository.get("0123456789abcdef0123456789abcdef")
    assert old is not None and old.filename == "old.pth" and old.owner is None
    assert repository.page(limit=5, offset=0, principal=Principal("alice"))[1] == 0
    assert repository.page(limit=5, offset=0, principal=Principal("root", admin=True))[1] == 1
    _repository_roundtrip(repository)
    upgrade_database(engine)  # at head: nothing to do


def test_schema_database_with_columns_added_before_migrations_upgrades(tmp_path: Path) -> None:
    """Development builds added owner/expired_at by ALTER TABLE, without alembic_version."""
    path = tmp_path / "dev.db"
    with sqlite3.connect(path) as connection:
        connection.executescript(PRE_MIGRATION_DDL)
        connection.execute("ALTER TABLE checks ADD COLUMN owner VARCHAR(64)")
        connection.execute("CREATE INDEX ix_checks_owner ON checks (owner)")
        connection.execute("CREATE TABLE upload_owners (sha256 VARCHAR(64), owner VARCHAR(64))")
    engine = make_engine(f"sqlite:///{path}")
    assert current_revision(engine) == head_revision()
    assert "expired_at" in {c["name"] for c in inspect(engine).get_columns("checks")}


@pytest.mark.slow
def test_schema_postgres_upgrades_once_when_processes_start_together(
    postgres: PostgresServer,
) -> None:
    url = postgres.new_database()
    errors: list[BaseException] = []

    def start() -> None:
        try:
            engine = make_engine(url)
            engine.dispose()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    engine = make_engine(url)
    assert current_revision(engine) == head_revision()
    with engine.connect() as connection:
        kind = connection.execute(
            text(
                "SELECT data_type FROM information_schema.columns "
                "WHERE table_name = 'checks' AND column_name = 'size_bytes'"
            )
        ).scalar()
    assert kind == "bigint"
    _repository_roundtrip(CheckRepository(engine))
    engine.dispose()
