"""Faults: a worker killed or out of time or memory mid-check, a restart mid-check, a full disk."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.schemas import CheckStatus
from app.storage import direct_file
from tests.api.conftest import make_settings
from tests.full_disk import FullDisk
from tests.security.conftest import (
    assert_clean_problem,
    assert_serves_a_good_check,
    good_checkpoint,
    post_bytes,
    problem_of,
)
from tests.security.payloads import Tensor, float_storage, torch_zip_of

pytestmark = pytest.mark.slow


def slow_checkpoint(count: int = 9000) -> bytes:
    """A valid file of many tiny tensors: about a second of work for a worker."""
    storage = float_storage("0", [0.0])
    return torch_zip_of({f"t{i}": Tensor(storage, 0, (1,), (1,)) for i in range(count)})


def _wait_for_status(services: Any, check_id: str, status: CheckStatus) -> None:
    deadline = time.monotonic() + 30
    while services.repository.get(check_id).status is not status:
        assert time.monotonic() < deadline, f"check never became {status}"
        time.sleep(0.005)


def test_faults_worker_killed_mid_check_fails_that_check_only(
    corpus_client: TestClient,
) -> None:
    services = corpus_client.app.state.services  # type: ignore[attr-defined]
    check = post_bytes(corpus_client, slow_checkpoint(), wait=0).json()
    _wait_for_status(services, check["id"], CheckStatus.RUNNING)
    os.kill(services.runner._workers[0].process.pid, signal.SIGKILL)
    finished = corpus_client.get(f"/v1/checks/{check['id']}", params={"wait": 30}).json()
    assert finished["status"] == "failed"
    assert finished["error"]["type"] == "/problems/worker-crashed"
    assert_serves_a_good_check(corpus_client)


def test_faults_time_limit_kills_the_worker_and_names_the_limit(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", check_timeout_seconds=0.3)
    with TestClient(create_app(settings)) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        deadline = time.monotonic() + 60
        while services.runner.ready_workers == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = services.runner._workers[0].process.pid
        problem = problem_of(post_bytes(client, slow_checkpoint()))
        assert_clean_problem(problem, "check-timed-out")
        assert problem["limit"] == "check_timeout_seconds"
        assert problem["limit_value"] == 0.3
        assert services.runner._workers[0].process.pid != pid
        assert client.get("/livez").status_code == 200


def test_faults_memory_limit_fails_the_check_with_its_name(tmp_path: Path) -> None:
    limit = 64 * 1024 * 1024
    settings = make_settings(tmp_path / "data", max_worker_memory_bytes=limit)
    with TestClient(create_app(settings)) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        deadline = time.monotonic() + 60
        while services.runner.ready_workers == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = services.runner._workers[0].process.pid
        # Merging into resnet152 builds its 240 MB of weights: over the allowance.
        response = post_bytes(
            client, good_checkpoint(), architecture="torchvision:resnet152", options={"merge": {}}
        )
        problem = problem_of(response)
        assert_clean_problem(problem, "limit-exceeded")
        assert problem["limit"] == "max_worker_memory_bytes"
        assert problem["limit_value"] == limit
        assert services.runner._workers[0].process.pid != pid  # the worker was replaced
        assert_serves_a_good_check(client)


def test_faults_memory_limit_leaves_room_for_the_mapped_checkpoint(tmp_path: Path) -> None:
    """A checkpoint larger than the cap merges: its file's size is allowed on top.

    Saved in torch's legacy format (as torch < 1.6 wrote ``pytorch_model.bin``), which a
    merge reads whole; zip archives are copied by spans, and torch maps them when loading.
    """
    import torch

    from tests.checkpoints import resnet18_state_dict

    limit = 160 * 1024 * 1024
    state = resnet18_state_dict()
    state["extra.weight"] = torch.ones(60 * 1024 * 1024)  # 240 MB more, never loaded
    path = tmp_path / "pytorch_model.bin"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    assert path.stat().st_size > limit
    settings = make_settings(
        tmp_path / "data", max_worker_memory_bytes=limit, max_upload_bytes=1024**3
    )
    with TestClient(create_app(settings)) as client, path.open("rb") as file:
        response = client.post(
            "/v1/checks",
            params={"wait": 60},
            data={"architecture": "torchvision:resnet18", "options": '{"merge": {}}'},
            files={"file": ("pytorch_model.bin", file)},
        )
        check = response.json()
        assert check["status"] == "succeeded", check.get("error")
        assert client.get(check["links"]["merged"]).status_code == 200


def test_faults_restart_mid_check_retries_it_once_and_keeps_finished_ones(
    tmp_path: Path,
) -> None:
    """A check whose worker went down with the server is retried once, then failed."""
    settings = make_settings(tmp_path / "data")
    with TestClient(create_app(settings)) as first:
        done = post_bytes(first, good_checkpoint(), options={"merge": {}}).json()
        assert done["status"] == "succeeded"
        services = first.app.state.services  # type: ignore[attr-defined]

        def claimed_by_a_dead_worker(times: int) -> str:
            record = services.repository.create(
                architecture="torchvision:resnet18",
                options={},
                filename="x.pt",
                size_bytes=done["checkpoint"]["size_bytes"],
                sha256=done["checkpoint"]["sha256"],
            )
            for attempt in range(times):  # each claim counts; the lease soon expires
                if attempt:
                    time.sleep(0.15)
                    services.repository.reap_expired_leases(max_attempts=9, problem={})
                services.repository.claim(record.id, worker="gone:1", lease_seconds=0.1)
            assert services.repository.get(record.id).status is CheckStatus.RUNNING
            return str(record.id)

        retried = claimed_by_a_dead_worker(1)
        lost_twice = claimed_by_a_dead_worker(2)
    time.sleep(0.2)  # the dead worker's leases expire
    with TestClient(create_app(settings)) as second:
        again = second.get(f"/v1/checks/{retried}", params={"wait": 60}).json()
        assert again["status"] == "succeeded", again["error"]
        failed = second.get(f"/v1/checks/{lost_twice}").json()
        assert failed["status"] == "failed"
        assert failed["error"]["type"] == "/problems/worker-crashed"
        assert "twice" in failed["error"]["detail"]
        assert second.get(done["links"]["report"]).status_code == 200
        assert second.get(done["links"]["merged"]).status_code == 200


def test_faults_disk_full_during_upload_is_507_and_keeps_nothing(
    corpus_client: TestClient, corpus_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs_before = sorted((corpus_settings.data_dir / "blobs").rglob("*"))
    with monkeypatch.context() as patch:
        patch.setattr(direct_file, "os", FullDisk(after=64 * 1024))
        response = post_bytes(corpus_client, good_checkpoint())
    assert response.status_code == 507
    body = response.json()
    assert body["type"] == "/problems/insufficient-storage"
    assert "/tmp" not in response.text
    assert list((corpus_settings.data_dir / "tmp").iterdir()) == []
    assert sorted((corpus_settings.data_dir / "blobs").rglob("*")) == blobs_before
    assert_serves_a_good_check(corpus_client)
