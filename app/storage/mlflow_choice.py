"""Which file of an MLflow artifact directory is the checkpoint: one documented rule.

Top-level files only: a sharded ``*.safetensors.index.json`` (with the shards its
``weight_map`` names), then ``*.safetensors``, then ``state_dict.pth``, then another
``*.index.json``, then ``*.pt``/``*.pth``/``*.bin``. A kind with several files and no single
``model.*`` or ``pytorch_model.*`` among them is ambiguous (422: name one with
``source.artifact_path``). With none of these, an ``MLmodel`` listing the ``pytorch`` flavour
(``data/model.pth`` pickles a whole ``nn.Module``) is refused, saying what to log instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from app.errors import InvalidRequestError, MlflowPyTorchFlavourError, SourceNotFoundError

INDEX_SUFFIX = ".index.json"
MAX_INDEX_BYTES = 100 * 1024 * 1024
_WEIGHTS = (".pt", ".pth", ".bin")


@dataclass(frozen=True, slots=True)
class ArtifactFile:
    """One artifact a source reads: its path under the artifact root, and its size."""

    path: str
    size: int

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name


def choose_checkpoint(
    files: Sequence[ArtifactFile], uri: str, *, read: Callable[[str], bytes]
) -> tuple[list[ArtifactFile], str]:
    """The checkpoint of an artifact directory by the documented rule (module docstring).

    ``read(path) -> bytes`` reads a small artifact (an index, ``MLmodel``).

    Raises:
        InvalidRequestError: Several files of the winning kind and no ``model.*`` among them.
        MlflowPyTorchFlavourError: Only MLflow's pytorch flavour is there.
        SourceNotFoundError: No checkpoint file at the top of the directory.
    """
    by_name = {f.name: f for f in files}
    kinds: list[list[ArtifactFile]] = [
        [f for f in files if f.name.endswith(".safetensors" + INDEX_SUFFIX)],
        [f for f in files if f.name.endswith(".safetensors")],
        [by_name["state_dict.pth"]] if "state_dict.pth" in by_name else [],
        [f for f in files if f.name.endswith(INDEX_SUFFIX)],
        [f for f in files if f.name.endswith(_WEIGHTS)],
    ]
    for kind in kinds:
        if not kind:
            continue
        chosen = _one_of(kind, uri)
        if chosen.name.endswith(INDEX_SUFFIX):
            return [chosen, *shards_of(chosen, files, read=read)], chosen.path
        return [chosen], chosen.path
    if "MLmodel" in by_name and _is_pytorch_flavour(read(by_name["MLmodel"].path)):
        raise MlflowPyTorchFlavourError(
            f"{uri[:200]} holds a model logged with mlflow.pytorch.log_model: its data/ holds "
            "the whole nn.Module (pickled in model.pth, or an exported program), not a "
            "state_dict, and this service never unpickles a module. Log the weights "
            "instead, e.g. safetensors.torch.save_file(model.state_dict(), 'model.safetensors') "
            "and mlflow.log_artifact('model.safetensors', 'checkpoint') (or "
            "mlflow.pytorch.log_state_dict), then point at that artifact.",
            uri=uri[:200],
        )
    names = sorted(by_name)[:20]
    raise SourceNotFoundError(
        f"No checkpoint file at the top of {uri[:200]} (*.safetensors, state_dict.pth, *.pt, "
        f"*.pth, *.bin or a *.index.json); it holds {names}. Name the file with "
        "source.artifact_path.",
    )


def _one_of(kind: list[ArtifactFile], uri: str) -> ArtifactFile:
    if len(kind) == 1:
        return kind[0]
    preferred = [f for f in kind if f.name.startswith(("model.", "pytorch_model."))]
    if len(preferred) == 1:
        return preferred[0]
    names = sorted(f.name for f in kind)[:20]
    raise InvalidRequestError(
        f"{uri[:200]} holds several candidate checkpoints {names}: name one with "
        "source.artifact_path."
    )


def _is_pytorch_flavour(mlmodel: bytes) -> bool:
    """Whether an ``MLmodel`` file lists the ``pytorch`` flavour (read as MLflow reads it)."""
    import yaml

    try:
        flavors = (yaml.safe_load(mlmodel) or {}).get("flavors") or {}
    except (yaml.YAMLError, AttributeError):
        return False
    return isinstance(flavors, dict) and "pytorch" in flavors


def shards_of(
    index: ArtifactFile, beside: Sequence[ArtifactFile], *, read: Callable[[str], bytes]
) -> list[ArtifactFile]:
    """The files beside an index that its ``weight_map`` names (read to know them)."""
    if index.size > MAX_INDEX_BYTES:
        return []  # the reader refuses it with its own limit
    try:
        names = set(json.loads(read(index.path)).get("weight_map", {}).values())
    except (ValueError, AttributeError, TypeError):
        return []  # the reader says what is wrong with it
    folder = str(PurePosixPath(index.path).parent)
    here = {f.name: f for f in beside if str(PurePosixPath(f.path).parent) == folder}
    return [here[n] for n in sorted(n for n in names if isinstance(n, str)) if n in here]
