"""Speaking HTTP well: HEAD, ETag / If-None-Match, Retry-After, summary first, Swagger's
Authorize button, and the merged file's metadata."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient
from safetensors import safe_open

from app.config import Settings
from app.main import create_app
from tests.api.conftest import make_settings


def _finished_check(client: TestClient, path: Path) -> str:
    options = {"architecture_kwargs": {"num_classes": 10}, "merge": {}}
    with path.open("rb") as handle:
        response = client.post(
            "/v1/checks?wait=60",
            data={"architecture": "torchvision:resnet18", "options": json.dumps(options)},
            files={"file": ("r18.pth", handle, "application/octet-stream")},
        )
    assert response.status_code == 200, response.text
    check_id: str = response.json()["id"]
    return check_id


def test_report_etag_head_and_summary_first(client: TestClient, resnet18_file: Path) -> None:
    base = f"/v1/checks/{_finished_check(client, resnet18_file)}"
    report = client.get(f"{base}/report")
    etag = report.headers["etag"]
    assert next(iter(json.loads(report.content))) == "summary"
    again = client.get(f"{base}/report", headers={"If-None-Match": f'"x", W/{etag}'})
    assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
    head = client.head(f"{base}/report")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["etag"] == etag
    assert head.headers["content-length"] == str(len(report.content))


def test_merged_etag_head_and_bare_kwargs(
    client: TestClient, resnet18_file: Path, tmp_path: Path
) -> None:
    base = f"/v1/checks/{_finished_check(client, resnet18_file)}"
    merged = client.get(f"{base}/merged")
    etag = merged.headers["etag"]
    assert client.get(f"{base}/merged", headers={"If-None-Match": etag}).status_code == 304
    head = client.head(f"{base}/merged")
    assert (head.status_code, head.content, head.headers["etag"]) == (200, b"", etag)
    assert head.headers["content-length"] == str(len(merged.content))
    out = tmp_path / "merged.safetensors"
    out.write_bytes(merged.content)
    with safe_open(str(out), framework="pt") as handle:
        metadata = handle.metadata()
    assert json.loads(metadata["architecture_kwargs"]) == {"num_classes": 10}


def test_create_check_202_has_retry_after(client: TestClient, resnet18_file: Path) -> None:
    with resnet18_file.open("rb") as handle:
        response = client.post(
            "/v1/checks",
            data={"architecture": "torchvision:resnet18"},
            files={"file": ("r18.pth", handle, "application/octet-stream")},
        )
    assert response.status_code == 202
    assert response.headers["retry-after"] == "2"


def test_openapi_security_only_with_keys(client: TestClient, tmp_path: Path) -> None:
    schema = client.get("/openapi.json").json()
    assert "securitySchemes" not in schema["components"]
    assert not any("security" in op for p in schema["paths"].values() for op in p.values())
    settings: Settings = make_settings(tmp_path, api_keys="alice=k1")
    with TestClient(create_app(settings)) as keyed:
        keyed_schema = keyed.get("/openapi.json", headers={"X-API-Key": "k1"}).json()
    assert keyed_schema["components"]["securitySchemes"]
