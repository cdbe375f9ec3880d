"""An app with real spawned workers, shared by the API tests of a module (startup imports torch)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {"data_dir": data_dir, "workers": 1, "check_timeout_seconds": 120}
    values.update(overrides)
    return Settings.model_validate(values)


@pytest.fixture(scope="module")
def api_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(tmp_path_factory.mktemp("data"), max_upload_bytes=200 * 1024 * 1024)


@pytest.fixture(scope="module")
def client(api_settings: Settings) -> Iterator[TestClient]:
    """The app with its lifespan running (one worker process), as a user's HTTP client sees it."""
    with TestClient(create_app(api_settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.checkpoints import resnet18_state_dict, save_checkpoint

    return save_checkpoint(resnet18_state_dict(), tmp_path_factory.mktemp("ckpt") / "r18.pth")


@pytest.fixture(scope="module")
def app_services(client: TestClient) -> object:
    """The running app's services (repository, pool, ...), for white-box assertions."""
    return client.app.state.services  # type: ignore[attr-defined]
