"""A path source is checked again by the worker just before it is read."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from app.jobs.db import make_engine
from app.jobs.repository import CheckRecord, CheckRepository
from app.jobs.task import run_job
from app.schemas import CheckOptions, CheckStatus
from app.storage.sources import resolve_source
from tests.api.conftest import make_settings


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
