"""``/v1/architectures``: listing with a bounded glob, and descriptions built on meta."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.patterns import MAX_GLOB_CHARS

pytestmark = pytest.mark.slow


def test_architectures_list_filters_by_glob_and_source(client: TestClient) -> None:
    listed = client.get("/v1/architectures", params={"q": "RESNET1[08]", "limit": 50}).json()
    names = {item["name"] for item in listed["items"]}
    assert {"torchvision:resnet18", "timm:resnet18"} <= names
    assert all(n.split(":")[1] in ("resnet10", "resnet18") for n in names)
    only = client.get("/v1/architectures", params={"q": "*:resnet18", "source": "torchvision"})
    assert [item["name"] for item in only.json()["items"]] == ["torchvision:resnet18"]
    stars = client.get("/v1/architectures", params={"q": "*a*a*a*a*a*a*a*a*a*a*b"})
    assert stars.status_code == 200


def test_architectures_list_refuses_a_long_glob(client: TestClient) -> None:
    response = client.get("/v1/architectures", params={"q": "*a" * MAX_GLOB_CHARS})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


def test_architectures_describe_builds_on_meta_with_kwargs(client: TestClient) -> None:
    response = client.get("/v1/architectures/resnet18", params={"kwargs": '{"num_classes": 7}'})
    detail = response.json()
    assert detail["name"] == "torchvision:resnet18"
    fc = next(t for t in detail["tensors"] if t["key"] == "fc.weight")
    assert fc["shape"] == [7, 512]
