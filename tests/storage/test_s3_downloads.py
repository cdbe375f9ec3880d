"""Merged files kept in S3 storage are served streamed, with HEAD and Range as on disk.

Against moto's real S3-compatible server: the API process copies the object to local
scratch in parts and sends it from there, so a download never holds the file in memory
(traced with ``tracemalloc`` across the app's threads while a client streams it); ``HEAD``
answers the headers alone, and ``Range`` answers 206 with exactly the stored bytes.
"""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.api.conftest import make_settings
from tests.s3_server import S3Server, s3_server

pytestmark = pytest.mark.slow
OCTET = {"content-type": "application/octet-stream"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("moto")) as running:
        running.client().create_bucket(Bucket="store")
        yield running


@pytest.fixture(scope="module")
def client(server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = make_settings(tmp_path_factory.mktemp("data"), storage_url="s3://store/ckpt")
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def merged(client: TestClient, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A finished check of resnet18 (as ``torch.save`` writes it) with its merged file."""
    from tests.checkpoints import resnet18_state_dict, save_checkpoint

    path = save_checkpoint(resnet18_state_dict(), tmp_path_factory.mktemp("ckpt") / "r18.pth")
    upload = client.put("/v1/uploads", content=path.read_bytes(), headers=OCTET)
    body = {
        "source": {"upload_id": upload.json()["upload_id"]},
        "architecture": "torchvision:resnet18",
        "options": {"merge": {}},
    }
    check: dict[str, Any] = client.post("/v1/checks", params={"wait": 60}, json=body).json()
    assert check["status"] == "succeeded", check
    return check


def _stored(server: S3Server, check: dict[str, Any]) -> bytes:
    key = f"ckpt/results/{check['id']}/merged.safetensors"
    data: bytes = server.client().get_object(Bucket="store", Key=key)["Body"].read()
    return data


def test_s3_merged_download_streams_without_holding_the_file_in_memory(
    client: TestClient, server: S3Server, merged: dict[str, Any]
) -> None:
    stored = _stored(server, merged)
    digest = hashlib.sha256()
    received = 0
    tracemalloc.start()
    try:
        # The first GET also copies the object from the store into scratch.
        with client.stream("GET", merged["links"]["merged"]) as answer:
            assert answer.status_code == 200
            for chunk in answer.iter_bytes():
                digest.update(chunk)
                received += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == len(stored) > 40_000_000
    assert digest.hexdigest() == hashlib.sha256(stored).hexdigest()
    # Reading the file whole would peak above its size; streamed, boto3's queue of 256 KiB
    # chunks and the response's 64 KiB pieces (8.9 MB traced for a 47 MB file, quiet).
    assert peak < len(stored) / 2, (peak, len(stored))


def test_s3_merged_download_answers_head_and_ranges(
    client: TestClient, server: S3Server, merged: dict[str, Any]
) -> None:
    stored = _stored(server, merged)
    url = merged["links"]["merged"]
    head = client.head(url)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(stored)
    assert head.headers["accept-ranges"] == "bytes"
    assert "attachment" in head.headers["content-disposition"]
    full = client.get(url)
    assert full.headers["etag"] == head.headers["etag"]  # one tag for the same file

    part = client.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-199/{len(stored)}"
    assert part.content == stored[100:200]
    tail = client.get(url, headers={"Range": "bytes=-16"})
    assert tail.status_code == 206 and tail.content == stored[-16:]
    outside = client.get(url, headers={"Range": f"bytes={len(stored)}-"})
    assert outside.status_code == 416
    unchanged = client.get(url, headers={"If-None-Match": head.headers["etag"]})
    assert unchanged.status_code == 304 and unchanged.content == b""


def test_s3_merged_download_copy_is_reused_not_fetched_again(
    client: TestClient, server: S3Server, merged: dict[str, Any]
) -> None:
    client.head(merged["links"]["merged"])  # a copy in scratch exists now
    seen = len(server.requests())
    client.get(merged["links"]["merged"], headers={"Range": "bytes=0-9"})
    gets = [p for m, p, _ in server.requests()[seen:] if m == "GET" and "merged" in p]
    assert gets == []  # served from the scratch copy; only a HEAD asked for its ETag
