"""MLflow URIs as sources of ``POST /v1/checks``, against a real ``mlflow server``.

A real SqueezeNet state_dict saved with safetensors is logged as a run artifact and
registered; ``runs:/`` and ``models:/`` URIs are checked by real workers, which download it
through MLflow's artifact proxy. A model logged with ``mlflow.pytorch.log_model`` (MLflow's
own writer) is refused as a pickled module; ``source.artifact_path`` picks among several
files; unknown models, versions and runs answer 404, an unreachable server 502.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.api.conftest import make_settings
from tests.mlflow_server import MlflowServer, log_checkpoint, small_state_dict
from tests.servers import free_port

pytestmark = pytest.mark.slow
ARCH = "torchvision:squeezenet1_1"


@pytest.fixture(scope="module")
def app_client(
    mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path_factory.mktemp("data"),
        source_uris="models:/,runs:/,mlflow-artifacts:/",
        mlflow_tracking_uri=mlflow_server.url,
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def logged(mlflow_server: MlflowServer) -> dict[str, str]:
    """A run with one checkpoint and a run with two, the first registered as version 1."""
    from mlflow.tracking import MlflowClient

    state = small_state_dict()
    single = log_checkpoint(mlflow_server.url, {"model.safetensors": state})
    double = log_checkpoint(
        mlflow_server.url, {"ema.safetensors": state, "weights.safetensors": state}
    )
    client = MlflowClient(mlflow_server.url)
    client.create_registered_model("sources-squeezenet")
    client.create_model_version("sources-squeezenet", f"runs:/{single}/checkpoint", run_id=single)
    return {"single": single, "double": double}


def _post(client: TestClient, source: dict[str, str], wait: int = 60) -> Any:
    body = {"source": source, "architecture": ARCH}
    return client.post("/v1/checks", params={"wait": wait}, json=body)


def _succeeded(client: TestClient, source: dict[str, str]) -> dict[str, Any]:
    answer = _post(client, source)
    assert answer.status_code == 200, answer.text
    check: dict[str, Any] = answer.json()
    assert check["status"] == "succeeded", check
    report = client.get(f"/v1/checks/{check['id']}/report").json()
    assert report["summary"]["verdict"] == "compatible", report["summary"]
    assert report["summary"]["loaded_parameter_fraction"] == 1.0
    return check


def test_mlflow_runs_uri_directory_is_checked_from_its_safetensors(
    app_client: TestClient, logged: dict[str, str]
) -> None:
    check = _succeeded(app_client, {"uri": f"runs:/{logged['single']}/checkpoint"})
    assert check["checkpoint"]["filename"] == "model.safetensors"


def test_mlflow_models_uri_resolves_through_the_registry(
    app_client: TestClient, logged: dict[str, str]
) -> None:
    check = _succeeded(app_client, {"uri": "models:/sources-squeezenet/1"})
    assert check["checkpoint"]["filename"] == "model.safetensors"
    report = app_client.get(f"/v1/checks/{check['id']}/report").json()
    assert report["checkpoint"]["bytes_read"] == check["checkpoint"]["size_bytes"]


def test_mlflow_artifacts_uri_names_one_file(
    app_client: TestClient, mlflow_server: MlflowServer, logged: dict[str, str]
) -> None:
    from mlflow.tracking import MlflowClient

    root = MlflowClient(mlflow_server.url).get_run(logged["double"]).info.artifact_uri
    assert root.startswith("mlflow-artifacts:/")  # the server proxies artifacts
    check = _succeeded(app_client, {"uri": f"{root}/checkpoint/ema.safetensors"})
    assert check["checkpoint"]["filename"] == "ema.safetensors"


def test_mlflow_several_candidates_need_artifact_path(
    app_client: TestClient, logged: dict[str, str]
) -> None:
    uri = f"runs:/{logged['double']}/checkpoint"
    answer = _post(app_client, {"uri": uri})
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert "artifact_path" in answer.json()["detail"]
    check = _succeeded(app_client, {"uri": uri, "artifact_path": "weights.safetensors"})
    assert check["checkpoint"]["filename"] == "weights.safetensors"


def _save_pytorch_flavour(path: Path) -> None:
    """A model directory laid out as ``mlflow.pytorch.save_model`` writes it (MLflow 3.17,
    mlflow/pytorch/__init__.py, pickle format): ``MLmodel`` with the pytorch and
    python_function flavours (MLflow's own ``Model`` class writes it), ``data/model.pth`` from
    ``torch.save`` of the whole module with MLflow's pickle module, and
    ``data/pickle_module_info.txt``. (``mlflow.pytorch.save_model`` itself needs pandas, which
    mlflow-skinny leaves out.)"""
    import torch
    from mlflow.models import Model
    from torchvision.models import squeezenet1_1

    data = path / "data"
    data.mkdir(parents=True)
    torch.save(squeezenet1_1(weights=None), data / "model.pth")
    (data / "pickle_module_info.txt").write_text("mlflow.pytorch.pickle_module")
    model = Model(artifact_path="model")
    model.add_flavor(
        "python_function",
        loader_module="mlflow.pytorch",
        data="data",
        pickle_module_name="mlflow.pytorch.pickle_module",
        env={"conda": "conda.yaml", "virtualenv": "python_env.yaml"},
    )
    model.add_flavor(
        "pytorch", model_data="data", pytorch_version=str(torch.__version__), code=None
    )
    model.save(str(path / "MLmodel"))
    (path / "requirements.txt").write_text(f"mlflow\ntorch=={torch.__version__}\n")


def test_mlflow_pytorch_flavour_is_refused_with_what_to_log_instead(
    app_client: TestClient, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    _save_pytorch_flavour(tmp_path / "model")
    client = MlflowClient(mlflow_server.url)
    run = client.create_run(client.create_experiment("flavour"))
    client.log_artifacts(run.info.run_id, str(tmp_path / "model"), "model")
    client.create_registered_model("flavour-squeezenet")
    version = client.create_model_version(
        "flavour-squeezenet", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
    )
    answer = _post(app_client, {"uri": f"models:/flavour-squeezenet/{version.version}"})
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["type"] == "/problems/mlflow-pytorch-flavour"
    assert "log_state_dict" in problem["detail"] and "safetensors" in problem["detail"]
    # The override reaches the pickle, which the readers then refuse as unsafe to load.
    answer = _post(
        app_client,
        {"uri": f"models:/flavour-squeezenet/{version.version}", "artifact_path": "data/model.pth"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["error"]["type"] == "/problems/unsafe-checkpoint", answer.json()


@pytest.mark.parametrize(
    "uri",
    ["models:/no-such-model/1", "models:/sources-squeezenet/99", "runs:/0123456789abcdef/x"],
)
def test_mlflow_unknown_model_version_or_run_is_404(
    app_client: TestClient, logged: dict[str, str], uri: str
) -> None:
    answer = _post(app_client, {"uri": uri}, wait=0)
    assert answer.status_code == 404, answer.text
    assert answer.json()["type"] == "/problems/source-not-found"


def test_mlflow_uri_outside_the_allowlist_is_403(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    settings = make_settings(
        tmp_path, source_uris="models:/allowed-only", mlflow_tracking_uri=mlflow_server.url
    )
    with TestClient(create_app(settings)) as client:
        answer = _post(client, {"uri": "models:/sources-squeezenet/1"}, wait=0)
        assert answer.status_code == 403, answer.text
        assert "CKPT_COMPAT_SOURCE_URIS" in answer.json()["detail"]
        events = client.post("/v1/integrations/mlflow/events", content=b"{}")
        assert events.status_code == 404, events.text  # no webhook secret: the endpoint is off
        assert events.json()["type"] == "/problems/integration-disabled"


def test_mlflow_unreachable_tracking_server_is_502_naming_the_uri(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    settings = make_settings(tmp_path, source_uris="models:/", mlflow_tracking_uri=closed)
    with TestClient(create_app(settings)) as client:
        answer = _post(client, {"uri": "models:/anything/1"}, wait=0)
    assert answer.status_code == 502, answer.text
    problem = answer.json()
    assert problem["type"] == "/problems/source-unreachable"
    assert problem["uri"] == "models:/anything/1"
