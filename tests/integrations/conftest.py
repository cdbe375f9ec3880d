"""One real MLflow tracking server for the integration tests (``tests/mlflow_server.py``)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.mlflow_server import MlflowServer, running_mlflow


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """``mlflow server`` (its venv built on first use); the test process's mlflow client
    points at it, as the service's processes do through their settings."""
    with running_mlflow(tmp_path_factory.mktemp("mlflow")) as server:
        saved = os.environ.get("MLFLOW_TRACKING_URI")
        os.environ["MLFLOW_TRACKING_URI"] = server.url
        try:
            yield server
        finally:
            if saved is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = saved
