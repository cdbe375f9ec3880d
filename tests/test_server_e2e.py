"""End to end: ``ckpt-compat serve`` as a real process, driven with httpx like a user's script."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
import torchvision
from safetensors.torch import load

from tests.checkpoints import resnet18_state_dict, save_checkpoint
from tests.servers import serving


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("server-data")
    arguments = ["--workers", "1", "--data-dir", str(data_dir), "--log-level", "warning"]
    with serving(arguments) as base:
        yield base


def _check(base: str, path: Path, options: dict[str, object] | None = None) -> dict[str, object]:
    with path.open("rb") as handle:
        response = httpx.post(
            f"{base}/v1/checks",
            params={"wait": 60},
            timeout=90,
            data={"architecture": "torchvision:resnet18", "options": json.dumps(options or {})},
            files={"file": (path.name, handle, "application/octet-stream")},
        )
    assert response.status_code == 200, response.text
    check: dict[str, object] = response.json()
    assert check["status"] == "succeeded", check
    return check


def test_server_reports_compatible_and_merges_a_new_head(server: str, tmp_path: Path) -> None:
    state = resnet18_state_dict()
    path = save_checkpoint(state, tmp_path / "resnet18.pth")

    check = _check(server, path)
    report = httpx.get(f"{server}/v1/checks/{check['id']}/report").json()
    assert report["summary"]["verdict"] == "compatible"
    assert report["summary"]["strict_loadable"] is True

    check = _check(server, path, {"architecture_kwargs": {"num_classes": 10}, "merge": {}})
    report = httpx.get(f"{server}/v1/checks/{check['id']}/report").json()
    assert {m["key"] for m in report["keys"]["shape_mismatched"]} == {"fc.weight", "fc.bias"}

    merged_bytes = httpx.get(f"{server}/v1/checks/{check['id']}/merged").content
    merged = load(merged_bytes)
    model = torchvision.models.resnet18(num_classes=10)
    model.load_state_dict(merged, strict=True)
    for key, value in state.items():
        if not key.startswith("fc."):
            assert torch.equal(merged[key], value), key


def test_server_serves_swagger_ui_and_openapi(server: str) -> None:
    assert "swagger-ui" in httpx.get(f"{server}/docs").text.lower()
    spec = httpx.get(f"{server}/openapi.json").json()
    body = spec["paths"]["/v1/checks"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert body["schema"]["properties"]["file"]["format"] == "binary"


def test_import_app_main_leaves_torch_unloaded() -> None:
    code = "import sys, app.main; app.main.create_app(); print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[1],
    )
    assert result.stdout.strip() == "False"
