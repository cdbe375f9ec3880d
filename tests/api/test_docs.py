"""/docs and /redoc work without internet access: their scripts come from the service."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import DOCS_ASSETS, create_app
from tests.api.conftest import make_settings


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_every_script_and_style_from_the_service(tmp_path: Path, page: str) -> None:
    client = TestClient(create_app(make_settings(tmp_path)))  # no lifespan: no workers needed
    html = client.get(page)
    assert html.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css|png))"', html.text)
    assert any(asset.endswith(".js") for asset in assets)
    for asset in assets:
        assert asset.startswith(f"{DOCS_ASSETS}/"), asset  # nothing from a CDN
        if not asset.endswith(".png"):
            served = client.get(asset)
            assert served.status_code == 200, asset
            assert len(served.content) > 100_000  # the real bundle, not a stub
    assert "/openapi.json" in html.text
