"""Signed callbacks end to end: a real app with a worker, a real receiver on loopback that
verifies the Standard Webhooks signature, retries listed on the check, a host refused at
submission, and a receiver that is down across a restart of the service."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.api.conftest import make_settings
from tests.callbacks.receiver import SECRET, Receiver, free_port, running_receiver

CALLBACKS = {
    "callback_hosts": "127.0.0.1,localhost:1",
    "webhook_secret": SECRET,
    "callback_backoff_seconds": 0.2,
}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(tmp_path_factory.mktemp("data"), **CALLBACKS)


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _upload(client: TestClient, path: Path) -> str:
    response = client.put(
        "/v1/uploads",
        content=path.read_bytes(),
        headers={"content-type": "application/octet-stream"},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["upload_id"])


def _submit(client: TestClient, upload_id: str, callback_url: str) -> dict[str, Any]:
    body = {
        "source": {"upload_id": upload_id},
        "architecture": "torchvision:resnet18",
        "options": {"callback_url": callback_url},
    }
    response = client.post("/v1/checks?wait=60", json=body)
    assert response.status_code in (200, 202), response.text
    return dict(response.json())


def _wait_for(predicate: Any, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _delivered(receiver: Receiver, count: int = 1) -> bool:
    return len(receiver.bodies) >= count


def test_callback_posts_the_finished_check_signed(client: TestClient, resnet18_file: Path) -> None:
    upload_id = _upload(client, resnet18_file)
    with running_receiver() as receiver:
        check = _submit(client, upload_id, receiver.url)
        _wait_for(lambda: _delivered(receiver))
    assert receiver.rejected == 0
    [body] = receiver.bodies
    current = client.get(f"/v1/checks/{check['id']}").json()
    assert body["status"] == "succeeded"
    assert {k: v for k, v in body.items() if k != "deliveries"} == {
        k: v for k, v in current.items() if k != "deliveries"
    }
    assert body["deliveries"] == []  # the attempt that carried it is listed afterwards
    [attempt] = current["deliveries"]
    assert attempt["attempt"] == 1 and attempt["status_code"] == 204 and attempt["error"] is None


def test_callback_retries_a_receiver_that_fails_twice(
    client: TestClient, resnet18_file: Path
) -> None:
    upload_id = _upload(client, resnet18_file)
    with running_receiver(fail_first=2) as receiver:
        check = _submit(client, upload_id, receiver.url)
        _wait_for(lambda: _delivered(receiver))
    # callback_url is not part of the reuse identity: the earlier check's result answered.
    report = client.get(f"/v1/checks/{check['id']}/report").json()
    assert report["reused_from"] is not None
    deliveries = client.get(f"/v1/checks/{check['id']}").json()["deliveries"]
    assert [(d["attempt"], d["status_code"]) for d in deliveries] == [(1, 503), (2, 503), (3, 204)]
    assert [d["attempt"] for d in receiver.bodies[0]["deliveries"]] == [1, 2]


def test_callback_of_a_failed_check(client: TestClient, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all" * 10)
    upload_id = _upload(client, junk)
    with running_receiver() as receiver:
        check = _submit(client, upload_id, receiver.url)
        _wait_for(lambda: _delivered(receiver))
    assert receiver.bodies[0]["id"] == check["id"]
    assert receiver.bodies[0]["status"] == "failed"
    assert receiver.bodies[0]["error"]["type"] == "/problems/unsupported-format"


@pytest.mark.parametrize(
    "url",
    ["http://10.1.2.3/hook", "http://localhost:2/hook", "http://127.0.0.1.evil.com/hook"],
)
def test_callback_host_not_allowed_is_422_at_submission(
    client: TestClient, resnet18_file: Path, url: str
) -> None:
    checks_before = client.get("/v1/checks").json()["total"]
    body = {
        "source": {"upload_id": _upload(client, resnet18_file)},
        "architecture": "torchvision:resnet18",
        "options": {"callback_url": url},
    }
    response = client.post("/v1/checks", json=body)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/callback-not-allowed"
    assert "not in CKPT_COMPAT_CALLBACK_HOSTS" in response.json()["detail"]
    form = client.post(
        "/v1/checks",
        files={"file": ("r18.pth", b"bytes that are never kept")},
        data={"architecture": "torchvision:resnet18", "options": f'{{"callback_url": "{url}"}}'},
    )
    assert form.status_code == 422 and form.json()["type"] == "/problems/callback-not-allowed"
    assert client.get("/v1/checks").json()["total"] == checks_before


def test_callback_url_that_is_not_http_is_invalid_options(client: TestClient) -> None:
    response = client.post(
        "/v1/checks",
        files={"file": ("r18.pth", b"x")},
        data={"architecture": "resnet18", "options": '{"callback_url": "file:///etc/passwd"}'},
    )
    assert response.status_code == 422 and response.json()["type"] == "/problems/invalid-options"


def test_callback_receiver_down_across_a_restart_is_delivered_after_it(
    tmp_path: Path, resnet18_file: Path
) -> None:
    settings = make_settings(tmp_path / "data", **CALLBACKS)
    port = free_port()
    url = f"http://127.0.0.1:{port}/hooks/ckpt"
    with TestClient(create_app(settings)) as first:
        check = _submit(first, _upload(first, resnet18_file), url)
        _wait_for(lambda: first.get(f"/v1/checks/{check['id']}").json()["deliveries"])
    with running_receiver(port) as receiver, TestClient(create_app(settings)) as second:
        _wait_for(lambda: _delivered(receiver))
        deliveries = second.get(f"/v1/checks/{check['id']}").json()["deliveries"]
    assert receiver.bodies[0]["id"] == check["id"]
    assert deliveries[0]["status_code"] is None and "ConnectError" in deliveries[0]["error"]
    assert deliveries[-1]["status_code"] == 204
