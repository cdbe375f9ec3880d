"""ckpt_compat_client.Client against a scripted transport: fields before the file, progress,
problems, how long each status request is held. A real server: tests/test_cli_check.py and
tests/test_client_distribution.py."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from ckpt_compat_client import CheckFailedError, Client, ServiceError

CHECK = {"id": "c1", "status": "queued", "progress": {"stage": "queued", "fraction": 0.0}}


def _client(handler: httpx.MockTransport) -> Client:
    return Client(http=httpx.Client(transport=handler, base_url="http://svc"), api_key="k")


def test_check_sends_fields_before_the_file_and_reports_progress(tmp_path: Path) -> None:
    path = tmp_path / "m.pth"
    path.write_bytes(b"x" * 3_000_000)
    seen: dict[str, object] = {}

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            body = request.read()
            seen["order"] = [
                body.find(b'name="architecture"'),
                body.find(b'name="options"'),
                body.find(b'name="file"'),
            ]
            seen["auth"] = request.headers["authorization"]
            return httpx.Response(202, json=CHECK)
        assert request.url.params["wait"]
        return httpx.Response(200, json={**CHECK, "status": "succeeded"})

    progress: list[tuple[int, int]] = []
    with _client(httpx.MockTransport(handle)) as client:
        check = client.check(
            path,
            "torchvision:resnet18",
            {"merge": {}},
            progress=lambda d, t: progress.append((d, t)),
        )
    assert check["status"] == "succeeded"
    order = seen["order"]
    assert isinstance(order, list) and 0 < order[0] < order[1] < order[2]
    assert seen["auth"] == "Bearer k"
    assert progress[-1] == (3_000_000, 3_000_000)


def test_problems_become_service_errors() -> None:
    problem = {
        "type": "/problems/architecture-not-found",
        "title": "Unknown architecture",
        "status": 404,
        "detail": "No architecture 'x'.",
        "suggestions": ["resnet18"],
    }

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            404, json=problem, headers={"content-type": "application/problem+json"}
        )

    with (
        _client(httpx.MockTransport(handle)) as client,
        pytest.raises(
            ServiceError, match=r"Unknown architecture \(404\): No architecture 'x'"
        ) as caught,
    ):
        client.submit("a" * 64, "x")
    assert caught.value.type == "/problems/architecture-not-found"
    assert caught.value.problem["suggestions"] == ["resnet18"]


def test_a_failed_check_raises_check_failed_with_its_problem() -> None:
    error = {
        "type": "/problems/unsafe-checkpoint",
        "title": "Unsafe checkpoint",
        "status": 422,
        "detail": "a pickled module",
    }

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            assert json.loads(request.read())["source"] == {"upload_id": "u1"}
            return httpx.Response(202, json=CHECK)
        return httpx.Response(200, json={**CHECK, "status": "failed", "error": error})

    with (
        _client(httpx.MockTransport(handle)) as client,
        pytest.raises(CheckFailedError, match="Unsafe checkpoint") as caught,
    ):
        client.check("u1", "torchvision:resnet18")
    assert caught.value.status == 422 and caught.value.check["status"] == "failed"


def test_non_json_errors_keep_the_status() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>bad gateway</html>")

    with (
        _client(httpx.MockTransport(handle)) as client,
        pytest.raises(ServiceError, match="502") as caught,
    ):
        client.report("c1")
    assert caught.value.status == 502


def test_download_merged_writes_through_a_temporary_name(tmp_path: Path) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"merged-bytes")

    out = tmp_path / "m.safetensors"
    with _client(httpx.MockTransport(handle)) as client:
        client.download_merged("c1", out)
    assert out.read_bytes() == b"merged-bytes"
    assert not (tmp_path / "m.safetensors.part").exists()


def test_wait_holds_each_request_at_most_poll_seconds_and_shows_every_state() -> None:
    states = iter(["queued", "running", "running", "succeeded"])
    waits: list[float] = []

    def handle(request: httpx.Request) -> httpx.Response:
        waits.append(float(request.url.params["wait"]))
        status = next(states)
        return httpx.Response(200, json={**CHECK, "status": status})

    seen: list[str] = []
    with _client(httpx.MockTransport(handle)) as client:
        check = client.wait("c1", poll=1.5, on_update=lambda c: seen.append(c["status"]))
    assert check["status"] == "succeeded"
    assert seen == ["queued", "running", "running", "succeeded"]
    assert waits == [1.5] * 4


def test_the_old_import_paths_name_the_same_objects() -> None:
    import app.client
    import app.training
    import ckpt_compat_client
    from ckpt_compat_client import training

    assert app.client.Client is ckpt_compat_client.Client
    assert app.client.ServiceError is ckpt_compat_client.ServiceError
    assert app.training.apply_training_plan is training.apply_training_plan
    assert app.training.freeze_norm_statistics is training.freeze_norm_statistics
