"""``GET /metrics``: requests, uploads, checks, queue and workers in the Prometheus format."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from tests.api.conftest import make_settings
from tests.security.conftest import good_checkpoint, post_bytes

pytestmark = pytest.mark.slow


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = make_settings(tmp_path_factory.mktemp("metrics"), api_keys="ops=ops-key")
    with TestClient(create_app(settings), headers={"X-API-Key": "ops-key"}) as client:
        yield client


def test_metrics_count_requests_uploads_checks_and_workers(keyed: TestClient) -> None:
    content = good_checkpoint()
    check = post_bytes(keyed, content).json()
    assert check["status"] == "succeeded"
    keyed.get(f"/v1/checks/{check['id']}")
    keyed.get(f"/v1/checks/{'0' * 32}")
    response = keyed.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)
    route = "/v1/checks/{check_id}"
    assert (
        samples[
            (
                "ckpt_compat_http_requests_total",
                (("method", "GET"), ("route", route), ("status", "200")),
            )
        ]
        == 1
    )
    assert (
        samples[
            (
                "ckpt_compat_http_requests_total",
                (("method", "GET"), ("route", route), ("status", "404")),
            )
        ]
        == 1
    )
    assert samples[("ckpt_compat_upload_bytes_total", ())] >= len(content)
    assert samples[("ckpt_compat_upload_duration_seconds_count", ())] >= 1
    assert samples[("ckpt_compat_checks", (("status", "succeeded"),))] >= 1
    assert samples[("ckpt_compat_check_duration_seconds_count", (("status", "succeeded"),))] >= 1
    assert samples[("ckpt_compat_queue_depth", ())] == 0
    assert samples[("ckpt_compat_workers_ready", ())] == 1
    assert check["id"] not in response.text  # ids never become labels


def test_metrics_are_behind_the_api_key(keyed: TestClient) -> None:
    assert keyed.get("/metrics", headers={"X-API-Key": "wrong"}).status_code == 401


def test_metrics_count_worker_replacements(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", worker_max_tasks=1)
    with TestClient(create_app(settings)) as client:
        for _ in range(2):
            assert post_bytes(client, good_checkpoint()).json()["status"] == "succeeded"
        samples = _samples(client.get("/metrics").text)
    assert samples[("ckpt_compat_worker_replacements_total", (("reason", "max_tasks"),))] >= 2
