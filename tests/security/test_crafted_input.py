"""Crafted checkpoints that used to fail a check with a 500: each is a 4xx problem or a report.

Checks run in this process (``run_job`` on a path source), so a failure shows its traceback.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save_file

from app import atomic
from app.jobs.db import make_engine
from app.jobs.repository import CheckRecord, CheckRepository
from app.jobs.task import run_job
from app.schemas import CheckOptions, CheckStatus
from app.storage.sources import resolve_source
from tests.api.conftest import make_settings
from tests.full_disk import DevFullFiles
from tests.security.conftest import (
    PROBLEM,
    assert_clean_problem,
    assert_serves_a_good_check,
    good_checkpoint,
    post_bytes,
    problem_of,
)

Writer = Callable[[Path], None]


def run_check(
    tmp_path: Path,
    write: Writer,
    options: dict[str, Any] | None = None,
    *,
    architecture: str = "torchvision:resnet18",
) -> CheckRecord:
    """Write a checkpoint with ``write``, run one check on it here, return its record."""
    root = tmp_path / "models"
    root.mkdir(exist_ok=True)
    checkpoint = root / f"c{len(list(root.iterdir()))}.bin"
    write(checkpoint)
    settings = make_settings(tmp_path / "data", source_roots=[root])
    settings.data_dir.mkdir(exist_ok=True)
    repository = CheckRepository(make_engine(settings.database_url))
    found = resolve_source(str(checkpoint), settings.source_roots)
    record = repository.create(
        architecture=architecture,
        options=CheckOptions.model_validate(options or {}).model_dump(mode="json"),
        filename=found.filename,
        size_bytes=found.size_bytes,
        sha256=found.fingerprint,
        source_path=str(found.path),
    )
    run_job(record.id, settings)
    finished = repository.get(record.id)
    assert finished is not None
    return finished


def report_of(tmp_path: Path, record: CheckRecord) -> dict[str, Any]:
    assert record.status is CheckStatus.SUCCEEDED, record.error
    (path,) = (tmp_path / "data").rglob("report.json")
    report: dict[str, Any] = json.loads(path.read_text())
    return report


def assert_failed_with(record: CheckRecord, slug: str) -> dict[str, Any]:
    assert record.status is CheckStatus.FAILED, record.status
    assert record.error is not None
    assert_clean_problem(record.error, slug)
    return record.error


def _head(extra: dict[str, torch.Tensor]) -> Writer:
    def write(path: Path) -> None:
        save_file({"fc.weight": torch.zeros(1000, 512), **extra}, path)

    return write


def _module_depth(nodes: list[dict[str, Any]]) -> int:
    depth, level = 0, nodes
    while level:
        depth += 1
        level = [child for node in level for child in node["children"]]
    return depth


def test_keys_500_modules_deep_make_a_report_with_a_bounded_tree(tmp_path: Path) -> None:
    deep = ".".join(["a"] * 500)
    record = run_check(tmp_path, _head({f"{deep}.weight": torch.zeros(1)}), {"merge": {}})
    report = report_of(tmp_path, record)
    assert _module_depth(report["modules"]) <= 33
    (top,) = [n for n in report["modules"] if n["module"] == "a"]
    assert top["unexpected"] == 1


def test_keys_with_non_ascii_digits_make_a_report(tmp_path: Path) -> None:
    keys = ["blocks.².weight", "blocks.³.weight", "layer1.٢.conv1.weight", "blocks.0.weight"]
    record = run_check(tmp_path, _head({k: torch.zeros(1) for k in keys}), {"merge": {}})
    report = report_of(tmp_path, record)
    (blocks,) = [n for n in report["modules"] if n["module"] == "blocks"]
    assert sorted(c["module"] for c in blocks["children"]) == ["blocks.0", "blocks.²", "blocks.³"]


_DEEP_OPTIONS = '{"architecture_kwargs": {"x": ' + "[" * 300 + "]" * 300 + "}}"
_HUGE_INT_OPTIONS = '{"architecture_kwargs": {"num_classes": ' + "9" * 5000 + "}}"
_LONG_INT_OPTIONS = '{"architecture_kwargs": {"num_classes": ' + "9" * 4000 + "}}"


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [_DEEP_OPTIONS, _HUGE_INT_OPTIONS, _LONG_INT_OPTIONS],
    ids=["nested-300", "int-5000-digits", "int-4000-digits"],
)
def test_options_nested_deep_or_huge_integers_are_422_problems(
    corpus_client: TestClient, options: str
) -> None:
    multipart = post_bytes(corpus_client, good_checkpoint(), options=options)
    assert multipart.status_code == 422
    assert_clean_problem(problem_of(multipart), "invalid-options")
    body = (
        '{"source": {"upload_id": "' + "0" * 64 + '"}, "architecture": '
        '"torchvision:resnet18", "options": ' + options + "}"
    )
    as_json = corpus_client.post(
        "/v1/checks", content=body, headers={"content-type": "application/json"}
    )
    assert (as_json.status_code, as_json.headers["content-type"]) == (422, PROBLEM)
    assert_clean_problem(as_json.json(), "invalid-request")
    assert_serves_a_good_check(corpus_client)


def _f4_bias(path: Path) -> None:
    """resnet18's head with fc.bias as safetensors F4 (1000 values in 500 bytes)."""
    header = {
        "fc.bias": {"dtype": "F4", "shape": [1000], "data_offsets": [0, 500]},
        "fc.weight": {"dtype": "F32", "shape": [1000, 512], "data_offsets": [500, 2048500]},
    }
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + b"\0" * 2048500)


def _sparse_weight(path: Path) -> None:
    torch.save(
        {"fc.weight": torch.zeros(1000, 512).to_sparse(), "fc.bias": torch.zeros(1000)}, path
    )


def _bits8_bias(path: Path) -> None:
    bias = torch.zeros(1000, dtype=torch.uint8).view(torch.bits8)
    torch.save({"fc.weight": torch.zeros(1000, 512), "fc.bias": bias}, path)


@pytest.mark.filterwarnings("ignore:Validating sparse tensor invariants")
@pytest.mark.parametrize(
    ("write", "policy"),
    [
        (_f4_bias, "checkpoint"),
        (_f4_bias, "model"),
        (_sparse_weight, "model"),
        (_bits8_bias, "model"),
    ],
    ids=["f4-kept", "f4-cast", "sparse", "bits8-cast"],
)
def test_merge_of_tensors_it_cannot_write_is_an_unmergeable_tensor_problem(
    tmp_path: Path, write: Writer, policy: str
) -> None:
    record = run_check(tmp_path, write, {"merge": {}, "dtype_policy": policy})
    problem = assert_failed_with(record, "unmergeable-tensor")
    assert problem["key"] in ("fc.bias", "fc.weight")
    assert not list((tmp_path / "data").rglob("merged.*"))


def test_disk_full_during_a_merge_is_a_507_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(atomic, "os", DevFullFiles())
    record = run_check(tmp_path, _head({}), {"merge": {}})
    assert record.status is CheckStatus.FAILED
    assert record.error is not None
    assert (record.error["status"], record.error["type"]) == (507, "/problems/insufficient-storage")
    assert "/tmp" not in json.dumps(record.error)
    assert not list((tmp_path / "data").rglob("*merged*"))
