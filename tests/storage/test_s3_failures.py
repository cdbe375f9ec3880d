"""S3 storage failures are 503 problems, never 500s, and leave nothing behind.

The service stores in a real S3-compatible server (moto's) through a fault proxy
(``tests/storage/s3_faults.py``) that fails chosen requests or goes away mid-request. Each
failure of an upload, a merge, or a report or merged download answers a
``storage-unavailable`` problem (with ``Retry-After`` when a retry helps), aborts the
multipart upload, leaves no temp object or local file, ``/readyz`` says so while the store is
away, and the next request works once it is back. Wrong credentials (moto with its
authentication on) and a missing bucket are the same problem without ``Retry-After``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.api.conftest import make_settings
from tests.s3_server import S3Server, s3_server
from tests.servers import free_port, wait_for_port
from tests.storage.s3_faults import DROP, FaultProxy, fault_proxy

pytestmark = pytest.mark.slow
OCTET = {"content-type": "application/octet-stream"}
PROBLEM = "application/problem+json"
PREFIX = "ckpt"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("moto")) as running:
        running.client().create_bucket(Bucket="store")
        yield running


@pytest.fixture(scope="module")
def proxy(server: S3Server) -> Iterator[FaultProxy]:
    """The proxy, named by the environment the service (and its spawned workers) read."""
    with fault_proxy(server.endpoint) as running:
        os.environ["AWS_ENDPOINT_URL"] = running.endpoint
        try:
            yield running
        finally:
            os.environ["AWS_ENDPOINT_URL"] = server.endpoint


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def client(proxy: FaultProxy, data_dir: Path) -> Iterator[TestClient]:
    settings = make_settings(  # every merge runs (no reuse of an earlier merge's file)
        data_dir,
        storage_url=f"s3://store/{PREFIX}",
        max_upload_bytes=200 * 1024 * 1024,
        reuse_results=False,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """resnet18 as ``torch.save`` writes it: 47 MB, three 16 MiB parts."""
    from tests.checkpoints import resnet18_state_dict, save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "r18.pth"
    return save_checkpoint(resnet18_state_dict(), path).read_bytes()


def _keys(server: S3Server, prefix: str) -> list[str]:
    answer = server.client().list_objects_v2(Bucket="store", Prefix=f"{PREFIX}/{prefix}")
    return [item["Key"] for item in answer.get("Contents", [])]


def _open_uploads(server: S3Server, prefix: str = "") -> list[str]:
    answer = server.client().list_multipart_uploads(Bucket="store", Prefix=f"{PREFIX}/{prefix}")
    return [upload["Key"] for upload in answer.get("Uploads", [])]


def _assert_problem(answer: Any, *, retry: bool) -> dict[str, Any]:
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"].startswith(PROBLEM)
    problem: dict[str, Any] = answer.json()
    assert problem["type"] == "/problems/storage-unavailable"
    assert problem["title"] == "The storage is unavailable"
    if retry:
        assert answer.headers["retry-after"] == "5" and problem["retry_after"] == 5
        assert "retry after a few seconds" in problem["detail"]
    else:
        assert "retry-after" not in answer.headers and "retry_after" not in problem
        assert "misconfigured" in problem["detail"]
    return problem


def _scratch_files(data_dir: Path) -> list[Path]:
    """Files the API process or a worker left in local scratch (copies kept for serving
    merged files, ``scratch/objects/<tag>``, are complete files, not leftovers)."""
    scratch = data_dir / "scratch"
    found = [p for p in scratch.rglob("*") if p.is_file()] if scratch.exists() else []
    return [p for p in found if not (p.parent.name == "objects" and len(p.name) == 32)]


def test_s3_upload_part_failure_is_a_503_problem_and_aborts_the_upload(
    client: TestClient, proxy: FaultProxy, server: S3Server, checkpoint: bytes, data_dir: Path
) -> None:
    with proxy.failing(lambda method, target: 500 if "partNumber=2" in target else None):
        answer = client.put("/v1/uploads", content=checkpoint, headers=OCTET)
    problem = _assert_problem(answer, retry=True)
    assert "store a part of the upload" in problem["detail"]
    assert [status for _, _, status in proxy.failed][-1] == 500
    assert _open_uploads(server, "tmp") == [] and _keys(server, "tmp") == []
    assert _keys(server, "blobs") == [] and _scratch_files(data_dir) == []

    again = client.put("/v1/uploads", content=checkpoint, headers=OCTET)
    assert again.status_code == 201, again.text
    digest = again.json()["upload_id"]
    assert _keys(server, "blobs") == [f"{PREFIX}/blobs/{digest[:2]}/{digest}"]
    assert client.delete(f"/v1/uploads/{digest}").status_code == 204


def test_s3_upload_complete_failure_is_a_503_problem_and_aborts_the_upload(
    client: TestClient, proxy: FaultProxy, server: S3Server, checkpoint: bytes
) -> None:
    def complete(method: str, target: str) -> int | None:
        return 503 if method == "POST" and "uploadId=" in target else None

    with proxy.failing(complete):
        answer = client.put("/v1/uploads", content=checkpoint, headers=OCTET)
    problem = _assert_problem(answer, retry=True)
    assert "complete the upload" in problem["detail"]
    assert _open_uploads(server, "tmp") == [] and _keys(server, "tmp") == []
    assert _keys(server, "blobs") == []
    assert client.put("/v1/uploads", content=checkpoint, headers=OCTET).status_code == 201


def test_s3_store_gone_mid_upload_is_a_503_problem_readyz_says_so_and_it_recovers(
    client: TestClient, proxy: FaultProxy, server: S3Server, checkpoint: bytes, data_dir: Path
) -> None:
    with proxy.failing(lambda method, target: DROP if "partNumber=2" in target else None):
        answer = client.put("/v1/uploads", content=checkpoint[:-1], headers=OCTET)
        _assert_problem(answer, retry=True)
        assert not proxy.up
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["storage"].startswith("unavailable (")
        assert client.get("/livez").status_code == 200  # the service keeps serving
        assert _scratch_files(data_dir) == []
    assert client.get("/readyz").json()["checks"]["storage"] == "ok"
    # The store was away when the upload was aborted: the upload stays open until the
    # start-up cleanup finds it stale.
    assert len(_open_uploads(server, "tmp")) == 1
    assert _clear_stale_uploads(client) == 1
    assert _open_uploads(server) == []
    answer = client.put("/v1/uploads", content=checkpoint[:-1], headers=OCTET)
    assert answer.status_code == 201, answer.text


def _merge(client: TestClient, upload_id: str) -> dict[str, Any]:
    body = {
        "source": {"upload_id": upload_id},
        "architecture": "torchvision:resnet18",
        "options": {"merge": {}},
    }
    answer = client.post("/v1/checks", params={"wait": 60}, json=body)
    assert answer.status_code in (200, 201, 202), answer.text
    check: dict[str, Any] = answer.json()
    for _ in range(3):  # 60 s a wait at most; a loaded machine may need more
        if check["status"] in ("succeeded", "failed"):
            break
        check = client.get(f"/v1/checks/{check['id']}", params={"wait": 60}).json()
    assert check["status"] in ("succeeded", "failed"), check
    return check


def _merged_part(method: str, target: str) -> bool:
    """The second part of a merged file's multipart upload (boto3 sends 8 MiB parts)."""
    return method == "PUT" and "/results/" in target and "partNumber=2" in target


def _clear_stale_uploads(client: TestClient) -> int:
    """What the next start-up does: abort multipart uploads left open (all are stale here)."""
    import app.storage.s3 as s3_module

    storage = client.app.state.services.blobs.storage  # type: ignore[attr-defined]
    assert isinstance(storage, s3_module.S3Storage)
    saved, s3_module.TEMP_STALE_SECONDS = s3_module.TEMP_STALE_SECONDS, -60.0
    try:
        return storage.clear_temp()
    finally:
        s3_module.TEMP_STALE_SECONDS = saved


@pytest.mark.parametrize("fault", ["error", "gone"])
def test_s3_failure_while_storing_a_merge_fails_the_check_with_the_problem_and_cleans_up(
    client: TestClient,
    proxy: FaultProxy,
    server: S3Server,
    checkpoint: bytes,
    data_dir: Path,
    fault: str,
) -> None:
    upload = client.put("/v1/uploads", content=checkpoint, headers=OCTET)
    assert upload.status_code == 201, upload.text
    upload_id = upload.json()["upload_id"]
    action = 500 if fault == "error" else DROP

    with proxy.failing(lambda m, t: action if _merged_part(m, t) else None):
        check = _merge(client, upload_id)
    assert proxy.failed and proxy.failed[-1][2] == action
    assert check["status"] == "failed", check
    assert check["error"]["type"] == "/problems/storage-unavailable"
    assert check["error"]["status"] == 503 and check["error"]["retry_after"] == 5
    assert _keys(server, f"results/{check['id']}/") == []
    assert _scratch_files(data_dir) == []  # the merge's scratch and the fetched upload
    if fault == "error":  # the store answered: the multipart upload was aborted
        assert _open_uploads(server, "results") == []
    else:  # it was away when boto3 aborted: the start-up cleanup aborts it once stale
        assert len(_open_uploads(server, "results")) == 1
        assert _clear_stale_uploads(client) == 1
        assert _open_uploads(server) == []
    report = client.get(f"/v1/checks/{check['id']}/report")
    assert report.status_code == 409 and report.json()["type"] == "/problems/check-failed"

    again = _merge(client, upload_id)
    assert again["status"] == "succeeded", again
    merged = client.get(again["links"]["merged"])
    assert merged.status_code == 200 and len(merged.content) > 40_000_000


def test_s3_failure_while_serving_report_or_merged_is_a_503_and_the_next_request_works(
    client: TestClient, proxy: FaultProxy, server: S3Server, checkpoint: bytes, data_dir: Path
) -> None:
    upload = client.put("/v1/uploads", content=checkpoint, headers=OCTET)
    check = _merge(client, upload.json()["upload_id"])
    assert check["status"] == "succeeded", check
    report_url, merged_url = check["links"]["report"], check["links"]["merged"]
    key = f"/store/{PREFIX}/results/{check['id']}/"

    def reads(method: str, target: str) -> int | None:
        return 500 if method == "GET" and target.startswith(key) else None

    with proxy.failing(reads):
        _assert_problem(client.get(report_url), retry=True)
        _assert_problem(client.get(merged_url), retry=True)
        head = client.head(merged_url)
        assert head.status_code == 503 and head.headers["retry-after"] == "5"
    assert _scratch_files(data_dir) == []  # no partial download of the merged file

    proxy.stop()  # the store goes away altogether
    try:
        _assert_problem(client.get(report_url), retry=True)
        assert client.get("/readyz").json()["checks"]["storage"].startswith("unavailable")
    finally:
        proxy.start()
    assert client.get(report_url).status_code == 200
    merged = client.get(merged_url)
    assert merged.status_code == 200 and len(merged.content) > 40_000_000


def _problem_of_misconfigured_store(client: TestClient, reason: str, probed: str) -> None:
    """``probed``: what /readyz's HEAD of the bucket can tell (a HEAD answer has no body)."""
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["storage"] == f"unavailable ({probed})"
    answer = client.put("/v1/uploads", content=b"\x80\x02}q\x00.", headers=OCTET)
    problem = _assert_problem(answer, retry=False)
    assert f"({reason})" in problem["detail"]
    checked = client.post(
        "/v1/checks",
        json={"source": {"upload_id": "ab" * 32}, "architecture": "torchvision:resnet18"},
    )
    _assert_problem(checked, retry=False)


def test_s3_missing_bucket_is_a_503_problem_without_retry_after(
    proxy: FaultProxy, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, storage_url="s3://nobucket/ckpt")
    with TestClient(create_app(settings)) as client:
        _problem_of_misconfigured_store(client, "NoSuchBucket", "NoSuchBucket")


@pytest.fixture
def authenticating_server(tmp_path: Path) -> Iterator[str]:
    """moto's server with its IAM authentication on: the tests' keys are unknown to it."""
    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    with (tmp_path / "moto.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_s3_wrong_credentials_are_a_503_problem_and_the_service_still_starts(
    authenticating_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", authenticating_server)
    settings = make_settings(tmp_path, storage_url="s3://store/ckpt")
    with TestClient(create_app(settings)) as client:  # start-up's cleanup is refused, logged
        _problem_of_misconfigured_store(client, "InvalidAccessKeyId", "403")
