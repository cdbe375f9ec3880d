"""Tags out when MLflow cannot be reached: the write is retried with backoff, then abandoned.

The tracking server here is a closed loopback port: every attempt really fails to connect.
(Writing tags to a live server is covered end to end in ``test_mlflow_events.py``.)
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from app.integrations.mlflow_tags import outcome_tags, write_once
from app.jobs.db import make_engine
from app.jobs.mlflow_versions import MlflowVersionRow, MlflowVersions, TagState, version_key
from app.jobs.repository import utcnow
from app.storage import ResultStore, open_storage
from tests.api.conftest import make_settings
from tests.servers import free_port


def test_tag_write_to_an_unreachable_mlflow_backs_off_then_is_abandoned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", closed)  # restored after the test
    versions = MlflowVersions(make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    key = version_key("m", "1", "torchvision:nope", "")
    versions.claim(key, model_name="m", version="1", architecture="torchvision:nope", kwargs="")
    versions.started(key, check_id=None, problem={"title": "Unknown architecture"})
    results = ResultStore(open_storage("", data_dir=tmp_path))
    settings = make_settings(tmp_path, mlflow_tracking_uri=closed, callback_backoff_seconds=30)

    before = utcnow()
    assert write_once(versions, results=results, settings=settings) == 1
    row = versions.get(key)
    assert row is not None and row.tags_state == TagState.PENDING
    assert row.tags_attempts == 1 and row.tags_error
    assert row.tags_next_at is not None
    waits = (row.tags_next_at.replace(tzinfo=before.tzinfo) - before).total_seconds()
    assert 30 <= waits <= 30 + 120  # the first backoff, plus the failed attempt's own time
    assert write_once(versions, results=results, settings=settings) == 0  # not due yet

    with Session(versions._engine) as session, session.begin():  # the wait has passed
        session.execute(update(MlflowVersionRow).values(tags_next_at=utcnow() - timedelta(1)))
    given_up = make_settings(tmp_path, mlflow_tracking_uri=closed, callback_retry_seconds=0)
    assert write_once(versions, results=results, settings=given_up) == 1
    row = versions.get(key)
    assert row is not None and row.tags_state == TagState.ABANDONED and row.tags_attempts == 2


def test_outcome_tags_of_a_refused_version_name_the_problem_last(tmp_path: Path) -> None:
    versions = MlflowVersions(make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    key = version_key("m", "1", "x", "")
    versions.claim(key, model_name="m", version="1", architecture="x", kwargs="")
    versions.started(key, check_id=None, problem={"title": "Invalid options"})
    (work,) = versions.due(utcnow())
    results = ResultStore(open_storage("", data_dir=tmp_path))
    tags = outcome_tags(work, results=results, public_url="http://ckpt.test")
    assert list(tags.items()) == [("ckpt_compat.error", "Invalid options")]
