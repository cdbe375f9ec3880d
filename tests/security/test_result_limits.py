"""Small requests cannot make big results: reports and merged files are bounded per check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.errors import LimitExceededError
from app.main import create_app
from app.storage import ResultStore
from tests.api.conftest import make_settings
from tests.security.conftest import assert_clean_problem, good_checkpoint, post_bytes, problem_of

CHECK_ID = "ab" * 16


def test_result_store_refuses_a_report_over_max_bytes(tmp_path: Path) -> None:
    results = ResultStore(tmp_path)
    report = {"keys": ["k" * 100] * 100}
    with pytest.raises(LimitExceededError, match="max_report_bytes=4096") as refused:
        results.write_report(CHECK_ID, report, max_bytes=4096)
    assert refused.value.extensions == {"limit": "max_report_bytes", "limit_value": 4096}
    assert results.read_report(CHECK_ID) is None  # nothing written
    results.write_report(CHECK_ID, report, max_bytes=len(json.dumps(report)))
    assert results.read_report(CHECK_ID) is not None


@pytest.mark.slow
def test_result_limits_a_huge_head_is_refused_before_the_merge_writes(tmp_path: Path) -> None:
    """A 38 KiB checkpoint with num_classes=200,000 asked for a 434 MB merged file."""
    settings = make_settings(tmp_path / "data", max_merged_bytes=100 * 1024**2)
    options = {"merge": {}, "architecture_kwargs": {"num_classes": 200_000}}
    with TestClient(create_app(settings)) as client:
        problem = problem_of(post_bytes(client, good_checkpoint(), options=options))
        assert_clean_problem(problem, "limit-exceeded")
        assert (problem["limit"], problem["limit_value"]) == ("max_merged_bytes", 100 * 1024**2)
        assert "CKPT_COMPAT_MAX_MERGED_BYTES" in problem["detail"]
        leftovers = [p for p in (tmp_path / "data" / "results").rglob("*") if p.is_file()]
        assert leftovers == []
        merged = post_bytes(client, good_checkpoint(), options={"merge": {}}).json()
        assert merged["status"] == "succeeded"  # resnet18's 47 MB fits


@pytest.mark.slow
def test_result_limits_a_report_over_the_limit_fails_its_check(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", max_report_bytes=8192)
    with TestClient(create_app(settings)) as client:
        problem = problem_of(post_bytes(client, good_checkpoint()))
        assert_clean_problem(problem, "limit-exceeded")
        assert problem["limit"] == "max_report_bytes"
        assert client.get("/livez").status_code == 200


@pytest.mark.slow
def test_result_limits_results_expire_and_the_check_answers_410(tmp_path: Path) -> None:
    import time

    settings = make_settings(tmp_path / "data", result_ttl_seconds=1.0)
    with TestClient(create_app(settings)) as client:
        check = post_bytes(client, good_checkpoint(), options={"merge": {}}).json()
        assert check["status"] == "succeeded"
        base = f"/v1/checks/{check['id']}"
        deadline = time.monotonic() + 30
        while client.get(base).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        for path in (base, f"{base}/report", f"{base}/merged"):
            response = client.get(path)
            assert response.status_code == 410, path
            assert response.json()["type"] == "/problems/check-expired"
            assert "CKPT_COMPAT_RESULT_TTL_SECONDS" in response.json()["detail"]
        assert not (tmp_path / "data" / "results" / check["id"]).exists()
        assert check["id"] not in {c["id"] for c in client.get("/v1/checks").json()["items"]}
        upload = client.get(f"/v1/uploads/{check['checkpoint']['sha256']}")
        assert upload.status_code == 404  # released with the check's results
        assert client.delete(base).status_code == 204
        assert client.get(base).status_code == 404


def test_result_store_shares_a_report_by_link_with_an_overlay(tmp_path: Path) -> None:
    results = ResultStore(tmp_path)
    first, second = "aa" * 16, "bb" * 16
    report = {
        "check_id": first,
        "checkpoint": {"filename": "a.pt", "sha256": "x"},
        "big": "y" * 5000,
    }
    results.write_report(first, report, tag="t1")
    assert results.share_report(
        first, second, {"check_id": second, "checkpoint": {"filename": "b.pt"}}
    )
    shared = json.loads(results.read_report(second) or b"")
    assert shared["check_id"] == second
    assert shared["checkpoint"] == {"filename": "b.pt", "sha256": "x"}
    assert shared["big"] == "y" * 5000
    assert json.loads(results.read_report(first) or b"") == report  # the original unchanged
    assert results.report_path(first).stat().st_ino == results.report_path(second).stat().st_ino
    assert results.report_tag(second) == "t1"
    results.delete(first)  # the link keeps the shared report alive
    assert json.loads(results.read_report(second) or b"")["check_id"] == second
    assert not results.share_report(first, "cc" * 16, {})
