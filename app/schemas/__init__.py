"""Wire schemas (pydantic): request options, checks, reports, architectures, problems.

Pydantic lives at the edge only; the engine works on frozen dataclasses and the job layer
validates the report dict against ``Report`` before it is stored, so what is served always
matches ``GET /v1/schemas/report.json``.
"""

from app.enums import REPORT_SCHEMA_VERSION, ModuleStatus, Reason, TransformKind, Verdict
from app.schemas.architectures import (
    ArchitectureDetail,
    ArchitectureItem,
    ArchitectureList,
    ArchitectureTensor,
)
from app.schemas.checks import (
    Check,
    CheckLinks,
    CheckList,
    CheckpointRef,
    CheckRequest,
    CheckStatus,
    PathSource,
    Problem,
    Progress,
    Upload,
    UploadSource,
)
from app.schemas.options import (
    CheckOptions,
    FreezeOptions,
    MergeOptions,
    RenameRule,
)
from app.schemas.report import (
    AlignmentAlternative,
    AppliedTransform,
    CandidateInfo,
    DtypeDifference,
    MergedInfo,
    MissingKey,
    ModuleNode,
    OptimizerParamGroup,
    Report,
    ReportArchitecture,
    ReportCheckpoint,
    ReportKeys,
    ReportSafety,
    ReportSummary,
    ShapeMismatch,
    ShardInfo,
    TrainingPlan,
    UnexpectedKey,
)

__all__ = [
    "REPORT_SCHEMA_VERSION",
    "AlignmentAlternative",
    "AppliedTransform",
    "ArchitectureDetail",
    "ArchitectureItem",
    "ArchitectureList",
    "ArchitectureTensor",
    "CandidateInfo",
    "Check",
    "CheckLinks",
    "CheckList",
    "CheckOptions",
    "CheckRequest",
    "CheckStatus",
    "CheckpointRef",
    "DtypeDifference",
    "FreezeOptions",
    "MergeOptions",
    "MergedInfo",
    "MissingKey",
    "ModuleNode",
    "ModuleStatus",
    "OptimizerParamGroup",
    "PathSource",
    "Problem",
    "Progress",
    "Reason",
    "RenameRule",
    "Report",
    "ReportArchitecture",
    "ReportCheckpoint",
    "ReportKeys",
    "ReportSafety",
    "ReportSummary",
    "ShapeMismatch",
    "ShardInfo",
    "TrainingPlan",
    "TransformKind",
    "UnexpectedKey",
    "Upload",
    "UploadSource",
    "Verdict",
]
