"""API keys are principals: every check and upload has an owner, and others see a 404.

Two keys used to see, download, reuse and delete each other's checks. These tests run one
app with real workers and three keys (alice, bob, and the admin root) and try each route as
the other principal.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from tests.api.conftest import make_settings
from tests.security.conftest import good_checkpoint

ALICE = {"X-API-Key": "alice-secret"}
BOB = {"Authorization": "Bearer bob=secret"}  # a key may hold '='
ROOT = {"X-API-Key": "root-secret"}
NOT_FOUND_CHECK = "/problems/check-not-found"
NOT_FOUND_SOURCE = "/problems/source-not-found"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path_factory.mktemp("owners"),
        api_keys="alice=alice-secret,bob=bob=secret,root=root-secret",
        admin_keys="root",
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _check(
    client: TestClient,
    headers: dict[str, str],
    content: bytes,
    *,
    merge: bool = True,
    filename: str = "alice-private-name.pt",
) -> dict[str, Any]:
    response = client.post(
        "/v1/checks",
        params={"wait": 60},
        headers=headers,
        data={
            "architecture": "torchvision:resnet18",
            "options": json.dumps({"merge": {}} if merge else {}),
        },
        files={"file": (filename, content)},
    )
    assert response.status_code == 200, response.text
    check: dict[str, Any] = response.json()
    assert check["status"] == "succeeded", check
    return check


def _put(client: TestClient, headers: dict[str, str], content: bytes) -> httpx.Response:
    return client.put(
        "/v1/uploads",
        headers={**headers, "Content-Type": "application/octet-stream"},
        content=content,
    )


def _json_check(client: TestClient, headers: dict[str, str], upload_id: str) -> httpx.Response:
    body = {"source": {"upload_id": upload_id}, "architecture": "torchvision:resnet18"}
    return client.post("/v1/checks", params={"wait": 60}, headers=headers, json=body)


def _problem_type(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    kind: str = response.json()["type"]
    return kind


def test_ownership_another_principals_check_is_a_404_on_every_route(client: TestClient) -> None:
    check = _check(client, ALICE, good_checkpoint())
    base = f"/v1/checks/{check['id']}"
    for path in (base, f"{base}?wait=1", f"{base}/report", f"{base}/merged"):
        assert _problem_type(client.get(path, headers=BOB), 404) == NOT_FOUND_CHECK, path
    assert _problem_type(client.delete(base, headers=BOB), 404) == NOT_FOUND_CHECK
    # The unknown id gives the same answer, so an id tells nothing.
    unknown = client.get(f"/v1/checks/{'0' * 32}", headers=BOB).json()
    seen = client.get(base, headers=BOB).json()
    assert {k: v for k, v in seen.items() if k != "detail"} == {
        k: v for k, v in unknown.items() if k != "detail"
    }
    listed = client.get("/v1/checks", params={"limit": 500}, headers=BOB).json()
    assert check["id"] not in {c["id"] for c in listed["items"]}
    assert "alice-private-name.pt" not in json.dumps(listed)
    # Alice and the admin still see, download and delete it.
    assert client.get(f"{base}/report", headers=ALICE).status_code == 200
    assert client.get(f"{base}/merged", headers=ROOT).status_code == 200
    all_ids = {c["id"] for c in client.get("/v1/checks", headers=ROOT).json()["items"]}
    assert check["id"] in all_ids
    assert client.delete(base, headers=ALICE).status_code == 204


def test_ownership_lists_count_only_ones_own_checks(client: TestClient) -> None:
    before = client.get("/v1/checks", headers=BOB).json()["total"]
    _check(client, ALICE, good_checkpoint(), merge=False)
    mine = _check(client, BOB, good_checkpoint(), merge=False)
    after = client.get("/v1/checks", headers=BOB).json()
    assert after["total"] == before + 1
    assert next(c["id"] for c in after["items"]) == mine["id"]
    root_total = client.get("/v1/checks", headers=ROOT).json()["total"]
    assert root_total >= after["total"] + 1


def test_ownership_upload_ids_answer_only_to_who_sent_the_bytes(client: TestClient) -> None:
    content = good_checkpoint()
    sha256 = hashlib.sha256(content).hexdigest()
    first = _put(client, ALICE, content)
    assert first.status_code == 201
    # No existence oracle: Bob asking about Alice's bytes, or about bytes nobody sent, is
    # the same 404, and using her upload id as a source too.
    nobody = hashlib.sha256(b"nobody sent this").hexdigest()
    for upload_id in (sha256, nobody):
        answer = client.get(f"/v1/uploads/{upload_id}", headers=BOB)
        assert _problem_type(answer, 404) == NOT_FOUND_SOURCE
        assert _problem_type(_json_check(client, BOB, upload_id), 404) == NOT_FOUND_SOURCE
        deleted = client.delete(f"/v1/uploads/{upload_id}", headers=BOB)
        assert _problem_type(deleted, 404) == NOT_FOUND_SOURCE
    # Bob sending the same bytes gets the answer Alice got, and the upload is then his too.
    second = _put(client, BOB, content)
    assert (second.status_code, second.json(), second.headers["location"]) == (
        first.status_code,
        first.json(),
        first.headers["location"],
    )
    assert client.get(f"/v1/uploads/{sha256}", headers=BOB).status_code == 200
    # Bob deleting it drops his hold only; Alice's upload stays usable.
    assert client.delete(f"/v1/uploads/{sha256}", headers=BOB).status_code == 204
    assert client.get(f"/v1/uploads/{sha256}", headers=BOB).status_code == 404
    assert client.get(f"/v1/uploads/{sha256}", headers=ALICE).status_code == 200
    assert _json_check(client, ALICE, sha256).json()["status"] == "succeeded"


def test_ownership_admin_uses_and_deletes_any_upload(client: TestClient) -> None:
    content = good_checkpoint()
    sha256 = hashlib.sha256(content).hexdigest()
    assert _put(client, ALICE, content).status_code == 201
    assert client.get(f"/v1/uploads/{sha256}", headers=ROOT).status_code == 200
    assert client.delete(f"/v1/uploads/{sha256}", headers=ROOT).status_code == 204
    assert client.get(f"/v1/uploads/{sha256}", headers=ALICE).status_code == 404


def test_ownership_results_are_reused_only_within_one_owner(client: TestClient) -> None:
    content = good_checkpoint()
    alice_first = _check(client, ALICE, content)
    bob = _check(client, BOB, content, filename="bob.pt")
    alice_again = _check(client, ALICE, content)

    def reused_from(check: dict[str, Any]) -> Any:
        report = client.get(check["links"]["report"], headers=ROOT).json()
        assert report["check_id"] == check["id"]
        return report["reused_from"]

    assert reused_from(bob) is None  # ran again: nothing tells Bob that Alice checked it
    assert reused_from(alice_again) == alice_first["id"]
    bob_report = client.get(bob["links"]["report"], headers=BOB).json()
    assert "alice-private-name" not in json.dumps(bob_report)


def test_ownership_deleting_ones_last_check_keeps_bytes_another_principal_holds(
    client: TestClient,
) -> None:
    content = good_checkpoint()
    sha256 = hashlib.sha256(content).hexdigest()
    assert _put(client, BOB, content).status_code == 201
    check = _check(client, ALICE, content, merge=False)
    assert client.get(f"/v1/uploads/{sha256}", headers=ALICE).status_code == 200
    assert client.delete(f"/v1/checks/{check['id']}", headers=ALICE).status_code == 204
    # Alice's hold went with her last check; Bob's upload was not removed under him.
    assert client.get(f"/v1/uploads/{sha256}", headers=ALICE).status_code == 404
    assert client.get(f"/v1/uploads/{sha256}", headers=BOB).status_code == 200


def test_ownership_rows_from_before_owners_belong_to_admins_only(client: TestClient) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    buffer = io.BytesIO()
    torch.save({"fc.bias": torch.zeros(3)}, buffer)
    legacy = services.repository.create(
        architecture="torchvision:resnet18",
        options={},
        filename="legacy.pt",
        size_bytes=len(buffer.getvalue()),
        sha256=hashlib.sha256(buffer.getvalue()).hexdigest(),
    )
    assert legacy.owner is None
    for headers in (ALICE, BOB):
        response = client.get(f"/v1/checks/{legacy.id}", headers=headers)
        assert _problem_type(response, 404) == NOT_FOUND_CHECK
    assert client.get(f"/v1/checks/{legacy.id}", headers=ROOT).status_code == 200
