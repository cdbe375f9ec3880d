"""Checks, uploads and problems as they travel over HTTP."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.base import Wire
from app.schemas.options import CheckOptions


class CheckStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (CheckStatus.SUCCEEDED, CheckStatus.FAILED)


class Problem(BaseModel):
    """An RFC 9457 problem; extension members are allowed."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str


class CheckpointRef(Wire):
    filename: str
    size_bytes: int
    sha256: str


class Progress(Wire):
    stage: str
    fraction: float = Field(ge=0.0, le=1.0)


class CheckLinks(Wire):
    self: str
    report: str
    merged: str | None


class Delivery(Wire):
    """One attempt to POST a finished check to its ``options.callback_url``."""

    attempt: int = Field(ge=1, description="1 for the first attempt.")
    at: datetime
    status_code: int | None = Field(description="The receiver's HTTP status; null: no answer.")
    error: str | None = Field(description="Why the attempt failed, when it did.")


class Check(Wire):
    """A check: one checkpoint compared with one architecture, run by a worker."""

    id: str
    status: CheckStatus
    architecture: str
    options: CheckOptions
    checkpoint: CheckpointRef
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: Progress
    error: Problem | None
    links: CheckLinks
    deliveries: list[Delivery] = Field(
        default_factory=list,
        description="Callback attempts, oldest first (empty without options.callback_url).",
    )


class CheckList(Wire):
    items: list[Check]
    total: int


class UploadSource(Wire):
    """A checkpoint sent before with ``PUT /v1/uploads``."""

    upload_id: str = Field(pattern=r"^[0-9a-f]{64}$", description="The upload's sha256.")
    filename: str | None = Field(default=None, description="Name shown in the report.")


class PathSource(Wire):
    """A file or directory on the server, under CKPT_COMPAT_SOURCE_ROOTS, read in place."""

    path: str = Field(
        min_length=1,
        max_length=4096,
        description="Absolute path: a checkpoint file, a directory of shards or a *.index.json.",
    )


class UriSource(Wire):
    """An object in object storage or an MLflow artifact, under CKPT_COMPAT_SOURCE_URIS."""

    uri: str = Field(
        min_length=1,
        max_length=2048,
        pattern=r"^[a-z][a-z0-9+.-]*:/",
        description="s3://bucket/key (a checkpoint, a sharded *.index.json, or a prefix; read "
        "by ranges), or models:/<name>/<version>, runs:/<run_id>/<path>, "
        "mlflow-artifacts:/<path> (resolved through MLflow; a directory's checkpoint is "
        "chosen by the documented rule).",
        examples=["s3://models/bert/model.safetensors", "models:/resnet/3"],
    )
    artifact_path: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="A path below uri naming the checkpoint file (or a directory) when the "
        "rule would choose another or none, e.g. checkpoint/model.safetensors.",
    )


class CheckRequest(Wire):
    """The JSON form of ``POST /v1/checks``: a source that is not sent in the request."""

    source: UploadSource | PathSource | UriSource
    architecture: str = Field(min_length=1, examples=["transformers:bert"])
    options: CheckOptions = Field(default_factory=CheckOptions)


class Upload(Wire):
    """A stored upload: its id (the sha256 of its bytes) and size."""

    upload_id: str
    size_bytes: int
