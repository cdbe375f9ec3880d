"""Submitting a check over HTTP the way a script does, for the tests that drive the API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient


def post_check(
    client: TestClient,
    path: Path,
    architecture: str = "torchvision:resnet18",
    options: dict[str, Any] | None = None,
    wait: float = 60,
) -> httpx.Response:
    """``POST /v1/checks?wait=`` with the file and its fields, as curl's ``-F`` sends them."""
    data = {"architecture": architecture}
    if options is not None:
        data["options"] = json.dumps(options)
    with path.open("rb") as handle:
        return client.post(
            "/v1/checks", params={"wait": wait}, data=data, files={"file": (path.name, handle)}
        )


def succeeded_report(
    client: TestClient, path: Path, architecture: str, options: dict[str, Any]
) -> dict[str, Any]:
    """The report of a check that must succeed (the check's error is shown if it did not)."""
    response = post_check(client, path, architecture, options)
    assert response.status_code == 200, response.text
    check = response.json()
    assert check["status"] == "succeeded", check["error"]
    report = client.get(f"/v1/checks/{check['id']}/report")
    assert report.status_code == 200, report.text
    result: dict[str, Any] = report.json()
    return result
