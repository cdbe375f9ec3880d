"""A path source is checked again by the worker just before it is read."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from app.config import Settings
from app.jobs.db import make_engine
from app.jobs.repository import CheckRecord, CheckRepository
from app.jobs.task import run_job
from app.schemas import CheckOptions, CheckStatus
from app.storage.sources import resolve_source
from tests.api.conftest import make_settings
from tests.fifos import call_bounded


def test_a_path_source_that_changed_after_submission_fails_its_check(tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    checkpoint = root / "head.safetensors"
    save_file({"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}, checkpoint)
    settings = make_settings(tmp_path / "data", source_roots=[root])
    settings.data_dir.mkdir()
    repository = CheckRepository(make_engine(settings.database_url))

    def submit() -> CheckRecord:  # what POST /v1/checks records for a path source
        found = resolve_source(str(checkpoint), settings.source_roots)
        return repository.create(
            architecture="torchvision:resnet18",
            options=CheckOptions().model_dump(mode="json"),
            filename=found.filename,
            size_bytes=found.size_bytes,
            sha256=found.fingerprint,
            source_path=str(found.path),
        )

    unchanged = submit()
    run_job(unchanged.id, settings)
    assert (record := repository.get(unchanged.id)) is not None
    assert record.status is CheckStatus.SUCCEEDED

    changed = submit()
    save_file({"fc.weight": torch.zeros(10, 512), "fc.bias": torch.zeros(10)}, checkpoint)
    run_job(changed.id, settings)
    assert (record := repository.get(changed.id)) is not None
    assert record.status is CheckStatus.FAILED
    assert record.error is not None
    assert record.error["type"] == "/problems/source-changed"
    assert "submit the check again" in record.error["detail"]


def _submit(source: Path, settings: Settings, repository: CheckRepository) -> CheckRecord:
    """What POST /v1/checks records for a path source."""
    found = resolve_source(str(source), settings.source_roots)
    return repository.create(
        architecture="torchvision:resnet18",
        options=CheckOptions().model_dump(mode="json"),
        filename=found.filename,
        size_bytes=found.size_bytes,
        sha256=found.fingerprint,
        source_path=str(found.path),
    )


def test_a_fifo_put_in_place_after_submission_fails_its_check_without_blocking(
    tmp_path: Path,
) -> None:
    # Neither swap changes the source's identity: a FIFO has the size 0 of the empty file it
    # replaces (and its times, set here), and a directory's identity lists regular files only.
    root = tmp_path / "models"
    (root / "sharded").mkdir(parents=True)
    save_file({"fc.bias": torch.zeros(1000)}, root / "sharded" / "model.safetensors")
    empty = root / "empty.safetensors"
    empty.write_bytes(b"")
    settings = make_settings(tmp_path / "data", source_roots=[root])
    settings.data_dir.mkdir()
    repository = CheckRepository(make_engine(settings.database_url))
    checks = [_submit(empty, settings, repository), _submit(root / "sharded", settings, repository)]
    times = empty.stat()
    empty.unlink()
    os.mkfifo(empty)
    os.utime(empty, ns=(times.st_atime_ns, times.st_mtime_ns))
    index = root / "sharded" / "model.safetensors.index.json"
    os.mkfifo(index)
    for check, fifo in zip(checks, (empty, index), strict=True):
        call_bounded(lambda: run_job(check.id, settings), fifos=[fifo])  # noqa: B023
        assert (record := repository.get(check.id)) is not None
        assert record.status is CheckStatus.FAILED
        assert record.error is not None
        assert record.error["type"] == "/problems/source-not-regular", record.error
        assert record.error["status"] == 422
        assert f"{fifo.name!r}" in record.error["detail"]
