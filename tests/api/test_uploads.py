"""PUT /v1/uploads over HTTP: raw body streamed to the blob store, stored once, limit enforced."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save

from app.api.routes import checks as checks_route
from app.config import Settings
from app.main import create_app
from app.storage import UploadWriter
from tests.api.conftest import make_settings

PROBLEM = "application/problem+json"
LIMIT = 1_000_000
ARCH = "torchvision:resnet18"


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(tmp_path_factory.mktemp("data"), max_upload_bytes=LIMIT)


@pytest.fixture(scope="module")
def uploads(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def _stored(settings: Settings) -> list[Path]:
    return [p for p in (settings.data_dir / "blobs").rglob("*") if p.is_file()]


def _octet(body: bytes | Iterator[bytes], **headers: str) -> dict[str, object]:
    return {
        "content": body,
        "headers": {"content-type": "application/octet-stream", **headers},
    }


def test_uploads_put_answers_201_with_sha256_and_size(
    uploads: TestClient, settings: Settings
) -> None:
    body = b"checkpoint bytes " * 1000
    response = uploads.put("/v1/uploads", **_octet(body))  # type: ignore[arg-type]
    assert response.status_code == 201, response.text
    digest = hashlib.sha256(body).hexdigest()
    assert response.json() == {"upload_id": digest, "size_bytes": len(body)}
    assert response.headers["location"] == f"/v1/uploads/{digest}"
    assert (settings.data_dir / "blobs" / digest[:2] / digest).read_bytes() == body
    assert uploads.get(f"/v1/uploads/{digest}").json() == response.json()


def test_uploads_same_bytes_are_stored_once(uploads: TestClient, settings: Settings) -> None:
    body = b"same content" * 5000
    chunks = iter([body[:7000], body[7000:]])
    first = uploads.put("/v1/uploads", **_octet(body))  # type: ignore[arg-type]
    before = _stored(settings)
    second = uploads.put("/v1/uploads", **_octet(chunks))  # type: ignore[arg-type]
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert _stored(settings) == before
    assert list((settings.data_dir / "tmp").iterdir()) == []


def test_uploads_a_second_copy_is_removed_after_the_answer(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unlinking a 1 GB temp file takes about 0.2 s: the client does not wait for it."""
    events: list[str] = []
    app = create_app(settings)

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        async def logged_send(message: Any) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                events.append("answered")
            await send(message)

        await app(scope, receive, logged_send)

    real_abort = UploadWriter.abort

    def abort(writer: UploadWriter) -> None:
        events.append("removed copy" if writer.tmp_path.exists() else "nothing to remove")
        real_abort(writer)

    monkeypatch.setattr(UploadWriter, "abort", abort)
    body = b"sent twice" * 5000
    with TestClient(recording) as client:
        assert client.put("/v1/uploads", **_octet(body)).status_code == 201  # type: ignore[arg-type]
        assert events == ["answered", "nothing to remove"]  # new bytes: moved into place
        events.clear()
        assert client.put("/v1/uploads", **_octet(body)).status_code == 201  # type: ignore[arg-type]
    assert events == ["answered", "removed copy"]
    assert list((settings.data_dir / "tmp").iterdir()) == []


def test_uploads_over_the_limit_is_413_at_once_and_keeps_nothing(
    uploads: TestClient, settings: Settings
) -> None:
    before = _stored(settings)
    declared = uploads.put(
        "/v1/uploads",
        **_octet(b"x" * 10, **{"content-length": str(LIMIT + 1)}),  # type: ignore[arg-type]
    )
    assert declared.status_code == 413
    assert declared.headers["content-type"] == PROBLEM
    assert declared.json()["type"] == "/problems/upload-too-large"
    assert declared.json()["limit_value"] == LIMIT
    streamed = uploads.put(
        "/v1/uploads",
        **_octet(b"y" * 65536 for _ in range(40)),  # type: ignore[arg-type]
    )
    assert streamed.status_code == 413
    assert "Nothing was kept" in streamed.json()["detail"]
    assert _stored(settings) == before
    assert list((settings.data_dir / "tmp").iterdir()) == []


def test_uploads_need_an_octet_stream_body(uploads: TestClient) -> None:
    response = uploads.put("/v1/uploads", content=b"{}", headers={"content-type": "text/plain"})
    assert response.status_code == 415
    assert response.json()["type"] == "/problems/unsupported-media-type"
    assert "application/octet-stream" in response.json()["detail"]


def test_uploads_unknown_id_is_404(uploads: TestClient) -> None:
    response = uploads.get(f"/v1/uploads/{'a' * 64}")
    assert response.status_code == 404
    assert response.json()["type"] == "/problems/source-not-found"
    assert uploads.get("/v1/uploads/not-a-digest").status_code == 404


def test_uploads_delete_frees_the_disk_and_then_the_id_is_unknown(
    uploads: TestClient, settings: Settings
) -> None:
    body = b"to be deleted " * 1000
    digest = uploads.put("/v1/uploads", **_octet(body)).json()["upload_id"]  # type: ignore[arg-type]
    path = settings.data_dir / "blobs" / digest[:2] / digest
    assert path.is_file()
    assert uploads.delete(f"/v1/uploads/{digest}").status_code == 204
    assert not path.exists()
    assert uploads.get(f"/v1/uploads/{digest}").status_code == 404
    again = uploads.delete(f"/v1/uploads/{digest}")
    assert again.status_code == 404
    assert again.headers["content-type"] == PROBLEM
    assert uploads.delete("/v1/uploads/not-a-digest").status_code == 404


def test_uploads_in_use_by_a_check_are_kept_until_the_check_is_deleted(
    uploads: TestClient, settings: Settings
) -> None:
    body = save({"fc.weight": torch.full((10, 512), 0.5), "fc.bias": torch.zeros(10)})
    digest = uploads.put("/v1/uploads", **_octet(body)).json()["upload_id"]  # type: ignore[arg-type]
    check = uploads.post(
        "/v1/checks",
        params={"wait": 60},
        json={"source": {"upload_id": digest}, "architecture": "torchvision:resnet18"},
    ).json()
    assert check["status"] == "succeeded", check

    refused = uploads.delete(f"/v1/uploads/{digest}")
    assert refused.status_code == 409
    assert refused.headers["content-type"] == PROBLEM
    assert refused.json()["type"] == "/problems/upload-in-use"
    assert "1 check(s) use this upload" in refused.json()["detail"]
    assert uploads.get(f"/v1/uploads/{digest}").status_code == 200
    assert uploads.get(check["links"]["report"]).status_code == 200  # nothing was lost

    assert uploads.delete(f"/v1/checks/{check['id']}").status_code == 204
    assert not (settings.data_dir / "blobs" / digest[:2] / digest).exists()
    assert uploads.get(f"/v1/uploads/{digest}").status_code == 404


def test_uploads_delete_waits_for_a_check_being_recorded_and_then_refuses(
    uploads: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check recorded while DELETE runs either sees the upload gone (404) or keeps it (409)."""
    body = save({"fc.weight": torch.full((10, 512), 0.25), "fc.bias": torch.zeros(10)})
    digest = uploads.put("/v1/uploads", **_octet(body)).json()["upload_id"]  # type: ignore[arg-type]
    services = uploads.app.state.services  # type: ignore[attr-defined]
    recording, release = threading.Event(), threading.Event()
    real_create = services.repository.create

    def slow_create(**fields: Any) -> Any:
        recording.set()
        release.wait(timeout=30)
        return real_create(**fields)

    monkeypatch.setattr(services.repository, "create", slow_create)
    with ThreadPoolExecutor(max_workers=2) as pool:
        check = pool.submit(
            uploads.post,
            "/v1/checks",
            json={"source": {"upload_id": digest}, "architecture": "torchvision:resnet18"},
        )
        assert recording.wait(timeout=30)
        delete = pool.submit(uploads.delete, f"/v1/uploads/{digest}")
        time.sleep(0.3)
        assert not delete.done()  # waits while the check is being recorded
        release.set()
        assert check.result(timeout=30).status_code == 202
        refused = delete.result(timeout=30)
    assert refused.status_code == 409, refused.text
    assert (settings.data_dir / "blobs" / digest[:2] / digest).is_file()


def test_uploads_a_check_on_an_upload_deleted_meanwhile_is_a_404_and_not_recorded(
    uploads: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = save({"fc.weight": torch.full((10, 512), 0.75), "fc.bias": torch.zeros(10)})
    digest = uploads.put("/v1/uploads", **_octet(body)).json()["upload_id"]  # type: ignore[arg-type]
    real_receive = checks_route.receive_json

    async def receive_then_delete(request: Any, services: Any, principal: Any) -> Any:
        submission = await real_receive(request, services, principal)
        # DELETE /v1/uploads lands between reading the request and recording the check.
        assert uploads.app.state.services is services  # type: ignore[attr-defined]
        services.blobs.delete(digest)
        return submission

    monkeypatch.setattr(checks_route, "receive_json", receive_then_delete)
    before = [check["id"] for check in uploads.get("/v1/checks").json()["items"]]
    response = uploads.post(
        "/v1/checks",
        json={"source": {"upload_id": digest}, "architecture": "torchvision:resnet18"},
    )
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    assert "was deleted" in response.json()["detail"]
    after = [check["id"] for check in uploads.get("/v1/checks").json()["items"]]
    assert after == before  # no check was recorded for a missing upload


def test_uploads_no_check_uses_expire_in_the_running_service(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", upload_ttl_seconds=3)  # swept every 0.75 s
    body = save({"fc.weight": torch.full((10, 512), 0.5), "fc.bias": torch.zeros(10)})
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200:  # a warm worker: checks record at once
            assert time.monotonic() < deadline
            time.sleep(0.2)
        unused = client.put("/v1/uploads", **_octet(b"never checked")).json()  # type: ignore[arg-type]
        used = client.put("/v1/uploads", **_octet(body)).json()  # type: ignore[arg-type]
        check = client.post(
            "/v1/checks",
            params={"wait": 60},
            json={"source": {"upload_id": used["upload_id"]}, "architecture": ARCH},
        )
        assert check.json()["status"] == "succeeded", check.text
        deadline = time.monotonic() + 30
        while client.get(f"/v1/uploads/{unused['upload_id']}").status_code == 200:
            assert time.monotonic() < deadline, "the unused upload did not expire"
            time.sleep(0.2)
        time.sleep(4)  # past its time too, but a check uses it
        assert client.get(f"/v1/uploads/{used['upload_id']}").json() == used
        assert client.get(check.json()["links"]["report"]).status_code == 200
