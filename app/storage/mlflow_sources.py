"""Checkpoints named by MLflow URI: ``models:/<name>/<version>``, ``runs:/<run_id>/<path>``,
``mlflow-artifacts:/<path>``, resolved through the MLflow tracking server.

A URI names an artifact directory or file; in a directory the checkpoint is chosen by one
rule (``app.storage.mlflow_choice``; MLflow's pytorch flavour, a pickled module, is refused).
At submission the files are listed (no bytes read but an index or an ``MLmodel``) and
identified by URI, artifact location, names and sizes; the worker resolves them again and
downloads them whole (MLflow's artifact proxy is read as files, not by ranges).

mlflow (the ``mlflow`` extra, ``mlflow-skinny``) is imported only when such a URI is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from app.errors import (
    InvalidRequestError,
    SourceForbiddenError,
    SourceNotFoundError,
    SourceUnreachableError,
)
from app.storage.mlflow_choice import INDEX_SUFFIX, ArtifactFile, choose_checkpoint, shards_of

SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")
_MODEL = re.compile(r"^models:/(?P<name>[^/]+)/(?P<version>[0-9]+)(?:/(?P<path>.*))?$")
_RUN = re.compile(r"^runs:/(?P<run>[A-Za-z0-9_-]+)(?:/(?P<path>.*))?$")
_HTTP_DEFAULTS = {
    # MLflow retries a request 7 times with growing backoff by default (minutes against a
    # server that is down); a submission should answer 502 within seconds instead.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


@dataclass(frozen=True, slots=True)
class MlflowSource:
    """A checked MLflow source: what the worker downloads and how it is identified.

    Attributes:
        uri: The URI as submitted (``source.artifact_path`` joined to it).
        filename: The name shown in the check and its report (the chosen file's).
        size_bytes: The total size of the files it reads.
        fingerprint: sha256 hex of the URI, the artifact location, paths and sizes.
        root: The artifact location the paths are under (``mlflow-artifacts:/...``, ...).
        files: The files read; ``entry`` is the one the readers open (a file or an index).
        entry: See ``files``.
    """

    uri: str
    filename: str
    size_bytes: int
    fingerprint: str
    root: str
    files: tuple[ArtifactFile, ...]
    entry: str


def is_mlflow_uri(uri: str) -> bool:
    """Whether ``uri`` is one MLflow resolves (models:/, runs:/, mlflow-artifacts:/)."""
    return uri.startswith(SCHEMES)


def join_artifact_path(uri: str, artifact_path: str | None) -> str:
    """``uri`` with ``artifact_path`` below it (``source.artifact_path``), one slash between.

    Raises:
        InvalidRequestError: ``artifact_path`` is absolute or holds ``.``/``..`` segments.
    """
    if not artifact_path:
        return uri
    parts = artifact_path.split("/")
    if artifact_path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise InvalidRequestError(
            "source.artifact_path must be a relative path inside the artifact directory "
            "(e.g. 'checkpoint/model.safetensors'), without '.', '..' or empty segments."
        )
    return f"{uri.rstrip('/')}/{artifact_path}"


def configure_mlflow(tracking_uri: str) -> None:
    """Point mlflow at ``tracking_uri`` (when set) and bound its HTTP retries.

    mlflow reads both from the environment on every call, so one process serves one
    tracking server; an operator's own ``MLFLOW_HTTP_REQUEST_*`` values are kept.

    Raises:
        SourceForbiddenError: mlflow is not installed, or no tracking server is configured.
    """
    for key, value in _HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        raise SourceForbiddenError(
            "MLflow URIs need a tracking server: set CKPT_COMPAT_MLFLOW_TRACKING_URI (or "
            "MLFLOW_TRACKING_URI) to its URL."
        )
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise SourceForbiddenError(
            "This server was installed without MLflow support: pip install "
            "'ckpt-compat[mlflow]' to read models:/, runs:/ and mlflow-artifacts:/ URIs."
        ) from None


def resolve_mlflow_uri(uri: str, *, tracking_uri: str) -> MlflowSource:
    """Look up the artifacts ``uri`` names and choose the checkpoint among them.

    Raises:
        SourceForbiddenError: MLflow is not installed or not configured.
        InvalidRequestError: Not a URI of the supported forms, or an ambiguous directory.
        SourceNotFoundError: Unknown model, version, run or artifact; no checkpoint file.
        MlflowPyTorchFlavourError: Only MLflow's pytorch flavour (a pickled module) is there.
        SourceUnreachableError: The tracking server could not be reached (502).

    Example:
        >>> resolve_mlflow_uri("models:/resnet/3", tracking_uri="http://mlflow:5000")
        ... # doctest: +SKIP
        MlflowSource(uri='models:/resnet/3', filename='model.safetensors', ...)
    """
    configure_mlflow(tracking_uri)
    with mlflow_errors(uri):
        root, sub = _artifact_location(uri)
        root, files, entry = _lookup(root, sub, uri)
    listing = [(f.path, f.size) for f in files]
    identity = json.dumps([uri, root, listing], separators=(",", ":")).encode()
    return MlflowSource(
        uri=uri,
        filename=PurePosixPath(entry).name,
        size_bytes=sum(f.size for f in files),
        fingerprint=hashlib.sha256(identity).hexdigest(),
        root=root,
        files=tuple(files),
        entry=entry,
    )


@contextmanager
def mlflow_errors(uri: str) -> Iterator[None]:
    """mlflow's and requests' errors as the service's problems, naming ``uri``."""
    from mlflow.exceptions import MlflowException
    from requests import RequestException

    try:
        yield
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            raise SourceNotFoundError(
                f"MLflow has no such model version, run or artifact: {uri[:200]} "
                f"({exc.message[:200]})."
            ) from None
        raise _unreachable(uri, exc) from None
    except (RequestException, OSError) as exc:
        raise _unreachable(uri, exc) from None


def _unreachable(uri: str, exc: Exception) -> SourceUnreachableError:
    return SourceUnreachableError(
        f"The MLflow tracking server holding {uri[:200]} could not be read "
        f"({type(exc).__name__}: {str(exc)[:200]}); check CKPT_COMPAT_MLFLOW_TRACKING_URI "
        "and that the server is up, then try again.",
        uri=uri[:200],
    )


def _artifact_location(uri: str) -> tuple[str, str]:
    """(artifact root, path under it) of a URI; the model version or run must exist."""
    from mlflow.tracking import MlflowClient

    if uri.startswith("mlflow-artifacts:/"):
        return uri, ""
    if model := _MODEL.match(uri):
        client = MlflowClient()
        client.get_model_version(model["name"], model["version"])  # 404 when unknown
        root = client.get_model_version_download_uri(model["name"], model["version"])
        return root, (model["path"] or "").strip("/")
    if run := _RUN.match(uri):
        found = MlflowClient().get_run(run["run"])  # 404 when unknown
        return str(found.info.artifact_uri), (run["path"] or "").strip("/")
    raise InvalidRequestError(
        f"{uri[:200]!r} is not an MLflow URI this server reads: use models:/<name>/<version>, "
        "runs:/<run_id>/<path> or mlflow-artifacts:/<path>."
    )


def _repository(root: str) -> Any:
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    return get_artifact_repository(root)


def _lookup(root: str, sub: str, uri: str) -> tuple[str, list[ArtifactFile], str]:
    """(root, files, entry): the files a source reads (a chosen file, an index with its
    shards) under ``root``; a version whose artifact location is a file moves ``root`` up."""
    repo = _repository(root)
    children = repo.list_artifacts(sub or None)
    if children and not (len(children) == 1 and children[0].path == sub):
        files, entry = choose_checkpoint(_files(children), uri, read=_reader(repo))
        return root, files, entry
    if not sub:  # the location itself is a file (a version registered from one file)
        root, _, sub = root.rstrip("/").rpartition("/")
        repo = _repository(root)
    parent = str(PurePosixPath(sub).parent)
    beside = _files(repo.list_artifacts(None if parent == "." else parent))
    found = next((f for f in beside if f.path == sub), None)
    if found is None:
        raise SourceNotFoundError(f"No artifact file or directory at {uri[:200]}.")
    if found.name.endswith(INDEX_SUFFIX):
        return root, [found, *shards_of(found, beside, read=_reader(repo))], found.path
    return root, [found], found.path


def _reader(repo: Any) -> Callable[[str], bytes]:
    return lambda path: _read_small(repo, path)


def _files(infos: Sequence[Any]) -> list[ArtifactFile]:
    """The files (not directories) of an MLflow listing."""
    return [ArtifactFile(str(i.path), int(i.file_size or 0)) for i in infos if not i.is_dir]


def _read_small(repo: Any, path: str) -> bytes:
    """One small artifact's bytes (an index, an ``MLmodel``), through a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="mlflow-") as work:
        local = repo.download_artifacts(path, dst_path=work)
        return Path(local).read_bytes()


def download_mlflow_source(source: MlflowSource, target: Path) -> int:
    """Every file of ``source`` into ``target`` (paths kept); returns the bytes fetched.

    Raises:
        SourceNotFoundError, SourceUnreachableError: As at submission.
    """
    with mlflow_errors(source.uri):
        repo = _repository(source.root)
        total = 0
        for item in source.files:
            local = Path(repo.download_artifacts(item.path, dst_path=str(target)))
            total += local.stat().st_size
    return total
