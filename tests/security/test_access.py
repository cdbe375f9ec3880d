"""Access: optional API keys, open health probes, the torch floor and weights-only switch."""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.jobs.worker import UnsafeRuntimeError, check_runtime
from app.main import create_app
from tests.api.conftest import make_settings

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def keyed_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    keys_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys_file.write_text("# rotated monthly\nfile-key\n\n")
    settings = make_settings(
        tmp_path_factory.mktemp("data"), api_keys=" env-key-1 , env-key-2 ", api_keys_file=keys_file
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.slow
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": "wrong"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic x"},
        {"X-API-Key": "env-key-1x"},
        {"X-API-Key": "env-key-"},
    ],
)
def test_access_missing_or_wrong_key_is_a_401_problem(
    keyed_client: TestClient, headers: dict[str, str]
) -> None:
    response = keyed_client.get("/v1/checks", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["type"] == "/problems/unauthorized"
    assert keyed_client.post("/v1/checks", headers=headers).status_code == 401
    assert keyed_client.get("/v1/architectures", headers=headers).status_code == 401


@pytest.mark.slow
@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": "env-key-1"},
        {"Authorization": "Bearer env-key-2"},
        {"Authorization": "bearer file-key"},
    ],
)
def test_access_valid_key_in_either_header_passes(
    keyed_client: TestClient, headers: dict[str, str]
) -> None:
    assert keyed_client.get("/v1/checks", headers=headers).status_code == 200


@pytest.mark.slow
def test_access_health_and_docs_stay_open(keyed_client: TestClient) -> None:
    assert keyed_client.get("/livez").json() == {"status": "ok"}
    ready = keyed_client.get("/readyz")
    deadline = time.monotonic() + 60
    while ready.status_code == 503 and time.monotonic() < deadline:  # workers warming up
        assert ready.json()["checks"]["workers"] == "none ready"
        time.sleep(0.2)
        ready = keyed_client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"] == "ok"
    assert keyed_client.get("/docs").status_code == 200
    schema = keyed_client.get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["BearerKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key as a bearer token: `Authorization: Bearer <key>`.",
    }
    assert schemes["ApiKeyHeader"]["in"] == "header"
    assert schemes["ApiKeyHeader"]["name"] == "X-API-Key"
    assert {"BearerKey": []} in schema["paths"]["/v1/checks"]["post"]["security"]
    assert "security" not in schema["paths"]["/livez"]["get"]


@pytest.mark.parametrize("version", ["2.9.1", "2.6.0+cu124", "1.13.1", "garbage"])
def test_access_torch_below_the_floor_is_refused(version: str) -> None:
    with pytest.raises(UnsafeRuntimeError, match=r"needs torch >= 2\.10"):
        check_runtime(version)


@pytest.mark.parametrize("version", ["2.10.0", "2.14.1", "2.11.0a0+git1234", "3.0"])
def test_access_torch_at_or_above_the_floor_passes(version: str) -> None:
    check_runtime(version)


def test_access_service_refuses_to_start_on_old_torch_or_unsafe_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path / "data")
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "2.9.0")
    with pytest.raises(UnsafeRuntimeError, match=r"2\.9\.0"), TestClient(create_app(settings)):
        pass
    monkeypatch.undo()
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    unsafe_env = pytest.raises(UnsafeRuntimeError, match="TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    with unsafe_env, TestClient(create_app(settings)):
        pass
    assert not (tmp_path / "data").exists()  # nothing started


@pytest.mark.slow
def test_access_check_ids_are_unguessable_and_paths_are_not_ids(corpus_client: TestClient) -> None:
    from tests.security.conftest import good_checkpoint, post_bytes

    ids = {post_bytes(corpus_client, good_checkpoint(), wait=0).json()["id"] for _ in range(3)}
    assert len(ids) == 3
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)  # 128 random bits each
    for probe in ("..%2F..%2Fckpt_compat.db", "%2e%2e", "0" * 32):
        response = corpus_client.get(f"/v1/checks/{probe}/report")
        assert response.status_code == 404
        assert response.json()["type"] in ("/problems/check-not-found", "/problems/http-404")
