"""One app with real worker processes and tight limits, shared by the security tests."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save

from app.config import Settings
from app.main import create_app
from tests.api.conftest import make_settings

PROBLEM = "application/problem+json"
# Limits low enough that the corpus reaches each of them with files of a few MB at most.
CORPUS_LIMITS: dict[str, Any] = {
    "max_upload_bytes": 32 * 1024 * 1024,
    "max_pickle_bytes": 1024 * 1024,
    "max_zip_entries": 2000,
    "max_tensors": 10_000,
    "max_depth": 64,
    "max_header_bytes": 16 * 1024 * 1024,
    "check_timeout_seconds": 60,
}


@pytest.fixture(scope="package")
def canary_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("canaries")


@pytest.fixture(scope="package")
def corpus_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(tmp_path_factory.mktemp("corpus-data"), **CORPUS_LIMITS)


@pytest.fixture(scope="package")
def corpus_client(corpus_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(corpus_settings)) as client:
        yield client


_good_serial = itertools.count()


def good_checkpoint() -> bytes:
    """A small valid file, different each call (a stored result is never reused for it)."""
    bias = torch.full((1000,), float(next(_good_serial)))
    return save({"fc.weight": torch.zeros(1000, 512), "fc.bias": bias})


def post_bytes(
    client: TestClient,
    content: bytes,
    *,
    architecture: str = "torchvision:resnet18",
    options: dict[str, Any] | str | None = None,
    wait: float = 30,
) -> httpx.Response:
    data = {"architecture": architecture}
    if options is not None:
        data["options"] = options if isinstance(options, str) else json.dumps(options)
    return client.post(
        "/v1/checks", params={"wait": wait}, data=data, files={"file": ("upload.pt", content)}
    )


def problem_of(response: httpx.Response) -> dict[str, Any]:
    """The problem: the HTTP answer's, or the failed check's ``error``."""
    if response.status_code in (200, 202):
        check = response.json()
        assert check["status"] == "failed", check
        problem: dict[str, Any] = check["error"]
        return problem
    assert response.headers["content-type"] == PROBLEM, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_clean_problem(problem: dict[str, Any], slug: str) -> None:
    """A specific 4xx problem whose text holds no path, traceback or terminal code."""
    assert problem["type"] == f"/problems/{slug}", problem
    assert 400 <= problem["status"] < 500, problem
    text = json.dumps(problem)
    for leak in ("/tmp", "/work", "Traceback", "\\u001b", 'File "'):
        assert leak not in text, (leak, problem)


def assert_serves_a_good_check(client: TestClient) -> None:
    check = post_bytes(client, good_checkpoint()).json()
    assert check["status"] == "succeeded", check.get("error")
