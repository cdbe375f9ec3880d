"""Wire schemas (pydantic): request options, checks, reports, architectures, problems.

Pydantic lives at the edge only; the engine works on frozen dataclasses and the job layer
validates the report dict against ``Report`` before it is stored, so what is served always
matches ``GET /v1/schemas/report.json``.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

REPORT_SCHEMA_VERSION: Literal["1"] = "1"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- options


class MergeOptions(_Wire):
    """Ask for a merged state_dict and choose its file format."""

    format: Literal["safetensors", "pt"] = "safetensors"


class CheckOptions(_Wire):
    """Options of a check; every field is optional and unknown fields are refused."""

    architecture_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description='Keyword arguments for the architecture constructor, e.g. {"num_classes": 10}.',
    )
    state_dict_key: str = Field(
        default="auto",
        description='"auto", or a dotted path to the state_dict inside the file\'s dict.',
    )
    merge: MergeOptions | None = Field(
        default=None, description="Write a merged state_dict; null for a report only."
    )
    dtype_policy: Literal["model", "checkpoint"] = Field(
        default="model",
        description="Merged tensors take the model's dtype, or keep the checkpoint's.",
    )


# ---------------------------------------------------------------- checks


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


class CheckpointRef(_Wire):
    filename: str
    size_bytes: int
    sha256: str


class Progress(_Wire):
    stage: str
    fraction: float = Field(ge=0.0, le=1.0)


class CheckLinks(_Wire):
    self: str
    report: str
    merged: str | None


class Check(_Wire):
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


class CheckList(_Wire):
    items: list[Check]
    total: int


# ---------------------------------------------------------------- report


class Verdict(StrEnum):
    COMPATIBLE = "compatible"
    PARTIAL = "partial"
    INCOMPATIBLE = "incompatible"


class CandidateInfo(_Wire):
    path: str
    tensor_count: int


class ReportCheckpoint(_Wire):
    filename: str
    sha256: str
    size_bytes: int
    format: str
    state_dict_path: str
    candidates: list[CandidateInfo]
    tensor_count: int
    parameter_count: int = Field(description="Elements over all checkpoint tensors.")


class ReportArchitecture(_Wire):
    name: str = Field(description="Qualified name, source:name.")
    source: str
    kwargs: dict[str, Any]
    tensor_count: int
    parameter_count: int = Field(description="Elements over the model's parameters.")


class ReportSummary(_Wire):
    matched: int
    missing: int
    unexpected: int
    shape_mismatched: int
    dtype_differs: int
    loaded_parameter_fraction: float
    strict_loadable: bool
    verdict: Verdict


class ShapeMismatch(_Wire):
    key: str
    checkpoint_shape: list[int]
    model_shape: list[int]


class DtypeDifference(_Wire):
    key: str
    checkpoint_dtype: str
    model_dtype: str


class ReportKeys(_Wire):
    matched: list[str]
    missing: list[str]
    unexpected: list[str]
    shape_mismatched: list[ShapeMismatch]
    dtype_differs: list[DtypeDifference]


class ModuleSummary(_Wire):
    module: str
    matched: int
    missing: int
    unexpected: int
    shape_mismatched: int
    loaded_parameter_fraction: float | None = Field(
        description="Null where the model has no parameters under this module."
    )


class MergedInfo(_Wire):
    format: Literal["safetensors", "pt"]
    filename: str
    loaded_keys: int
    kept_keys: int
    size_bytes: int


class Report(_Wire):
    """The compatibility report of one check."""

    schema_version: Literal["1"] = REPORT_SCHEMA_VERSION
    check_id: str
    checkpoint: ReportCheckpoint
    architecture: ReportArchitecture
    summary: ReportSummary
    keys: ReportKeys
    modules: list[ModuleSummary]
    notes: list[str] = Field(
        default_factory=list, description="Every normalisation applied, in plain sentences."
    )
    merged: MergedInfo | None = None


# ---------------------------------------------------------------- architectures


class ArchitectureItem(_Wire):
    name: str = Field(description="Qualified name, source:name.")
    source: str


class ArchitectureList(_Wire):
    items: list[ArchitectureItem]
    total: int


class ArchitectureTensor(_Wire):
    key: str
    shape: list[int]
    dtype: str
    kind: Literal["parameter", "buffer"]


class ArchitectureDetail(_Wire):
    name: str
    source: str
    kwargs: dict[str, Any]
    parameter_count: int
    tensor_count: int
    tensors: list[ArchitectureTensor]
