"""/v1/checks over HTTP with a real worker process: the flows a script or Swagger UI user runs."""

from __future__ import annotations

import io
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import torchvision
from fastapi.testclient import TestClient
from safetensors.torch import load, save

from app.config import Settings
from app.main import create_app
from tests.api.conftest import make_settings
from tests.api.http_checks import post_check

PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["type"] == f"/problems/{slug}"
    assert body["status"] == status
    assert body["title"] and body["detail"]
    return body


def temp_files(settings: Settings) -> list[Path]:
    return list((settings.data_dir / "tmp").iterdir())


def test_checks_post_with_wait_returns_the_finished_check(
    client: TestClient, resnet18_file: Path
) -> None:
    response = post_check(client, resnet18_file)
    assert response.status_code == 200, response.text
    check = response.json()
    assert check["status"] == "succeeded"
    assert response.headers["location"] == f"/v1/checks/{check['id']}"
    assert check["architecture"] == "torchvision:resnet18"
    assert check["checkpoint"]["filename"] == "r18.pth"
    assert check["checkpoint"]["size_bytes"] == resnet18_file.stat().st_size
    assert check["progress"] == {"stage": "done", "fraction": 1.0}
    assert check["links"]["merged"] is None

    report = client.get(check["links"]["report"]).json()
    assert report["schema_version"] == "1"
    assert report["summary"]["verdict"] == "compatible"
    assert report["summary"]["strict_loadable"] is True
    assert report["summary"]["loaded_parameter_fraction"] == 1.0
    assert report["checkpoint"]["format"] == "torch_zip"
    assert report["architecture"]["name"] == "torchvision:resnet18"
    assert len(report["keys"]["matched"]) == 122


def test_checks_post_without_wait_answers_202_then_get_waits(
    client: TestClient, resnet18_file: Path
) -> None:
    response = post_check(client, resnet18_file, wait=0)
    assert response.status_code == 202
    assert response.json()["status"] in {"queued", "running", "succeeded"}
    check = client.get(response.headers["location"], params={"wait": 60}).json()
    assert check["status"] == "succeeded"
    assert check["started_at"] and check["finished_at"]


def test_checks_merge_with_new_head_loads_strict_and_keeps_loaded_tensors(
    client: TestClient, resnet18_file: Path
) -> None:
    options = {"architecture_kwargs": {"num_classes": 10}, "merge": {"format": "safetensors"}}
    check = post_check(client, resnet18_file, options=options).json()
    assert check["status"] == "succeeded", check
    report = client.get(check["links"]["report"]).json()
    mismatched = {m["key"]: m for m in report["keys"]["shape_mismatched"]}
    assert set(mismatched) == {"fc.weight", "fc.bias"}
    assert mismatched["fc.weight"]["checkpoint_shape"] == [1000, 512]
    assert mismatched["fc.weight"]["model_shape"] == [10, 512]

    download = client.get(check["links"]["merged"])
    assert download.status_code == 200
    assert "attachment" in download.headers["content-disposition"]
    assert download.headers["etag"]
    merged = load(download.content)
    model = torchvision.models.resnet18(num_classes=10)
    model.load_state_dict(merged, strict=True)
    original = torch.load(resnet18_file, weights_only=True)
    for key, value in original.items():
        if not key.startswith("fc."):
            assert torch.equal(merged[key], value), key
    # The new head is the architecture's own initial value (built with seed 0).
    torch.manual_seed(0)
    initial = torchvision.models.resnet18(num_classes=10).state_dict()
    assert torch.equal(merged["fc.weight"], initial["fc.weight"])
    assert torch.equal(merged["fc.bias"], initial["fc.bias"])


def test_checks_merge_as_pt_round_trips(client: TestClient, resnet18_file: Path) -> None:
    check = post_check(client, resnet18_file, options={"merge": {"format": "pt"}}).json()
    download = client.get(check["links"]["merged"])
    assert download.headers["content-disposition"].endswith('.pt"')
    merged = torch.load(io.BytesIO(download.content), weights_only=True)
    torchvision.models.resnet18().load_state_dict(merged, strict=True)


def test_checks_merged_is_404_when_no_merge_was_asked(
    client: TestClient, resnet18_file: Path
) -> None:
    check = post_check(client, resnet18_file).json()
    body = assert_problem(
        client.get(f"/v1/checks/{check['id']}/merged"), 404, "merged-not-available"
    )
    assert "merge" in body["detail"]


def test_checks_unknown_architecture_is_404_with_suggestions_and_keeps_nothing(
    client: TestClient, resnet18_file: Path, api_settings: Settings
) -> None:
    blobs_before = sorted((api_settings.data_dir / "blobs").rglob("*"))
    body = assert_problem(
        post_check(client, resnet18_file, architecture="resnet81"), 404, "architecture-not-found"
    )
    assert "torchvision:resnet18" in body["suggestions"]
    assert temp_files(api_settings) == []
    assert sorted((api_settings.data_dir / "blobs").rglob("*")) == blobs_before


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ('{"unknown_field": 1}', "unknown_field"),
        ('{"merge": {"format": "zip"}}', "merge.format"),
        ("[1]", "JSON object"),
    ],
)
def test_checks_invalid_options_are_422(
    client: TestClient, resnet18_file: Path, api_settings: Settings, options: str, fragment: str
) -> None:
    with resnet18_file.open("rb") as handle:
        response = client.post(
            "/v1/checks",
            data={"architecture": "resnet18", "options": options},
            files={"file": ("r18.pth", handle)},
        )
    body = assert_problem(response, 422, "invalid-options")
    assert fragment in body["detail"]
    assert temp_files(api_settings) == []


def test_checks_request_errors_are_problems(client: TestClient, resnet18_file: Path) -> None:
    assert_problem(
        client.post("/v1/checks", content=b"x", headers={"content-type": "text/plain"}),
        415,
        "unsupported-media-type",
    )
    body = assert_problem(
        client.post("/v1/checks", json={"architecture": "resnet18"}), 422, "invalid-request"
    )
    assert "source: Field required" in body["detail"]
    body = assert_problem(
        client.post("/v1/checks", data={"architecture": "resnet18"}, files={"other": ("x", b"1")}),
        422,
        "invalid-request",
    )
    assert "other" in body["detail"]
    response = client.post("/v1/checks", files={"file": ("a.pt", save({"x": torch.zeros(1)}))})
    assert "architecture" in assert_problem(response, 422, "invalid-request")["detail"]
    response = client.post(
        "/v1/checks", content=b"garbage", headers={"content-type": "multipart/form-data"}
    )
    assert_problem(response, 400, "malformed-request")


@pytest.mark.parametrize(
    ("content", "slug", "fragment"),
    [
        (b"", "unsupported-format", "empty"),
        (b"just some text\n" * 10, "unsupported-format", ""),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "unsupported-format", ""),
    ],
)
def test_checks_files_that_are_not_checkpoints_fail_the_check_with_a_problem(
    client: TestClient, tmp_path: Path, content: bytes, slug: str, fragment: str
) -> None:
    """Multipart: refused while the file arrives (fail fast), nothing recorded. Stored bytes
    checked by upload id: the check fails with the same problem."""
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    before = client.get("/v1/checks").json()["total"]
    body = assert_problem(post_check(client, path), 415, slug)
    assert fragment.lower() in body["detail"].lower()
    assert client.get("/v1/checks").json()["total"] == before
    if not content:
        return  # an empty body is not an upload either
    upload = client.put(
        "/v1/uploads", content=content, headers={"Content-Type": "application/octet-stream"}
    ).json()
    check = client.post(
        "/v1/checks",
        params={"wait": 30},
        json={"source": {"upload_id": upload["upload_id"]}, "architecture": "resnet18"},
    ).json()
    assert check["status"] == "failed"
    assert check["error"]["type"] == f"/problems/{slug}"
    assert fragment.lower() in check["error"]["detail"].lower()
    body = assert_problem(client.get(check["links"]["report"]), 409, "check-failed")
    assert body["error"] == check["error"]


def test_checks_pickled_module_is_refused_with_advice(client: TestClient, tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    check = post_check(client, path).json()
    assert check["status"] == "failed"
    assert check["error"]["type"] == "/problems/unsafe-checkpoint"
    assert check["error"]["status"] == 422
    assert "state_dict()" in check["error"]["detail"]
    assert "/" + "tmp" not in check["error"]["detail"]


def test_checks_constructor_rejection_quotes_its_message(
    client: TestClient, resnet18_file: Path
) -> None:
    check = post_check(
        client, resnet18_file, options={"architecture_kwargs": {"num_clases": 10}}
    ).json()
    assert check["error"]["type"] == "/problems/invalid-architecture-arguments"
    assert "num_clases" in check["error"]["detail"]


def test_checks_report_is_409_until_finished(client: TestClient, app_services: Any) -> None:
    record = app_services.repository.create(
        architecture="torchvision:resnet18",
        options={},
        filename="x.pt",
        size_bytes=1,
        sha256="0" * 64,
    )
    body = assert_problem(client.get(f"/v1/checks/{record.id}/report"), 409, "report-not-ready")
    assert "queued" in body["detail"]
    app_services.repository.delete(record.id)


def test_checks_list_get_and_delete(
    client: TestClient, resnet18_file: Path, api_settings: Settings
) -> None:
    check = post_check(client, resnet18_file, options={"merge": {}}).json()
    listing = client.get("/v1/checks", params={"limit": 1}).json()
    assert listing["total"] >= 1
    assert listing["items"][0]["id"] == check["id"]
    assert client.delete(f"/v1/checks/{check['id']}").status_code == 204
    assert_problem(client.get(f"/v1/checks/{check['id']}"), 404, "check-not-found")
    assert not (api_settings.data_dir / "results" / check["id"]).exists()
    assert_problem(client.delete(f"/v1/checks/{check['id']}"), 404, "check-not-found")
    assert_problem(client.get("/v1/checks/not-an-id/report"), 404, "check-not-found")


def test_checks_delete_removes_the_upload_when_no_check_uses_it(
    client: TestClient, tmp_path: Path, api_settings: Settings
) -> None:
    path = tmp_path / "unique.pt"
    torch.save({"w": torch.arange(7.0)}, path)
    check = post_check(client, path).json()
    blob = api_settings.data_dir / "blobs" / check["checkpoint"]["sha256"][:2]
    assert (blob / check["checkpoint"]["sha256"]).exists()
    client.delete(f"/v1/checks/{check['id']}")
    assert not (blob / check["checkpoint"]["sha256"]).exists()


def test_checks_worker_killed_while_idle_is_replaced(
    client: TestClient, resnet18_file: Path, app_services: Any
) -> None:
    pid = app_services.runner._workers[0].process.pid
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while app_services.runner._workers[0].process.pid == pid and time.monotonic() < deadline:
        time.sleep(0.1)
    # Options no earlier test used, so the check runs in the new worker instead of reusing.
    options = {"architecture_kwargs": {"num_classes": 3}}
    check = post_check(client, resnet18_file, options=options).json()
    assert check["status"] == "succeeded"


def test_checks_survive_a_restart(tmp_path: Path, resnet18_file: Path) -> None:
    settings = make_settings(tmp_path / "data")
    with TestClient(create_app(settings)) as first:
        check = post_check(first, resnet18_file, options={"merge": {}}).json()
    with TestClient(create_app(settings)) as second:
        assert second.get("/v1/checks").json()["items"][0]["id"] == check["id"]
        assert second.get(check["links"]["report"]).status_code == 200
        assert second.get(check["links"]["merged"]).status_code == 200


def test_checks_upload_over_the_limit_is_413_and_leaves_nothing(
    tmp_path: Path, resnet18_file: Path
) -> None:
    settings = make_settings(tmp_path / "data", max_upload_bytes=1_000_000)
    with TestClient(create_app(settings)) as small:
        body = assert_problem(post_check(small, resnet18_file), 413, "upload-too-large")
        assert body["limit_value"] == 1_000_000
        # A real checkpoint's first bytes, so the size limit is what refuses it (not the sniff).
        chunks = [resnet18_file.read_bytes()[:65536], *(b"x" * 65536 for _ in range(40))]
        streamed = small.post(
            "/v1/checks",
            content=b"".join(
                [
                    b'--b\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n',
                    *chunks,
                    b"\r\n--b--\r\n",
                ]
            ),
            headers={"content-type": "multipart/form-data; boundary=b", "content-length": "100"},
        )
        assert streamed.status_code in (400, 413)
        assert temp_files(settings) == []
        assert list((settings.data_dir / "blobs").rglob("*")) == []
        assert small.get("/livez").json() == {"status": "ok"}
