"""Check records in SQLite: lifecycle, ordering, and that a finished check stays finished."""

from __future__ import annotations

from pathlib import Path

from app.jobs.db import make_engine
from app.jobs.repository import CheckRepository
from app.schemas import CheckStatus


def _repo(tmp_path: Path) -> CheckRepository:
    return CheckRepository(make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"))


def _create(repo: CheckRepository, name: str = "a.pt") -> str:
    return repo.create(
        architecture="torchvision:resnet18",
        options={},
        filename=name,
        size_bytes=3,
        sha256="ab" * 32,
    ).id


def test_repository_lifecycle_records_times_and_outcome(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    check_id = _create(repo)
    assert len(check_id) == 32
    repo.mark_running(check_id)
    repo.set_progress(check_id, "reading", 0.1)
    running = repo.get(check_id)
    assert running is not None
    assert (running.status, running.stage, running.fraction) == (
        CheckStatus.RUNNING,
        "reading",
        0.1,
    )
    repo.mark_succeeded(check_id, merged_filename="merged.safetensors")
    done = repo.get(check_id)
    assert done is not None
    assert done.status is CheckStatus.SUCCEEDED
    assert done.started_at is not None and done.finished_at is not None
    assert done.finished_at.tzinfo is not None
    assert done.merged_filename == "merged.safetensors"


def test_repository_mark_failed_leaves_finished_checks_alone(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    check_id = _create(repo)
    repo.mark_succeeded(check_id, merged_filename=None)
    repo.mark_failed(check_id, {"type": "/problems/x"})
    record = repo.get(check_id)
    assert record is not None and record.status is CheckStatus.SUCCEEDED and record.error is None


def test_repository_lists_newest_first_and_survives_reopening(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    ids = [_create(repo, f"{i}.pt") for i in range(3)]
    records, total = _repo(tmp_path).page(limit=2, offset=0)
    assert total == 3
    assert [r.id for r in records] == [ids[2], ids[1]]
    assert repo.count_with_sha256("ab" * 32) == 3
    assert repo.ids_with_status([CheckStatus.QUEUED]) == ids
    assert repo.delete(ids[0]) is not None
    assert repo.get(ids[0]) is None
