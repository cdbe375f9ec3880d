"""Wire schemas (pydantic): request options, checks, reports, architectures, problems.

Pydantic lives at the edge only; the engine works on frozen dataclasses and the job layer
validates the report dict against ``Report`` before it is stored, so what is served always
matches ``GET /v1/schemas/report.json``.
"""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.patterns import MAX_PATTERN_CHARS, MAX_PATTERNS, check_replacement, compile_pattern

REPORT_SCHEMA_VERSION: Literal["1"] = "1"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- options


class MergeOptions(_Wire):
    """Ask for a merged state_dict and choose its file format."""

    format: Literal["safetensors", "pt"] = "safetensors"


class RenameRule(_Wire):
    """One key rename: an RE2 regular expression and its replacement (``\\1``, ``\\g<name>``)."""

    pattern: str = Field(
        min_length=1,
        max_length=MAX_PATTERN_CHARS,
        description="RE2 regular expression, searched in each checkpoint key.",
        examples=["^stage(\\d)\\."],
    )
    replacement: str = Field(
        max_length=MAX_PATTERN_CHARS,
        description="Replacement text; \\1 or \\g<name> insert groups.",
        examples=["layer\\1."],
    )

    @model_validator(mode="after")
    def _compiles(self) -> RenameRule:
        check_replacement(self.pattern, self.replacement)  # compiles the pattern too
        return self


class FreezeOptions(_Wire):
    """Which parameters the training plan freezes."""

    mode: Literal["loaded", "all", "none"] = Field(
        default="loaded",
        description=(
            "loaded: freeze the parameters the checkpoint fills, train the rest; all: freeze "
            "everything; none: train everything. `trainable` patterns are trained in any mode."
        ),
    )
    trainable: list[str] = Field(
        default_factory=list,
        max_length=MAX_PATTERNS,
        description="RE2 patterns searched in parameter names; matching parameters are trained.",
        examples=[["^layer4\\.", "^fc\\."]],
    )

    @field_validator("trainable")
    @classmethod
    def _compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            compile_pattern(pattern)
        return patterns


class CheckOptions(_Wire):
    """Options of a check; every field is optional and unknown fields are refused.

    Key options apply in this order: ``strip_prefix``, ``add_prefix``, ``rename`` (rules in
    order), ``match_by_suffix``. When any of them is given, automatic alignment does not run:
    explicit options win over ``align``.
    """

    architecture_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description='Keyword arguments for the architecture constructor, e.g. {"num_classes": 10}.',
    )

    @field_validator("architecture_kwargs")
    @classmethod
    def _finite_numbers(cls, value: dict[str, Any]) -> dict[str, Any]:
        # NaN and infinities parse from JSON but cannot be answered in JSON (a 500).
        pending: list[Any] = [value]
        while pending:
            item = pending.pop()
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError("NaN and infinite numbers are not allowed")
            if isinstance(item, dict):
                pending.extend(item.values())
            elif isinstance(item, list):
                pending.extend(item)
        return value

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
    align: Literal["auto", "none"] = Field(
        default="auto",
        description=(
            "auto: find the prefix transformation that loads the most parameter elements; "
            "none: compare keys as they are. Ignored when an explicit key option is given."
        ),
    )
    strip_prefix: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_PATTERN_CHARS,
        description="Remove this literal prefix from checkpoint keys that start with it.",
        examples=["module."],
    )
    add_prefix: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_PATTERN_CHARS,
        description="Prepend this literal prefix to every checkpoint key (after strip_prefix).",
        examples=["backbone.body."],
    )
    rename: list[RenameRule] = Field(
        default_factory=list,
        max_length=MAX_PATTERNS,
        description="Regular-expression renames of checkpoint keys, applied in order.",
    )
    match_by_suffix: bool = Field(
        default=False,
        description=(
            "Map each checkpoint key to the model key with the longest common dotted suffix "
            "and the same shape (detectron2-style); ambiguous keys are reported, not guessed."
        ),
    )
    freeze: FreezeOptions | None = Field(
        default=None,
        description=(
            "The training plan's freezing; null proposes the default: train what the "
            "checkpoint does not fill (plus `trainable`), freeze the rest."
        ),
    )

    @property
    def explicit_key_options(self) -> bool:
        """Whether any explicit key option is set (then automatic alignment does not run)."""
        return bool(self.strip_prefix or self.add_prefix or self.rename or self.match_by_suffix)


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


class UploadSource(_Wire):
    """A checkpoint sent before with ``PUT /v1/uploads``."""

    upload_id: str = Field(pattern=r"^[0-9a-f]{64}$", description="The upload's sha256.")
    filename: str | None = Field(default=None, description="Name shown in the report.")


class PathSource(_Wire):
    """A file or directory on the server, under CKPT_COMPAT_SOURCE_ROOTS, read in place."""

    path: str = Field(
        min_length=1,
        max_length=4096,
        description="Absolute path: a checkpoint file, a directory of shards or a *.index.json.",
    )


class CheckRequest(_Wire):
    """The JSON form of ``POST /v1/checks``: a source that is not sent in the request."""

    source: UploadSource | PathSource
    architecture: str = Field(min_length=1, examples=["transformers:bert"])
    options: CheckOptions = Field(default_factory=CheckOptions)


class Upload(_Wire):
    """A stored upload: its id (the sha256 of its bytes) and size."""

    upload_id: str
    size_bytes: int


# ---------------------------------------------------------------- report


class Verdict(StrEnum):
    """The one-word answer; see ``app.matching.verdict`` for the rules."""

    COMPATIBLE = "compatible"
    COMPATIBLE_WITH_CHANGES = "compatible_with_changes"
    PARTIAL = "partial"
    INCOMPATIBLE = "incompatible"


class Reason(StrEnum):
    """Why a key does not load as it is; see ``app.matching.reasons`` for the rules."""

    HEAD_RESIZED = "head_resized"
    INPUT_CHANNELS = "input_channels"
    POSITION_EMBEDDING_RESIZED = "position_embedding_resized"
    TRANSPOSED = "transposed"
    RESHAPED = "reshaped"
    DTYPE_CAST = "dtype_cast"
    IGNORABLE = "ignorable"
    NEW_MODULE = "new_module"
    UNEXPLAINED = "unexplained"


class CandidateInfo(_Wire):
    path: str
    tensor_count: int
    loaded_parameter_count: int | None = Field(
        default=None,
        description="Model parameter elements this candidate would load (null: not scored).",
    )


class ShardInfo(_Wire):
    filename: str
    format: str
    tensor_count: int
    size_bytes: int


class ReportCheckpoint(_Wire):
    filename: str
    sha256: str
    size_bytes: int
    format: str
    state_dict_path: str
    state_dict_reason: str = Field(
        default="", description="Why this state_dict was used, in a plain sentence."
    )
    candidates: list[CandidateInfo]
    tensor_count: int
    parameter_count: int = Field(description="Elements over all checkpoint tensors.")
    shards: list[ShardInfo] | None = Field(
        default=None, description="The files of a sharded checkpoint, in reading order."
    )


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
    loaded_parameter_count: int = Field(description="Model parameter elements that load.")
    loaded_parameter_fraction: float
    strict_loadable: bool
    verdict: Verdict
    reasons: dict[Reason, int] = Field(
        default_factory=dict, description="How many key entries carry each reason."
    )
    message: str = Field(default="", description="What the result means and what to do.")


class MissingKey(_Wire):
    key: str = Field(description="The model key that gets no checkpoint tensor.")
    shape: list[int]
    reason: Reason
    detail: str


class UnexpectedKey(_Wire):
    key: str = Field(description="The checkpoint key as stored in the file.")
    aligned_key: str = Field(description="The key after the applied transforms.")
    shape: list[int]
    reason: Reason
    detail: str


class ShapeMismatch(_Wire):
    key: str = Field(description="The model key.")
    checkpoint_key: str = Field(description="The checkpoint key as stored in the file.")
    checkpoint_shape: list[int]
    model_shape: list[int]
    reason: Reason
    detail: str


class DtypeDifference(_Wire):
    key: str = Field(description="The model key; the tensor loads with a cast.")
    checkpoint_key: str
    checkpoint_dtype: str
    model_dtype: str
    lossless: bool
    reason: Reason
    detail: str


class ReportKeys(_Wire):
    matched: list[str] = Field(description="Model keys that load.")
    missing: list[MissingKey]
    unexpected: list[UnexpectedKey]
    shape_mismatched: list[ShapeMismatch]
    dtype_differs: list[DtypeDifference]
    ambiguous: list[str] = Field(
        default_factory=list,
        description="Checkpoint keys match_by_suffix could not map to one model key.",
    )


class ModuleStatus(StrEnum):
    LOADED = "loaded"
    PARTIAL = "partial"
    NOT_LOADED = "not_loaded"
    CHECKPOINT_ONLY = "checkpoint_only"


class ModuleNode(_Wire):
    """One module of the model (or of the checkpoint only), with its whole subtree counted."""

    module: str = Field(
        description='Dotted path; repeated blocks folded as "layer1.{0..2}"; "" is the root.'
    )
    repeat: int = Field(
        default=1, description="Module instances folded into this node; counts are summed."
    )
    status: ModuleStatus
    matched: int
    missing: int
    unexpected: int
    shape_mismatched: int
    parameter_count: int = Field(description="Model parameter elements in the subtree.")
    loaded_parameter_count: int
    loaded_parameter_fraction: float | None = Field(
        description="Null where the model has no parameters under this module."
    )
    reasons: dict[Reason, int] = Field(default_factory=dict)
    children: list[ModuleNode] = Field(default_factory=list)


class TransformKind(StrEnum):
    STRIP_PREFIX = "strip_prefix"
    ADD_PREFIX = "add_prefix"
    RENAME = "rename"
    MATCH_BY_SUFFIX = "match_by_suffix"


class AppliedTransform(_Wire):
    kind: TransformKind
    prefix: str | None = None
    pattern: str | None = None
    replacement: str | None = None
    origin: Literal["auto", "option"] = Field(
        description="auto: chosen by alignment; option: asked for in the options."
    )
    keys_changed: int = Field(description="Checkpoint keys this transform changed.")


class AlignmentAlternative(_Wire):
    transforms: list[AppliedTransform]
    loaded_parameter_count: int
    loaded_parameter_fraction: float
    matched: int = Field(description="Model keys that would load.")


class OptimizerParamGroup(_Wire):
    name: str
    params: list[str]
    weight_decay: bool = Field(
        description="False for biases and normalisation weights (1-D), by common practice."
    )


class TrainingPlan(_Wire):
    mode: Literal["loaded", "all", "none"]
    trainable_patterns: list[str]
    trainable: list[str]
    frozen: list[str]
    trainable_parameter_count: int
    frozen_parameter_count: int
    optimizer_param_groups: list[OptimizerParamGroup]
    notes: list[str]


class MergedInfo(_Wire):
    format: Literal["safetensors", "pt"]
    filename: str
    loaded_keys: int
    kept_keys: int
    size_bytes: int


class ReportSafety(_Wire):
    """How the file would be loaded, found without executing it (no pickle is run)."""

    format: str = Field(description="torch_zip, torch_legacy or safetensors.")
    uses_pickle: bool = Field(description="Whether loading the file needs an unpickler.")
    pickle_globals: list[str] = Field(
        default_factory=list,
        description="Every module.name the pickle imports (like the Hub's 'Detected Pickle "
        "imports'), listed from its opcodes.",
    )
    refused_globals: list[str] = Field(
        default_factory=list,
        description="Those that torch.load(weights_only=True) refuses (a file with any is "
        "refused, and its problem carries this listing).",
    )


class Report(_Wire):
    """The compatibility report of one check."""

    schema_version: Literal["1"] = REPORT_SCHEMA_VERSION
    check_id: str
    checkpoint: ReportCheckpoint
    architecture: ReportArchitecture
    summary: ReportSummary
    applied_transforms: list[AppliedTransform] = Field(
        default_factory=list, description="Key transformations applied, in order."
    )
    alternatives: list[AlignmentAlternative] = Field(
        default_factory=list, description="Other alignments scored, best first."
    )
    keys: ReportKeys
    modules: list[ModuleNode] = Field(
        description="The module tree: top-level modules with their children."
    )
    training_plan: TrainingPlan
    notes: list[str] = Field(
        default_factory=list, description="Every normalisation applied, in plain sentences."
    )
    merged: MergedInfo | None = None
    reused_from: str | None = Field(
        default=None,
        description="The earlier check with the same content, architecture and options "
        "whose result this report reuses; null when this check ran.",
    )
    safety: ReportSafety | None = Field(
        default=None, description="The file's format and pickle imports; null if not known."
    )


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
