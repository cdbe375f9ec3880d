"""The claims on MLflow versions (migration 0005): one check per version, architecture and
kwargs across processes, a dead claim taken over, tags due only once the check ends."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.orm import Session

from app.jobs.db import make_engine
from app.jobs.mlflow_versions import (
    MlflowVersionRow,
    MlflowVersions,
    TagState,
    version_key,
)
from app.jobs.repository import CheckRepository, utcnow


def _versions(tmp_path: Path) -> tuple[MlflowVersions, CheckRepository]:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    return MlflowVersions(engine), CheckRepository(engine)


def test_version_key_ignores_kwargs_spacing_and_order_but_not_values() -> None:
    same = version_key("m", "1", "timm:vit", '{"a": 1, "b": 2}')
    assert same == version_key("m", "1", "timm:vit ", '{"b":2,"a":1}')
    assert same != version_key("m", "1", "timm:vit", '{"a": 1, "b": 3}')
    assert same != version_key("m", "2", "timm:vit", '{"a": 1, "b": 2}')
    assert version_key("m", "1", "x", "") == version_key("m", "1", "x", "{}")


def test_claim_is_won_once_and_a_dead_claim_is_taken_over(tmp_path: Path) -> None:
    versions, _ = _versions(tmp_path)
    key = version_key("m", "1", "x", "")
    fields = {"model_name": "m", "version": "1", "architecture": "x", "kwargs": ""}
    assert versions.claim(key, **fields)
    assert not versions.claim(key, **fields)
    with Session(versions._engine) as session, session.begin():
        old = utcnow() - timedelta(seconds=600)
        session.execute(update(MlflowVersionRow).values(created_at=old))
    assert versions.claim(key, **fields)  # still starting after 10 minutes: its process died
    versions.started(key, check_id=None, problem={"title": "Unknown architecture"})
    assert not versions.claim(key, **fields)  # refused once: not retried


def test_tags_are_due_when_the_check_finished_or_never_started(tmp_path: Path) -> None:
    versions, repository = _versions(tmp_path)
    record = repository.create(
        architecture="torchvision:resnet18",
        options={},
        filename="model.safetensors",
        size_bytes=1,
        sha256="0" * 64,
        source_path="models:/m/1",
    )
    running = version_key("m", "1", "a", "")
    refused = version_key("m", "2", "a", "")
    for key, version in ((running, "1"), (refused, "2")):
        versions.claim(key, model_name="m", version=version, architecture="a", kwargs="")
    versions.started(running, check_id=record.id, problem=None)
    versions.started(refused, check_id=None, problem={"title": "Unknown architecture"})
    assert [w.key for w in versions.due(utcnow())] == [refused]
    repository.mark_failed(record.id, {"title": "Corrupt", "type": "/problems/x"})
    due = {w.key: w for w in versions.due(utcnow())}
    assert set(due) == {running, refused}
    assert due[running].check_error == {"title": "Corrupt", "type": "/problems/x"}
    versions.record_attempt(refused, state=TagState.WRITTEN, next_at=None, error=None)
    later = utcnow() + timedelta(seconds=60)
    versions.record_attempt(running, state=TagState.PENDING, next_at=later, error="down")
    assert versions.due(utcnow()) == []
    assert [w.attempts for w in versions.due(later)] == [1]
