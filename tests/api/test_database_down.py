"""PostgreSQL stopped under a running app: 503 database-unavailable problems, then recovery."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from app.api.problems import is_database_unavailable
from app.main import create_app
from tests.api.conftest import make_settings
from tests.servers import PostgresServer, running_postgres

PROBLEM = "application/problem+json"
UNAVAILABLE = "/problems/database-unavailable"


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    """A server of this module's own: stopping the session's would break other tests."""
    with running_postgres() as server:
        yield server


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["retry-after"] == "5"
    problem = response.json()
    assert problem["type"] == UNAVAILABLE
    assert problem["status"] == 503
    assert "reconnects by itself" in problem["detail"]


def test_database_down_answers_503_and_recovers_without_a_restart(
    own_postgres: PostgresServer, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, database_url=own_postgres.new_database())
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/checks").status_code == 200
        upload = client.put(
            "/v1/uploads", content=b"bytes", headers={"content-type": "application/octet-stream"}
        )
        assert upload.status_code == 201, upload.text
        check = {
            "source": {"upload_id": upload.json()["upload_id"]},
            "architecture": "torchvision:resnet18",
        }

        own_postgres.stop()
        try:
            _assert_unavailable(client.get("/v1/checks"))
            _assert_unavailable(client.post("/v1/checks", json=check))
            _assert_unavailable(client.get("/v1/checks/" + "0" * 32))
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"] == "unavailable"
        finally:
            own_postgres.start()

        assert client.get("/v1/checks").status_code == 200
        assert client.post("/v1/checks", json=check).status_code == 202
        assert client.get("/v1/checks/" + "0" * 32).status_code == 404
        ready = client.get("/readyz")
        assert ready.json()["checks"]["database"] == "ok"


def test_only_errors_of_an_unreachable_database_are_unavailable() -> None:
    lost = OperationalError("SELECT 1", {}, Exception("connection refused"))
    assert is_database_unavailable(lost)
    dropped = DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True)
    assert is_database_unavailable(dropped)
    # A statement the database refused is a bug to log (500), not an outage to wait out.
    assert not is_database_unavailable(IntegrityError("INSERT", {}, Exception("duplicate")))
