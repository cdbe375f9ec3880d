"""Idempotency-Key on POST /v1/checks: replays (with Retry-After while unfinished), another
request, in flight, per principal, a deleted check, a malformed key, and the header in the
OpenAPI document."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.api.idempotency import request_fingerprint
from app.api.submissions import Submission
from app.config import Settings
from app.jobs.idempotency import IdempotencyKeys
from app.main import create_app
from app.names import QualifiedName
from app.schemas import CheckOptions
from tests.api.conftest import make_settings

ALICE = {"authorization": "Bearer alice-key-0123456789"}
BOB = {"authorization": "Bearer bob-key-0123456789"}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(
        tmp_path_factory.mktemp("data"),
        api_keys="alice=alice-key-0123456789,bob=bob-key-0123456789",
    )


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def uploads(client: TestClient, resnet18_file: Path) -> str:
    """The resnet18 upload, held by both principals."""
    for auth in (ALICE, BOB):
        response = client.put(
            "/v1/uploads",
            content=resnet18_file.read_bytes(),
            headers={"content-type": "application/octet-stream", **auth},
        )
        assert response.status_code == 201
    return str(response.json()["upload_id"])


def _body(upload_id: str, **options: Any) -> dict[str, Any]:
    return {
        "source": {"upload_id": upload_id},
        "architecture": "torchvision:resnet18",
        "options": options,
    }


def _post(
    client: TestClient, body: dict[str, Any], key: str, auth: dict[str, str], wait: float = 0
) -> httpx.Response:
    return client.post(
        f"/v1/checks?wait={wait}", json=body, headers={"idempotency-key": key, **auth}
    )


def _problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = dict(response.json())
    assert problem["type"] == f"/problems/{slug}"
    return problem


def test_idempotency_same_key_same_request_answers_the_same_check(
    client: TestClient, uploads: str
) -> None:
    key = f'"{uuid.uuid4()}"'
    first = _post(client, _body(uploads), key, ALICE)
    assert first.status_code == 202
    again = _post(client, _body(uploads), key, ALICE, wait=60)
    assert again.json()["id"] == first.json()["id"]
    assert again.status_code == 200 and again.json()["status"] == "succeeded"
    assert again.headers["location"] == f"/v1/checks/{first.json()['id']}"
    replay = _post(client, _body(uploads), key.strip('"'), ALICE)  # quoted or bare: one key
    assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"]
    ids = [c["id"] for c in client.get("/v1/checks", headers=ALICE).json()["items"]]
    assert ids.count(first.json()["id"]) == 1


def test_idempotency_same_key_another_request_is_422(client: TestClient, uploads: str) -> None:
    key = str(uuid.uuid4())
    assert _post(client, _body(uploads), key, ALICE).status_code == 202
    other = _body(uploads, architecture_kwargs={"num_classes": 10})
    problem = _problem(_post(client, other, key, ALICE), 422, "idempotency-key-reused")
    assert "use a new key" in problem["detail"]


def test_idempotency_keys_are_per_principal(client: TestClient, uploads: str) -> None:
    key = str(uuid.uuid4())
    mine = _post(client, _body(uploads), key, ALICE)
    theirs = _post(client, _body(uploads, dtype_policy="checkpoint"), key, BOB)
    assert mine.status_code == theirs.status_code == 202
    assert mine.json()["id"] != theirs.json()["id"]


def test_idempotency_key_in_flight_is_409(
    client: TestClient, uploads: str, settings: Settings
) -> None:
    key = str(uuid.uuid4())
    submission = Submission(
        QualifiedName("torchvision", "resnet18"), CheckOptions(), "x", 1, uploads
    )
    keys = IdempotencyKeys(client.app.state.services.engine)  # type: ignore[attr-defined]
    # Another API process has claimed the key and not yet recorded its check.
    assert keys.claim("alice", key, request_fingerprint(submission), ttl_seconds=60) is None
    problem = _problem(_post(client, _body(uploads), key, ALICE), 409, "idempotency-key-in-flight")
    assert problem["retry_after"] == 1
    keys.bind("alice", key, "0" * 32)


@pytest.mark.parametrize("status", ["queued", "running"])
def test_idempotency_replay_of_an_unfinished_check_has_retry_after(
    client: TestClient, uploads: str, status: str
) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    # The first request's check, recorded by another API process and not finished yet:
    # still queued, or claimed by a worker elsewhere.
    record = services.repository.create(
        architecture="torchvision:resnet18",
        options=CheckOptions().model_dump(mode="json"),
        filename="r18.pth",
        size_bytes=1,
        sha256=uploads,
        owner="alice",
    )
    if status == "running":
        assert services.repository.claim(record.id, worker="elsewhere", lease_seconds=600)
    key = str(uuid.uuid4())
    submission = Submission(
        QualifiedName("torchvision", "resnet18"), CheckOptions(), "x", 1, uploads
    )
    keys = IdempotencyKeys(services.engine)
    assert keys.claim("alice", key, request_fingerprint(submission), ttl_seconds=60) is None
    keys.bind("alice", key, record.id)
    try:
        replay = _post(client, _body(uploads), key, ALICE)
        assert replay.status_code == 202, replay.text
        assert (replay.json()["id"], replay.json()["status"]) == (record.id, status)
        assert replay.headers["retry-after"] == "2"
        assert replay.headers["location"] == f"/v1/checks/{record.id}"
    finally:
        services.repository.delete(record.id)


def test_idempotency_key_of_a_deleted_check_starts_over(client: TestClient, uploads: str) -> None:
    key = str(uuid.uuid4())
    first = _post(client, _body(uploads), key, ALICE, wait=60).json()["id"]
    assert client.delete(f"/v1/checks/{first}", headers=ALICE).status_code == 204
    second = _post(client, _body(uploads), key, ALICE)
    assert second.status_code in (200, 202) and second.json()["id"] != first


def test_idempotency_key_failed_request_frees_the_key(client: TestClient, uploads: str) -> None:
    key = str(uuid.uuid4())
    missing = {**_body(uploads), "source": {"upload_id": "e" * 64}}
    _problem(_post(client, missing, key, ALICE), 404, "source-not-found")
    assert _post(client, _body(uploads), key, ALICE).status_code == 202


@pytest.mark.parametrize("key", [b"", b'""', "é-not-ascii".encode(), b"x" * 256])
def test_idempotency_malformed_key_is_422(client: TestClient, uploads: str, key: bytes) -> None:
    headers: dict[str, str | bytes] = {"idempotency-key": key, **ALICE}
    response = client.post("/v1/checks", json=_body(uploads), headers=headers)
    _problem(response, 422, "invalid-request")


def test_idempotency_header_is_documented(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/v1/checks"]["post"]
    [header] = [p for p in operation["parameters"] if p["in"] == "header"]
    assert header["name"] == "Idempotency-Key" and not header.get("required", False)
    assert "409" in operation["responses"] and "422" in operation["responses"]
