"""S3 end to end: uploads stored in a bucket, checks of s3:// sources read by ranges.

Against moto's real S3-compatible server: an upload lands in the bucket by multipart and is
checked and merged from there; a 50+ MB safetensors and .pth named by URI are reported from
under 1 % of their bytes (the report's ``bytes_read``, and the server's log shows ranged GETs
only); the allowlist, missing objects and an unreachable store answer their problems.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.api.conftest import make_settings
from tests.s3_server import S3Server, s3_server
from tests.servers import free_port

pytestmark = pytest.mark.slow
OCTET = {"content-type": "application/octet-stream"}
ALLOWED = "s3://models/allowed/"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("moto")) as running:
        for bucket in ("store", "models"):
            running.client().create_bucket(Bucket=bucket)
        yield running


@pytest.fixture(scope="module")
def s3_client_app(
    server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path_factory.mktemp("scratch"),
        storage_url="s3://store/ckpt",
        source_uris=ALLOWED,
        max_upload_bytes=300 * 1024 * 1024,
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def big_state_dict() -> dict[str, Any]:
    """resnet18 (47 MB of fp32) plus 40 MB of padding: 87 MB, above the 50 MB asked for."""
    import torch

    from tests.checkpoints import resnet18_state_dict

    state = resnet18_state_dict()
    state["extra.padding"] = torch.zeros(10 * 1024 * 1024)
    return state


def _check(client: TestClient, source: dict[str, str], **options: Any) -> dict[str, Any]:
    body = {"source": source, "architecture": "torchvision:resnet18", "options": options}
    answer = client.post("/v1/checks", params={"wait": 60}, json=body)
    assert answer.status_code in (200, 201, 202), answer.text
    check: dict[str, Any] = answer.json()
    assert check["status"] == "succeeded", check
    return check


def test_s3_upload_lands_in_the_bucket_by_multipart_and_merges_stream(
    s3_client_app: TestClient, server: S3Server, big_state_dict: dict[str, Any], tmp_path: Path
) -> None:
    from tests.checkpoints import save_checkpoint

    data = save_checkpoint(big_state_dict, tmp_path / "big.pth").read_bytes()
    upload = s3_client_app.put("/v1/uploads", content=data, headers=OCTET)
    assert upload.status_code == 201, upload.text
    digest = hashlib.sha256(data).hexdigest()
    key = f"ckpt/blobs/{digest[:2]}/{digest}"
    stored = server.client().head_object(Bucket="store", Key=key)
    assert stored["ContentLength"] == len(data)
    requests = server.requests()
    assert any(m == "POST" and p.startswith("/store/ckpt/tmp/upload-") for m, p, _ in requests)
    assert any(m == "PUT" and "partNumber=5" in p for m, p, _ in requests)  # 16 MiB parts

    check = _check(s3_client_app, {"upload_id": digest}, merge={})
    report = s3_client_app.get(check["links"]["report"]).json()
    assert report["checkpoint"]["bytes_read"] == len(data)  # a merge downloads whole
    with s3_client_app.stream("GET", check["links"]["merged"]) as merged:
        assert merged.status_code == 200  # streamed through the API, not redirected
        assert "attachment" in merged.headers["content-disposition"]
        length = int(merged.headers["content-length"])
        assert length > 40_000_000
        assert sum(len(chunk) for chunk in merged.iter_bytes()) == length


@pytest.mark.parametrize("suffix", ["safetensors", "pth"])
def test_s3_uri_source_reports_from_under_one_percent_of_the_bytes(
    s3_client_app: TestClient,
    server: S3Server,
    big_state_dict: dict[str, Any],
    tmp_path: Path,
    suffix: str,
) -> None:
    from safetensors.torch import save_file

    from tests.checkpoints import save_checkpoint

    path = tmp_path / f"big.{suffix}"
    if suffix == "safetensors":
        save_file(big_state_dict, str(path))
    else:
        save_checkpoint(big_state_dict, path)
    size = path.stat().st_size
    assert size > 50_000_000
    server.client().upload_file(str(path), "models", f"allowed/big.{suffix}")
    seen = len(server.requests())

    check = _check(s3_client_app, {"uri": f"{ALLOWED}big.{suffix}"})
    report = s3_client_app.get(check["links"]["report"]).json()
    assert report["checkpoint"]["filename"] == f"big.{suffix}"
    assert report["checkpoint"]["size_bytes"] == size
    assert report["checkpoint"]["tensor_count"] == len(big_state_dict)
    bytes_read = report["checkpoint"]["bytes_read"]
    assert 0 < bytes_read < size / 100, (bytes_read, size)
    gets = [(p, s) for m, p, s in server.requests()[seen:] if m == "GET" and "big." in p]
    assert gets and all(status == 206 for _, status in gets)  # ranged GETs only


def test_s3_uri_source_sharded_index_reads_its_shards_by_ranges(
    s3_client_app: TestClient, server: S3Server, tmp_path: Path
) -> None:
    import json

    from safetensors.torch import save_file

    from tests.checkpoints import resnet18_state_dict

    state = resnet18_state_dict()
    keys = sorted(state)
    halves = {"a.safetensors": keys[: len(keys) // 2], "b.safetensors": keys[len(keys) // 2 :]}
    client = server.client()
    for name, part in halves.items():
        save_file({k: state[k] for k in part}, str(tmp_path / name))
        client.upload_file(str(tmp_path / name), "models", f"allowed/sharded/{name}")
    index = {"weight_map": {k: name for name, part in halves.items() for k in part}}
    client.put_object(
        Bucket="models", Key="allowed/sharded/m.safetensors.index.json", Body=json.dumps(index)
    )
    for uri in (f"{ALLOWED}sharded/m.safetensors.index.json", f"{ALLOWED}sharded/"):
        check = _check(s3_client_app, {"uri": uri})
        report = s3_client_app.get(check["links"]["report"]).json()
        assert report["checkpoint"]["tensor_count"] == len(state)
        assert report["checkpoint"]["bytes_read"] < 200_000

    # A merge reads every tensor: the shards are downloaded whole, and the merge loads.
    check = _check(s3_client_app, {"uri": f"{ALLOWED}sharded/"}, merge={"format": "safetensors"})
    report = s3_client_app.get(check["links"]["report"]).json()
    assert report["checkpoint"]["bytes_read"] == report["checkpoint"]["size_bytes"]
    merged = s3_client_app.get(check["links"]["merged"])
    assert merged.status_code == 200 and len(merged.content) > 40_000_000


def _problem(client: TestClient, uri: str) -> tuple[int, dict[str, Any]]:
    body = {"source": {"uri": uri}, "architecture": "torchvision:resnet18"}
    answer = client.post("/v1/checks", json=body)
    assert answer.headers["content-type"].startswith("application/problem+json")
    return answer.status_code, answer.json()


def test_s3_uri_source_problems_outside_allowlist_missing_and_unreachable(
    s3_client_app: TestClient, server: S3Server
) -> None:
    status, problem = _problem(s3_client_app, "s3://models/secret/x.safetensors")
    assert (status, problem["type"]) == (403, "/problems/source-forbidden")
    assert problem["allowed"] == [ALLOWED]
    status, problem = _problem(s3_client_app, "s3://models/allowed/../secret/x.pth")
    assert status == 403
    status, problem = _problem(s3_client_app, "s3://models/allowedx/y.pth")
    assert status == 403
    status, problem = _problem(s3_client_app, f"{ALLOWED}missing.safetensors")
    assert (status, problem["type"]) == (404, "/problems/source-not-found")
    status, problem = _problem(s3_client_app, "https://example.com/x.pth")
    assert status == 422

    saved = os.environ["AWS_ENDPOINT_URL"]
    os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"  # nobody listens
    try:
        status, problem = _problem(s3_client_app, f"{ALLOWED}big.pth")
    finally:
        os.environ["AWS_ENDPOINT_URL"] = saved
    assert (status, problem["type"]) == (502, "/problems/source-unreachable")
    assert problem["uri"] == f"{ALLOWED}big.pth"
    assert f"{ALLOWED}big.pth" in problem["detail"]


def test_s3_uri_source_missing_bucket_is_not_found(tmp_path: Path, server: S3Server) -> None:
    settings = make_settings(tmp_path, source_uris="s3://nobucket/")
    with TestClient(create_app(settings)) as client:
        status, problem = _problem(client, "s3://nobucket/x.safetensors")
    assert (status, problem["type"]) == (404, "/problems/source-not-found")
