"""``GET /v1/architectures?fits=`` and a report's ``closest_architectures``, over HTTP.

One app with a real worker and API keys, and a small catalogue index built in tmp_path
beforehand (``ckpt-compat index`` does the same for the whole catalogue).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.catalog_index.store import index_path
from app.main import create_app
from tests.api.conftest import make_settings
from tests.catalog_index.helpers import SMALL_CATALOGUE, build_small_index, custom_state_dict
from tests.checkpoints import save_checkpoint

ALICE = {"X-API-Key": "alice-secret"}
BOB = {"X-API-Key": "bob-secret"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    build_small_index(cache)
    return cache


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path_factory.mktemp("data"),
        api_keys="alice=alice-secret,bob=bob-secret",
        cache_dir=cache_dir,
        index_on_start=False,
        max_upload_bytes=400 * 1024 * 1024,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _check(client: TestClient, path: Path, architecture: str) -> dict[str, Any]:
    with path.open("rb") as body:
        response = client.post(
            "/v1/checks",
            params={"wait": 60},
            headers=ALICE,
            files={"file": (path.name, body)},
            data={"architecture": architecture},
        )
    assert response.status_code == 200, response.text
    check: dict[str, Any] = response.json()
    assert check["status"] == "succeeded", check
    return check


def _report(client: TestClient, check_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/checks/{check_id}/report", headers=ALICE)
    assert response.status_code == 200
    report: dict[str, Any] = response.json()
    return report


@pytest.fixture(scope="module")
def vit_check(client: TestClient, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import timm

    model = timm.create_model("vit_small_patch16_224")
    path = save_checkpoint(model.state_dict(), tmp_path_factory.mktemp("vit") / "vits.pth")
    return _check(client, path, "torchvision:resnet18")


def test_fits_ranks_vit_small_first_for_a_vit_checked_against_resnet18(
    client: TestClient, vit_check: dict[str, Any]
) -> None:
    response = client.get("/v1/architectures", params={"fits": vit_check["id"]}, headers=ALICE)
    assert response.status_code == 200, response.text
    ranked = response.json()
    assert ranked["total"] == len(SMALL_CATALOGUE)
    best = ranked["items"][0]
    assert best["name"] == "timm:vit_small_patch16_224"
    assert best["verdict"] == "compatible" and best["loaded_parameter_fraction"] == 1.0
    assert best["suggested_options"][0]["options"] == {"architecture_kwargs": {}}
    assert ranked["note"] is None


def test_report_of_an_incompatible_check_names_the_closest_architectures(
    client: TestClient, vit_check: dict[str, Any]
) -> None:
    report = _report(client, vit_check["id"])
    assert report["summary"]["verdict"] == "incompatible"
    closest = report["closest_architectures"]
    assert 1 <= len(closest) <= 5
    assert closest[0]["name"] == "timm:vit_small_patch16_224"
    assert {"name", "kwargs", "loaded_parameter_fraction", "verdict", "suggested_options"} <= set(
        closest[0]
    )


def test_fits_combines_with_q_source_limit_and_offset(
    client: TestClient, vit_check: dict[str, Any]
) -> None:
    def ranked(**params: Any) -> dict[str, Any]:
        response = client.get(
            "/v1/architectures", params={"fits": vit_check["id"], **params}, headers=ALICE
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    names = [i["name"] for i in ranked(q="*vit_*")["items"]]
    assert names[0] == "timm:vit_small_patch16_224"
    assert all("vit_" in n for n in names)
    assert {i["source"] for i in ranked(source="transformers")["items"]} == {"transformers"}
    everything = [i["name"] for i in ranked(limit=100)["items"]]
    page = ranked(limit=3, offset=2)
    assert [i["name"] for i in page["items"]] == everything[2:5]
    assert page["total"] == len(everything)


def test_fits_of_a_check_the_caller_cannot_see_is_a_404(
    client: TestClient, vit_check: dict[str, Any]
) -> None:
    for check_id in (vit_check["id"], "0" * 32):
        response = client.get("/v1/architectures", params={"fits": check_id}, headers=BOB)
        assert response.status_code == 404
        assert response.json()["type"] == "/problems/check-not-found"


def test_convnext_checked_against_resnet50_names_convnext_tiny_first(
    client: TestClient, tmp_path: Path
) -> None:
    import timm

    model = timm.create_model("convnext_tiny", num_classes=10)
    path = save_checkpoint(model.state_dict(), tmp_path / "convnext.pth")
    report = _report(client, _check(client, path, "torchvision:resnet50")["id"])
    best = report["closest_architectures"][0]
    assert best["name"] == "timm:convnext_tiny"
    assert (best["kwargs"], best["inferred_kwargs"]) == ({"num_classes": 10}, ["num_classes"])


def test_a_custom_model_fits_nothing_over_half_and_says_so(
    client: TestClient, tmp_path: Path
) -> None:
    path = save_checkpoint(custom_state_dict(), tmp_path / "custom.pth")
    check = _check(client, path, "torchvision:resnet18")
    report = _report(client, check["id"])
    assert all(c["loaded_parameter_fraction"] <= 0.5 for c in report["closest_architectures"])
    assert any("probably a custom model" in n for n in report["notes"])
    ranked = client.get("/v1/architectures", params={"fits": check["id"]}, headers=ALICE).json()
    assert "probably a custom model" in ranked["note"]


def test_before_the_index_is_ready_fits_is_503_and_reports_carry_a_note(
    client: TestClient, cache_dir: Path, tmp_path: Path
) -> None:
    path = save_checkpoint(custom_state_dict(), tmp_path / "custom2.pth")
    index = index_path(cache_dir)
    hidden = index.with_name("hidden.json.gz")
    index.rename(hidden)
    try:
        check = _check(client, path, "torchvision:resnet50")
        response = client.get("/v1/architectures", params={"fits": check["id"]}, headers=ALICE)
        report = _report(client, check["id"])
    finally:
        hidden.rename(index)
    assert response.status_code == 503
    assert response.json()["type"] == "/problems/catalog-index-not-ready"
    assert int(response.headers["Retry-After"]) >= 5
    assert report["closest_architectures"] is None
    assert any("catalogue index is still being built" in n for n in report["notes"])
