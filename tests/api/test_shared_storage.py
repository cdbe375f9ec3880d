"""Two app instances on one PostgreSQL database and one ``file://`` storage directory.

Each has a data directory of its own (local scratch), as two machines would: an upload sent
to one is checked through the other, and its results are served by either.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.api.conftest import make_settings
from tests.servers import PostgresServer

OCTET = {"content-type": "application/octet-stream"}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shared")


@pytest.fixture(scope="module")
def fleet(
    postgres: PostgresServer, shared: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, TestClient, list[Settings]]]:
    database_url = postgres.new_database()
    settings = [
        make_settings(
            tmp_path_factory.mktemp(f"scratch-{name}"),
            database_url=database_url,
            storage_url=shared.as_uri(),
        )
        for name in ("a", "b")
    ]
    with TestClient(create_app(settings[0])) as a, TestClient(create_app(settings[1])) as b:
        yield a, b, settings


def test_an_upload_to_one_instance_is_checked_and_served_through_the_other(
    fleet: tuple[TestClient, TestClient, list[Settings]], shared: Path, resnet18_file: Path
) -> None:
    a, b, settings = fleet
    data = resnet18_file.read_bytes()
    upload = a.put("/v1/uploads", content=data, headers=OCTET)
    assert upload.status_code == 201, upload.text
    upload_id = upload.json()["upload_id"]
    assert upload_id == hashlib.sha256(data).hexdigest()
    assert (shared / "blobs" / upload_id[:2] / upload_id).read_bytes() == data
    assert b.get(f"/v1/uploads/{upload_id}").json()["size_bytes"] == len(data)

    body = {
        "source": {"upload_id": upload_id, "filename": "r18.pth"},
        "architecture": "torchvision:resnet18",
        "options": {"architecture_kwargs": {"num_classes": 10}, "merge": {}},
    }
    check = b.post("/v1/checks", params={"wait": 60}, json=body).json()
    assert check["status"] == "succeeded", check
    reports = [client.get(check["links"]["report"]) for client in (a, b)]
    assert [r.status_code for r in reports] == [200, 200]
    assert reports[0].json() == reports[1].json()
    assert reports[0].json()["check_id"] == check["id"]
    merged = [client.get(check["links"]["merged"]) for client in (a, b)]
    assert [m.status_code for m in merged] == [200, 200]
    assert merged[0].content == merged[1].content
    assert len(merged[0].content) > 1000

    # The same check through the other instance is answered from the shared results.
    again = a.post("/v1/checks", params={"wait": 60}, json=body).json()
    assert again["status"] == "succeeded", again
    assert b.get(again["links"]["report"]).json()["reused_from"] == check["id"]
    assert b.get(again["links"]["merged"]).content == merged[0].content

    # Nothing of it landed in either instance's scratch directory.
    for instance in settings:
        assert not (instance.data_dir / "blobs").exists()
        assert not (instance.data_dir / "results").exists()

    assert a.delete(f"/v1/checks/{check['id']}").status_code == 204
    assert b.get(check["links"]["report"]).status_code == 404
    assert b.get(again["links"]["merged"]).content == merged[0].content  # its own link


def test_storage_url_other_than_a_file_url_is_refused_with_what_works(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"file:///absolute/dir"):
        make_settings(tmp_path, storage_url="ftp://bucket/prefix")
    assert make_settings(tmp_path, storage_url="s3://bucket/prefix").storage_url
    with pytest.raises(ValueError, match=r"file:///absolute/dir"):
        make_settings(tmp_path, storage_url="file://relative/dir")
