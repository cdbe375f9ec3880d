"""The report as typed values: frozen dataclasses named field for field like the wire report.

``app.matching.report.assemble_report`` builds a ``ReportParts`` from an analysis; the job
layer turns it into the wire schema (``app.schemas.Report``) in one place,
``app.jobs.report_wire.report_to_wire``, adding what only the job knows (shards, safety,
closest architectures). Field names and order are the wire's, so ``report_json`` can give
the same JSON without pydantic.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.enums import ModuleStatus, Reason, TransformKind, Verdict


@dataclass(frozen=True, slots=True)
class Candidate:
    path: str
    tensor_count: int
    loaded_parameter_count: int | None


@dataclass(frozen=True, slots=True)
class CheckpointPart:
    filename: str
    sha256: str
    size_bytes: int
    format: str
    state_dict_path: str
    state_dict_reason: str
    candidates: tuple[Candidate, ...]
    tensor_count: int
    parameter_count: int


@dataclass(frozen=True, slots=True)
class ArchitecturePart:
    name: str
    source: str
    kwargs: Mapping[str, Any]
    tensor_count: int
    parameter_count: int


@dataclass(frozen=True, slots=True)
class Summary:
    matched: int
    missing: int
    unexpected: int
    shape_mismatched: int
    dtype_differs: int
    loaded_parameter_count: int
    loaded_parameter_fraction: float
    strict_loadable: bool
    verdict: Verdict
    reasons: Mapping[Reason, int]
    message: str


@dataclass(frozen=True, slots=True)
class MissingEntry:
    key: str
    shape: tuple[int, ...]
    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class UnexpectedEntry:
    key: str
    aligned_key: str
    shape: tuple[int, ...]
    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class ShapeMismatchEntry:
    key: str
    checkpoint_key: str
    checkpoint_shape: tuple[int, ...]
    model_shape: tuple[int, ...]
    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class DtypeEntry:
    key: str
    checkpoint_key: str
    checkpoint_dtype: str
    model_dtype: str
    lossless: bool
    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class AdaptedEntry:
    key: str
    checkpoint_keys: tuple[str, ...]
    adapter: str
    detail: str


@dataclass(frozen=True, slots=True)
class KeysPart:
    matched: tuple[str, ...]
    missing: tuple[MissingEntry, ...]
    unexpected: tuple[UnexpectedEntry, ...]
    shape_mismatched: tuple[ShapeMismatchEntry, ...]
    dtype_differs: tuple[DtypeEntry, ...]
    ambiguous: tuple[str, ...]
    adapted: tuple[AdaptedEntry, ...] = ()


@dataclass(frozen=True, slots=True)
class ModuleEntry:
    module: str
    repeat: int
    status: ModuleStatus
    matched: int
    missing: int
    unexpected: int
    shape_mismatched: int
    parameter_count: int
    loaded_parameter_count: int
    loaded_parameter_fraction: float | None
    reasons: Mapping[Reason, int]
    children: tuple[ModuleEntry, ...]


@dataclass(frozen=True, slots=True)
class TransformEntry:
    kind: TransformKind
    prefix: str | None
    pattern: str | None
    replacement: str | None
    origin: str  # "auto" or "option"
    keys_changed: int


@dataclass(frozen=True, slots=True)
class AlternativeEntry:
    transforms: tuple[TransformEntry, ...]
    loaded_parameter_count: int
    loaded_parameter_fraction: float
    matched: int


@dataclass(frozen=True, slots=True)
class SuggestedOptionsEntry:
    """Options found by structure but not applied: paste ``options`` into a check's options."""

    options: Mapping[str, Any]
    loaded_parameter_fraction: float
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class ParamGroupEntry:
    name: str
    params: tuple[str, ...]
    weight_decay: bool


@dataclass(frozen=True, slots=True)
class PlanPart:
    mode: str  # "loaded", "all" or "none"
    trainable_patterns: tuple[str, ...]
    trainable: tuple[str, ...]
    frozen: tuple[str, ...]
    trainable_parameter_count: int
    frozen_parameter_count: int
    optimizer_param_groups: tuple[ParamGroupEntry, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MergedFile:
    """The merged file a check wrote (``app.merge.write.write_merged``)."""

    format: str  # "safetensors" or "pt"
    filename: str
    loaded_keys: int
    kept_keys: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class ReportParts:
    """Everything the engine knows of one check's report (the wire adds shards, safety,
    ``reused_from`` and ``closest_architectures``)."""

    schema_version: str
    check_id: str
    checkpoint: CheckpointPart
    architecture: ArchitecturePart
    summary: Summary
    applied_transforms: tuple[TransformEntry, ...]
    alternatives: tuple[AlternativeEntry, ...]
    keys: KeysPart
    modules: tuple[ModuleEntry, ...]
    training_plan: PlanPart
    notes: tuple[str, ...]
    merged: MergedFile | None
    suggested_options: tuple[SuggestedOptionsEntry, ...] = ()


def report_json(value: Any) -> Any:
    """The JSON value of a report part: fields in order, enums as values, tuples as lists.

    Example:
        >>> report_json(Candidate("state_dict", 4, None))
        {'path': 'state_dict', 'tensor_count': 4, 'loaded_parameter_count': None}
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: report_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {report_json(k): report_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [report_json(v) for v in value]
    return value
