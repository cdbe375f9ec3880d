"""The one place a check's typed report becomes the wire schema (``app.schemas.Report``).

The engine assembles ``ReportParts`` (``app.matching.report``); the job adds what only it
knows (the shards it read, the file's safety, the closest catalogue architectures) as typed
values too. Every wire model is built here by keyword, so mypy checks each field's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from app.matching.report_parts import (
    AlternativeEntry,
    DtypeEntry,
    KeysPart,
    MergedFile,
    MissingEntry,
    ModuleEntry,
    PlanPart,
    ReportParts,
    ShapeMismatchEntry,
    Summary,
    TransformEntry,
    UnexpectedEntry,
)
from app.schemas.architectures import ArchitectureFit
from app.schemas.report import (
    AdaptedKey,
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
    SuggestedOptions,
    TrainingPlan,
    UnexpectedKey,
)

if TYPE_CHECKING:
    from app.jobs.index_calls import ClosestArchitectures
    from app.tensors import Safety


class ShardFile(Protocol):
    """One file of a sharded checkpoint (``app.readers.sharded.Shard``)."""

    @property
    def filename(self) -> str: ...
    @property
    def format(self) -> str: ...
    @property
    def tensor_count(self) -> int: ...
    @property
    def size_bytes(self) -> int: ...


def report_to_wire(
    parts: ReportParts,
    *,
    shards: Sequence[ShardFile] | None = None,
    safety: Safety | None = None,
    closest: ClosestArchitectures | None = None,
) -> Report:
    """The wire report of a check: the engine's parts and the job's own facts.

    Args:
        parts: ``app.matching.report.assemble_report``'s result.
        shards: The files of a sharded checkpoint, in reading order; None for one file.
        safety: How the file would be loaded (its format and pickle imports), if known.
        closest: The ranked catalogue for a partial or incompatible verdict, with its notes.

    Example:
        >>> report_to_wire(parts, safety=checkpoint.safety).model_dump(mode="json")
        ... # doctest: +SKIP
    """
    ckpt, arch = parts.checkpoint, parts.architecture
    return Report(
        schema_version=parts.schema_version,
        check_id=parts.check_id,
        checkpoint=ReportCheckpoint(
            filename=ckpt.filename,
            sha256=ckpt.sha256,
            size_bytes=ckpt.size_bytes,
            format=ckpt.format,
            state_dict_path=ckpt.state_dict_path,
            state_dict_reason=ckpt.state_dict_reason,
            candidates=[
                CandidateInfo(
                    path=c.path,
                    tensor_count=c.tensor_count,
                    loaded_parameter_count=c.loaded_parameter_count,
                )
                for c in ckpt.candidates
            ],
            tensor_count=ckpt.tensor_count,
            parameter_count=ckpt.parameter_count,
            shards=None if shards is None else [_shard(s) for s in shards],
        ),
        architecture=ReportArchitecture(
            name=arch.name,
            source=arch.source,
            kwargs=dict(arch.kwargs),
            tensor_count=arch.tensor_count,
            parameter_count=arch.parameter_count,
        ),
        summary=_summary(parts.summary),
        applied_transforms=[_transform(t) for t in parts.applied_transforms],
        alternatives=[_alternative(a) for a in parts.alternatives],
        keys=_keys(parts.keys),
        modules=[_module(m) for m in parts.modules],
        training_plan=_plan(parts.training_plan),
        notes=[*parts.notes, *(closest.notes if closest else ())],
        merged=None if parts.merged is None else _merged(parts.merged),
        suggested_options=[
            SuggestedOptions(
                options=dict(s.options),
                loaded_parameter_fraction=s.loaded_parameter_fraction,
                verdict=s.verdict,
            )
            for s in parts.suggested_options
        ],
        safety=None if safety is None else _safety(safety),
        closest_architectures=(
            None
            if closest is None or closest.fits is None
            else [ArchitectureFit.model_validate(f.to_wire()) for f in closest.fits]
        ),
    )


def report_json(report: Report) -> dict[str, Any]:
    """The report as JSON values, ``summary`` first: a person, ``head -c`` or a log viewer meets
    the verdict and message before 100 KB of checkpoint metadata and keys.

    Example:
        >>> next(iter(report_json(report)))  # doctest: +SKIP
        'summary'
    """
    data = report.model_dump(mode="json")
    return {"summary": data.pop("summary"), **data}


def _shard(shard: ShardFile) -> ShardInfo:
    return ShardInfo(
        filename=shard.filename,
        format=shard.format,
        tensor_count=shard.tensor_count,
        size_bytes=shard.size_bytes,
    )


def _summary(s: Summary) -> ReportSummary:
    return ReportSummary(
        matched=s.matched,
        missing=s.missing,
        unexpected=s.unexpected,
        shape_mismatched=s.shape_mismatched,
        dtype_differs=s.dtype_differs,
        loaded_parameter_count=s.loaded_parameter_count,
        loaded_parameter_fraction=s.loaded_parameter_fraction,
        strict_loadable=s.strict_loadable,
        verdict=s.verdict,
        reasons=dict(s.reasons),
        message=s.message,
    )


def _transform(t: TransformEntry) -> AppliedTransform:
    return AppliedTransform(
        kind=t.kind,
        prefix=t.prefix,
        pattern=t.pattern,
        replacement=t.replacement,
        origin=t.origin,
        keys_changed=t.keys_changed,
    )


def _alternative(a: AlternativeEntry) -> AlignmentAlternative:
    return AlignmentAlternative(
        transforms=[_transform(t) for t in a.transforms],
        loaded_parameter_count=a.loaded_parameter_count,
        loaded_parameter_fraction=a.loaded_parameter_fraction,
        matched=a.matched,
    )


def _keys(k: KeysPart) -> ReportKeys:
    return ReportKeys(
        matched=list(k.matched),
        missing=[_missing(m) for m in k.missing],
        unexpected=[_unexpected(u) for u in k.unexpected],
        shape_mismatched=[_mismatch(m) for m in k.shape_mismatched],
        dtype_differs=[_dtype(d) for d in k.dtype_differs],
        ambiguous=list(k.ambiguous),
        adapted=[
            AdaptedKey(
                key=a.key,
                checkpoint_keys=list(a.checkpoint_keys),
                adapter=a.adapter,
                detail=a.detail,
            )
            for a in k.adapted
        ],
    )


def _missing(m: MissingEntry) -> MissingKey:
    return MissingKey(key=m.key, shape=list(m.shape), reason=m.reason, detail=m.detail)


def _unexpected(u: UnexpectedEntry) -> UnexpectedKey:
    return UnexpectedKey(
        key=u.key, aligned_key=u.aligned_key, shape=list(u.shape), reason=u.reason, detail=u.detail
    )


def _mismatch(m: ShapeMismatchEntry) -> ShapeMismatch:
    return ShapeMismatch(
        key=m.key,
        checkpoint_key=m.checkpoint_key,
        checkpoint_shape=list(m.checkpoint_shape),
        model_shape=list(m.model_shape),
        reason=m.reason,
        detail=m.detail,
    )


def _dtype(d: DtypeEntry) -> DtypeDifference:
    return DtypeDifference(
        key=d.key,
        checkpoint_key=d.checkpoint_key,
        checkpoint_dtype=d.checkpoint_dtype,
        model_dtype=d.model_dtype,
        lossless=d.lossless,
        reason=d.reason,
        detail=d.detail,
    )


def _module(m: ModuleEntry) -> ModuleNode:
    return ModuleNode(
        module=m.module,
        repeat=m.repeat,
        status=m.status,
        matched=m.matched,
        missing=m.missing,
        unexpected=m.unexpected,
        shape_mismatched=m.shape_mismatched,
        parameter_count=m.parameter_count,
        loaded_parameter_count=m.loaded_parameter_count,
        loaded_parameter_fraction=m.loaded_parameter_fraction,
        reasons=dict(m.reasons),
        children=[_module(c) for c in m.children],
    )


def _plan(p: PlanPart) -> TrainingPlan:
    return TrainingPlan(
        mode=p.mode,
        trainable_patterns=list(p.trainable_patterns),
        trainable=list(p.trainable),
        frozen=list(p.frozen),
        trainable_parameter_count=p.trainable_parameter_count,
        frozen_parameter_count=p.frozen_parameter_count,
        optimizer_param_groups=[
            OptimizerParamGroup(name=g.name, params=list(g.params), weight_decay=g.weight_decay)
            for g in p.optimizer_param_groups
        ],
        notes=list(p.notes),
    )


def _merged(m: MergedFile) -> MergedInfo:
    return MergedInfo(
        format=m.format,
        filename=m.filename,
        loaded_keys=m.loaded_keys,
        kept_keys=m.kept_keys,
        size_bytes=m.size_bytes,
    )


def _safety(s: Safety) -> ReportSafety:
    return ReportSafety(
        format=s.format,
        uses_pickle=s.uses_pickle,
        pickle_globals=list(s.pickle_globals),
        refused_globals=list(s.refused_globals),
        allowed_globals=list(s.allowed_globals),
    )
