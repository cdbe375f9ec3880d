"""Which file of an MLflow artifact directory is the checkpoint: the documented rule."""

from __future__ import annotations

import json

import pytest

from app.errors import InvalidRequestError, MlflowPyTorchFlavourError, SourceNotFoundError
from app.storage.mlflow_choice import ArtifactFile, choose_checkpoint
from app.storage.mlflow_sources import join_artifact_path

URI = "runs:/abc/ckpt"
# MLmodel as mlflow.pytorch.save_model writes it (mlflow/pytorch/__init__.py, Model.save).
PYTORCH_MLMODEL = b"""artifact_path: model
flavors:
  python_function:
    data: data
    env:
      conda: conda.yaml
      virtualenv: python_env.yaml
    loader_module: mlflow.pytorch
    pickle_module_name: mlflow.pytorch.pickle_module
    python_version: 3.11.7
  pytorch:
    code: null
    model_data: data
    pytorch_version: 2.14.1
mlflow_version: 3.17.2
"""


def _files(*names: str) -> list[ArtifactFile]:
    return [ArtifactFile(f"ckpt/{n}", 10) for n in names]


def _no_read(path: str) -> bytes:
    raise AssertionError(f"read {path}")


def _choose(*names: str, read: object = _no_read) -> tuple[list[str], str]:
    files, entry = choose_checkpoint(_files(*names), URI, read=read)  # type: ignore[arg-type]
    return [f.name for f in files], entry


def test_choice_prefers_safetensors_over_pickles() -> None:
    assert _choose("state_dict.pth", "model.safetensors", "a.bin") == (
        ["model.safetensors"],
        "ckpt/model.safetensors",
    )


def test_choice_takes_a_sharded_safetensors_index_with_its_shards() -> None:
    index = {"weight_map": {"a": "model-00001.safetensors", "b": "model-00002.safetensors"}}

    def read(path: str) -> bytes:
        assert path == "ckpt/model.safetensors.index.json"
        return json.dumps(index).encode()

    names, entry = _choose(
        "model-00001.safetensors",
        "model-00002.safetensors",
        "model.safetensors.index.json",
        "notes.txt",
        read=read,
    )
    assert entry == "ckpt/model.safetensors.index.json"
    assert names == [
        "model.safetensors.index.json",
        "model-00001.safetensors",
        "model-00002.safetensors",
    ]


def test_choice_then_state_dict_pth_then_other_weights() -> None:
    assert _choose("a.pt", "state_dict.pth")[1] == "ckpt/state_dict.pth"
    assert _choose("weights.bin", "README.md")[1] == "ckpt/weights.bin"


def test_choice_among_several_takes_model_else_refuses() -> None:
    assert _choose("ema.safetensors", "model.safetensors")[1] == "ckpt/model.safetensors"
    with pytest.raises(InvalidRequestError, match=r"several candidate.*artifact_path"):
        _choose("a.safetensors", "b.safetensors")


def test_choice_refuses_mlflows_pytorch_flavour() -> None:
    with pytest.raises(MlflowPyTorchFlavourError, match=r"the whole nn\.Module .* never unpickles"):
        _choose("MLmodel", "conda.yaml", "requirements.txt", read=lambda _: PYTORCH_MLMODEL)


def test_choice_without_a_checkpoint_names_what_is_there() -> None:
    other = b"flavors:\n  sklearn:\n    pickled_model: model.pkl\n"
    with pytest.raises(SourceNotFoundError, match=r"'MLmodel', 'model.pkl'"):
        _choose("MLmodel", "model.pkl", read=lambda _: other)


def test_artifact_path_is_joined_below_the_uri_and_checked() -> None:
    assert join_artifact_path("models:/m/1", "ckpt/model.safetensors") == (
        "models:/m/1/ckpt/model.safetensors"
    )
    assert join_artifact_path("runs:/r/", None) == "runs:/r/"
    for bad in ("/etc/passwd", "a/../b", "a//b", "./a"):
        with pytest.raises(InvalidRequestError, match="relative path"):
            join_artifact_path("models:/m/1", bad)


def test_web_process_imports_no_mlflow_until_an_mlflow_uri_is_used() -> None:
    import subprocess
    import sys

    code = (
        "import sys, app.main, app.integrations.mlflow_tags, "
        "app.integrations.mlflow_reconcile; "
        "print(sorted(m for m in ('mlflow', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr
