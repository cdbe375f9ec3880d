"""Check records in SQLite: lifecycle, ordering, and that a finished check stays finished."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.jobs.db import make_engine
from app.jobs.repository import CheckRepository
from app.principals import OPEN_ACCESS, Principal
from app.schemas import CheckStatus
from tests.servers import PostgresServer


def _repo(tmp_path: Path) -> CheckRepository:
    return CheckRepository(make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"))


@pytest.fixture(params=["sqlite", "postgresql"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CheckRepository]:
    """The same repository code on SQLite and on a real PostgreSQL (a fresh database)."""
    if request.param == "sqlite":
        yield _repo(tmp_path)
        return
    postgres: PostgresServer = request.getfixturevalue("postgres")
    engine = make_engine(postgres.new_database())
    yield CheckRepository(engine)
    engine.dispose()


def _create(
    repo: CheckRepository, name: str = "a.pt", *, owner: str | None = None, sha256: str = "ab" * 32
) -> str:
    return repo.create(
        architecture="torchvision:resnet18",
        options={},
        filename=name,
        size_bytes=3,
        sha256=sha256,
        owner=owner,
    ).id


def test_repository_lifecycle_records_times_and_outcome(repo: CheckRepository) -> None:
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


def test_repository_mark_failed_leaves_finished_checks_alone(repo: CheckRepository) -> None:
    check_id = _create(repo)
    repo.mark_succeeded(check_id, merged_filename=None)
    repo.mark_failed(check_id, {"type": "/problems/x"})
    record = repo.get(check_id)
    assert record is not None and record.status is CheckStatus.SUCCEEDED and record.error is None


def test_repository_lists_newest_first_and_survives_reopening(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    ids = [_create(repo, f"{i}.pt") for i in range(3)]
    records, total = _repo(tmp_path).page(limit=2, offset=0, principal=OPEN_ACCESS)
    assert total == 3
    assert [r.id for r in records] == [ids[2], ids[1]]
    assert repo.count_with_sha256("ab" * 32) == 3
    assert repo.ids_with_status([CheckStatus.QUEUED]) == ids
    assert repo.delete(ids[0]) is not None
    assert repo.get(ids[0]) is None


def test_repository_pages_only_the_checks_a_principal_may_see(repo: CheckRepository) -> None:
    alice, bob, root = Principal("alice"), Principal("bob"), Principal("root", admin=True)
    legacy = _create(repo)
    mine = [_create(repo, owner="alice") for _ in range(2)]
    _create(repo, owner="bob")
    records, total = repo.page(limit=10, offset=0, principal=alice)
    assert (total, [r.id for r in records]) == (2, mine[::-1])
    assert repo.page(limit=10, offset=0, principal=bob)[1] == 1
    assert repo.page(limit=10, offset=0, principal=root)[1] == 4
    assert [r.id for r in repo.page(limit=10, offset=0, principal=Principal(None))[0]] == [legacy]
    assert not alice.may_see(None) and root.may_see(None) and not bob.may_see("alice")


def test_repository_reuse_candidates_stay_within_one_owner(repo: CheckRepository) -> None:
    for owner in ("alice", "bob", None):
        repo.mark_succeeded(_create(repo, owner=owner), merged_filename=None)
    for owner in ("alice", "bob", None):
        found = repo.succeeded_like(
            sha256="ab" * 32, architecture="torchvision:resnet18", owner=owner
        )
        assert [r.owner for r in found] == [owner]


def test_repository_upload_holds_and_release(repo: CheckRepository) -> None:
    sha = "cd" * 32
    alice, bob = Principal("alice"), Principal("bob")
    repo.hold_upload(sha, "alice")
    repo.hold_upload(sha, "alice")  # idempotent
    assert repo.holds_upload(sha, alice) and not repo.holds_upload(sha, bob)
    assert repo.holds_upload(sha, Principal("root", admin=True))
    check = _create(repo, owner="bob", sha256=sha)  # a check holds its own upload
    assert repo.holds_upload(sha, bob)
    assert repo.release_upload(sha, owner="bob") is False  # his check still uses it
    assert repo.holds_upload(sha, bob)
    repo.delete(check)
    assert repo.release_upload(sha, owner="bob") is False  # alice still holds it
    assert repo.release_upload(sha, owner="alice") is True
    assert repo.upload_unused(sha)
    repo.hold_upload(sha, "alice")
    assert repo.release_upload(sha, owner=None, every_holder=True) is True
    repo.hold_upload(sha, "bob")
    repo.forget_upload(sha)
    assert not repo.holds_upload(sha, bob)
