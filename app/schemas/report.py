"""The compatibility report (schema_version "1"), served at GET /v1/schemas/report.json."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from typing import Any, Literal

from pydantic import Field

from app.enums import REPORT_SCHEMA_VERSION, ModuleStatus, Reason, TransformKind, Verdict
from app.schemas.architectures import ArchitectureFit
from app.schemas.base import Wire

# ---------------------------------------------------------------- report


class CandidateInfo(Wire):
    path: str
    tensor_count: int
    loaded_parameter_count: int | None = Field(
        default=None,
        description="Model parameter elements this candidate would load (null: not scored).",
    )


class ShardInfo(Wire):
    filename: str
    format: str
    tensor_count: int
    size_bytes: int


class ReportCheckpoint(Wire):
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
    bytes_read: int | None = Field(
        default=None,
        description="Bytes fetched from object storage to read it (a uri source, an upload "
        "kept in S3): the headers and directories a report needs, or the whole file for a "
        "merge or the legacy format; null when read from local disk.",
    )


class ReportArchitecture(Wire):
    name: str = Field(description="Qualified name, source:name.")
    source: str
    kwargs: dict[str, Any]
    tensor_count: int
    parameter_count: int = Field(description="Elements over the model's parameters.")


class ReportSummary(Wire):
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


class MissingKey(Wire):
    key: str = Field(description="The model key that gets no checkpoint tensor.")
    shape: list[int]
    reason: Reason
    detail: str


class UnexpectedKey(Wire):
    key: str = Field(description="The checkpoint key as stored in the file.")
    aligned_key: str = Field(description="The key after the applied transforms.")
    shape: list[int]
    reason: Reason
    detail: str


class ShapeMismatch(Wire):
    key: str = Field(description="The model key.")
    checkpoint_key: str = Field(description="The checkpoint key as stored in the file.")
    checkpoint_shape: list[int]
    model_shape: list[int]
    reason: Reason
    detail: str


class DtypeDifference(Wire):
    key: str = Field(description="The model key; the tensor loads with a cast.")
    checkpoint_key: str
    checkpoint_dtype: str
    model_dtype: str
    lossless: bool
    reason: Reason
    detail: str


class AdaptedKey(Wire):
    key: str = Field(description="The model key, loaded through an adapter (also in matched).")
    checkpoint_keys: list[str] = Field(description="The checkpoint tensors it is computed from.")
    adapter: Literal[
        "transpose", "input_channels", "position_embedding", "qkv", "dequantize", "conversion"
    ] = Field(
        description="An adapter of options.adapt, or conversion: built by the library's own "
        "load-time converter (transformers 5 fusing per-expert tensors), applied "
        "automatically."
    )
    detail: str


class ReportKeys(Wire):
    matched: list[str] = Field(description="Model keys that load.")
    missing: list[MissingKey]
    unexpected: list[UnexpectedKey]
    shape_mismatched: list[ShapeMismatch]
    dtype_differs: list[DtypeDifference]
    ambiguous: list[str] = Field(
        default_factory=list,
        description="Checkpoint keys match_by_suffix could not map to one model key.",
    )
    adapted: list[AdaptedKey] = Field(
        default_factory=list,
        description="Matched keys computed by an adapter of options.adapt, and how.",
    )


class ModuleNode(Wire):
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


class AppliedTransform(Wire):
    kind: TransformKind
    prefix: str | None = None
    pattern: str | None = None
    replacement: str | None = None
    origin: Literal["auto", "option"] = Field(
        description="auto: chosen by alignment; option: asked for in the options."
    )
    keys_changed: int = Field(description="Checkpoint keys this transform changed.")


class AlignmentAlternative(Wire):
    transforms: list[AppliedTransform]
    loaded_parameter_count: int
    loaded_parameter_fraction: float
    matched: int = Field(description="Model keys that would load.")


class SuggestedOptions(Wire):
    options: dict[str, Any] = Field(
        description="Check options ready to paste into `options` (a `key_map`, say)."
    )
    loaded_parameter_fraction: float
    verdict: Verdict


class OptimizerParamGroup(Wire):
    name: str
    params: list[str]
    weight_decay: bool = Field(
        description="False for biases and normalisation weights (1-D), by common practice."
    )


class TrainingPlan(Wire):
    mode: Literal["loaded", "all", "none"]
    trainable_patterns: list[str]
    trainable: list[str]
    frozen: list[str]
    trainable_parameter_count: int
    frozen_parameter_count: int
    optimizer_param_groups: list[OptimizerParamGroup]
    notes: list[str]


class MergedInfo(Wire):
    format: Literal["safetensors", "pt"]
    filename: str
    loaded_keys: int
    kept_keys: int
    size_bytes: int


class ReportSafety(Wire):
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
    allowed_globals: list[str] = Field(
        default_factory=list,
        description="Those that torch's weights_only loading refuses but the service's "
        "allowlist of plain data admits (argparse.Namespace, numpy scalars and dtypes), each "
        "only in the form its writer pickles; loaded with torch.serialization.safe_globals.",
    )


class Report(Wire):
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
    suggested_options: list[SuggestedOptions] = Field(
        default_factory=list,
        description="Mappings found from the two module trees but not applied automatically "
        "(their evidence is not unambiguous), each with what it would load; best first.",
    )
    reused_from: str | None = Field(
        default=None,
        description="The earlier check with the same content, architecture and options "
        "whose result this report reuses; null when this check ran.",
    )
    safety: ReportSafety | None = Field(
        default=None, description="The file's format and pickle imports; null if not known."
    )
    closest_architectures: list[ArchitectureFit] | None = Field(
        default=None,
        description="For a partial or incompatible verdict: the catalogue architectures this "
        "checkpoint fits best (up to 5, best first, arguments inferred from its shapes); null "
        "otherwise, or while the catalogue index is not built (a note says so).",
    )


@cache
def report_schema_tag() -> str:
    """A digest of the report's JSON Schema: a stored report is reused only under the same.

    ``schema_version`` changes only with breaking changes; fields added since a report was
    stored would be missing from it, so reuse compares this tag instead.
    """
    schema = json.dumps(Report.model_json_schema(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(schema.encode()).hexdigest()[:16]
