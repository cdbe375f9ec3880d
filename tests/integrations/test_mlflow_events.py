"""MLflow events in, tags out: a real ``mlflow server`` delivers to a real ``ckpt-compat serve``.

The test registers a model, creates MLflow's webhook to the service, logs a real SqueezeNet
state_dict (safetensors) as a run artifact and creates versions; the service checks the
tagged ones and writes ``ckpt_compat.*`` tags back. The test only waits for those tags to
show up in MLflow (and, for a version that must be ignored, for the service's log line
saying so). Forged and stale deliveries are refused; a version created while the service is
down is found by reconciling when it starts again.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.integrations.mlflow_signature import sign
from tests.mlflow_server import MlflowServer, log_checkpoint, small_state_dict
from tests.servers import free_port, start_cli, stop_process, wait_until_ready

pytestmark = pytest.mark.slow
SECRET = "mlflow-webhook-secret-" + uuid.uuid4().hex
ARCH = "torchvision:squeezenet1_1"
EVENTS: list[Any] = ["model_version.created", "model_version_tag.set"]
WAIT_SECONDS = 240.0


@dataclass
class Service:
    """A ``ckpt-compat serve`` process that can be stopped and started again on its port."""

    base: str
    port: int
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = start_cli(["serve", "--port", str(self.port)], self.env, self.log)
        wait_until_ready(self.base, self.process)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


@pytest.fixture(scope="module")
def service(
    mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """The service with MLflow events on, and MLflow's webhook pointing at it."""
    from mlflow.tracking import MlflowClient

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    data = tmp_path_factory.mktemp("service")
    env = {
        **os.environ,
        "CKPT_COMPAT_DATA_DIR": str(data),
        "CKPT_COMPAT_WORKERS": "1",
        "CKPT_COMPAT_SOURCE_URIS": "models:/",
        "CKPT_COMPAT_MLFLOW_TRACKING_URI": mlflow_server.url,
        "CKPT_COMPAT_MLFLOW_WEBHOOK_SECRET": SECRET,
        "CKPT_COMPAT_PUBLIC_URL": base,
        "CKPT_COMPAT_MLFLOW_RECONCILE_SECONDS": "0",  # at start-up only: no poll hides a bug
    }
    running = Service(base, port, env, data / "serve.log")
    running.start()
    webhook = MlflowClient(mlflow_server.url).create_webhook(
        name="ckpt-compat",
        url=f"{base}/v1/integrations/mlflow/events",
        events=EVENTS,
        secret=SECRET,
    )
    try:
        yield running
    finally:
        running.stop()
        MlflowClient(mlflow_server.url).delete_webhook(webhook.webhook_id)


@pytest.fixture(scope="module")
def run_id(mlflow_server: MlflowServer) -> str:
    return log_checkpoint(mlflow_server.url, {"model.safetensors": small_state_dict()})


def _new_model(server: MlflowServer) -> str:
    from mlflow.tracking import MlflowClient

    name = f"squeezenet-{uuid.uuid4().hex[:8]}"
    MlflowClient(server.url).create_registered_model(name)
    return name


def _create_version(
    server: MlflowServer, name: str, run_id: str, tags: dict[str, str] | None = None
) -> str:
    from mlflow.tracking import MlflowClient

    version = MlflowClient(server.url).create_model_version(
        name, f"runs:/{run_id}/checkpoint", run_id=run_id, tags=tags
    )
    return str(version.version)


def _wait_for_tags(server: MlflowServer, name: str, version: str, key: str) -> dict[str, str]:
    """The version's tags once ``key`` is among them (MLflow is the only thing asked)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(server.url)
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        tags = dict(client.get_model_version(name, version).tags)
        if key in tags:
            return tags
        time.sleep(0.5)
    raise AssertionError(f"{name}/{version} never got {key}: {tags}")


def _count(path: Path, text: str) -> int:
    return path.read_text(errors="replace").count(text)


def _wait_for_log(path: Path, text: str, *, more_than: int = 0) -> None:
    """Until ``text`` appears in the log more than ``more_than`` times."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if _count(path, text) > more_than:
            return
        time.sleep(0.3)
    raise AssertionError(f"{text!r} never appeared in {path}")


def _assert_verdict_tags(service: Service, tags: dict[str, str]) -> None:
    assert tags["ckpt_compat.verdict"] == "compatible", tags
    assert tags["ckpt_compat.loaded_parameter_fraction"] == "1.000000"
    check_id = tags["ckpt_compat.check_id"]
    assert tags["ckpt_compat.report_url"] == f"{service.base}/v1/checks/{check_id}/report"
    assert "ckpt_compat.error" not in tags
    report = httpx.get(tags["ckpt_compat.report_url"], timeout=30).json()
    assert report["summary"]["verdict"] == "compatible"
    check = httpx.get(f"{service.base}/v1/checks/{check_id}", timeout=30).json()
    assert check["checkpoint"]["filename"] == "model.safetensors"


def test_mlflow_tagged_version_is_checked_and_tagged(
    service: Service, mlflow_server: MlflowServer, run_id: str
) -> None:
    name = _new_model(mlflow_server)
    untagged = _create_version(mlflow_server, name, run_id)
    _wait_for_log(service.log, f"model_version.created for {name}/{untagged}: ignored")
    tagged = _create_version(mlflow_server, name, run_id, tags={"ckpt_compat.architecture": ARCH})
    tags = _wait_for_tags(mlflow_server, name, tagged, "ckpt_compat.verdict")
    _assert_verdict_tags(service, tags)
    from mlflow.tracking import MlflowClient

    left = MlflowClient(mlflow_server.url).get_model_version(name, untagged).tags
    assert not [k for k in left if k.startswith("ckpt_compat.")], left


def test_mlflow_tag_set_later_starts_the_check_once_with_its_kwargs(
    service: Service, mlflow_server: MlflowServer, run_id: str
) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server.url)
    name = _new_model(mlflow_server)
    version = _create_version(mlflow_server, name, run_id)
    client.set_model_version_tag(
        name, version, "ckpt_compat.architecture_kwargs", '{"num_classes": 10}'
    )
    client.set_model_version_tag(name, version, "ckpt_compat.architecture", ARCH)
    tags = _wait_for_tags(mlflow_server, name, version, "ckpt_compat.verdict")
    # A 10-class head: the classifier does not load, the rest does.
    assert tags["ckpt_compat.verdict"] != "compatible", tags
    assert float(tags["ckpt_compat.loaded_parameter_fraction"]) < 1.0
    check = httpx.get(f"{service.base}/v1/checks/{tags['ckpt_compat.check_id']}").json()
    assert check["options"]["architecture_kwargs"] == {"num_classes": 10}
    # Both tag events (kwargs, then architecture) and our own tag writes arrived: one check.
    checks = httpx.get(f"{service.base}/v1/checks", params={"limit": 500}).json()["items"]
    mine = [c for c in checks if c["id"] == tags["ckpt_compat.check_id"]]
    assert len(mine) == 1


def test_mlflow_version_refused_at_submission_gets_the_error_tag(
    service: Service, mlflow_server: MlflowServer, run_id: str
) -> None:
    name = _new_model(mlflow_server)
    version = _create_version(
        mlflow_server, name, run_id, tags={"ckpt_compat.architecture": "torchvision:no_such_net"}
    )
    tags = _wait_for_tags(mlflow_server, name, version, "ckpt_compat.error")
    assert tags["ckpt_compat.error"] == "Unknown architecture"
    assert "ckpt_compat.verdict" not in tags


def _delivery(body: bytes, *, secret: str = SECRET, sent: int | None = None) -> dict[str, str]:
    delivery_id, timestamp = str(uuid.uuid4()), str(sent or int(time.time()))
    return {
        "content-type": "application/json",
        "x-mlflow-delivery-id": delivery_id,
        "x-mlflow-timestamp": timestamp,
        "x-mlflow-signature": sign(secret, delivery_id=delivery_id, timestamp=timestamp, body=body),
    }


def _payload(name: str) -> bytes:
    data: dict[str, Any] = {
        "name": name,
        "version": "1",
        "source": "models:/x",
        "run_id": None,
        "tags": {"ckpt_compat.architecture": ARCH},
        "description": None,
    }
    body = {"entity": "model_version", "action": "created", "timestamp": "now", "data": data}
    return json.dumps(body).encode()


def test_mlflow_forged_signature_is_401(service: Service) -> None:
    body = _payload("forged")
    answer = httpx.post(
        f"{service.base}/v1/integrations/mlflow/events",
        content=body,
        headers=_delivery(body, secret="not-the-secret"),
    )
    assert answer.status_code == 401, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == "/problems/invalid-webhook-signature"


def test_mlflow_stale_delivery_is_400(service: Service) -> None:
    body = _payload("stale")
    answer = httpx.post(
        f"{service.base}/v1/integrations/mlflow/events",
        content=body,
        headers=_delivery(body, sent=int(time.time()) - 3600),
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["type"] == "/problems/stale-webhook"


def test_mlflow_version_created_while_the_service_is_down_is_reconciled(
    service: Service, mlflow_server: MlflowServer, run_id: str
) -> None:
    name = _new_model(mlflow_server)
    failed = "Failed to send webhook"
    before = _count(mlflow_server.log, failed)
    service.stop()
    try:
        version = _create_version(
            mlflow_server, name, run_id, tags={"ckpt_compat.architecture": ARCH}
        )
        # MLflow gives up on the delivery after its few retries (its own log says so).
        _wait_for_log(mlflow_server.log, failed, more_than=before)
    finally:
        with contextlib.suppress(AssertionError):
            service.start()
    tags = _wait_for_tags(mlflow_server, name, version, "ckpt_compat.verdict")
    _assert_verdict_tags(service, tags)
    _wait_for_log(service.log, "Reconciling MLflow started 1 checks")
