"""Assemble a check's report as typed values (``ReportParts``) from an analysis."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from app.enums import REPORT_SCHEMA_VERSION, Reason, TransformKind
from app.matching.align import ScoredAlignment
from app.matching.analysis import Analysis
from app.matching.dtypes import is_lossless
from app.matching.placement import describe_placement
from app.matching.plan import TrainingPlan
from app.matching.report_parts import (
    AdaptedEntry,
    AlternativeEntry,
    ArchitecturePart,
    Candidate,
    CheckpointPart,
    DtypeEntry,
    KeysPart,
    MergedFile,
    MissingEntry,
    ModuleEntry,
    ParamGroupEntry,
    PlanPart,
    ReportParts,
    ShapeMismatchEntry,
    SuggestedOptionsEntry,
    Summary,
    TransformEntry,
    UnexpectedEntry,
    report_json,
)
from app.matching.transforms import AppliedStep
from app.matching.tree import ModuleTreeNode
from app.tensors import ArchitectureIndex, TensorIndex

FRACTION_DIGITS = 6


def assemble_report(
    *,
    check_id: str,
    filename: str,
    sha256: str,
    size_bytes: int,
    analysis: Analysis,
    architecture: ArchitectureIndex,
    notes: Sequence[str] = (),
    merged: MergedFile | None = None,
) -> ReportParts:
    """Assemble the report of one check as typed values.

    Args:
        check_id: The check's id.
        filename: The uploaded file's name.
        sha256: The uploaded file's sha256, hex.
        size_bytes: The uploaded file's size.
        analysis: ``analyse(checkpoint, architecture, options)``.
        architecture: The architecture built on meta.
        notes: Further notes from the job (after the reader's, the architecture's and the
            alignment's).
        merged: The merged file the check wrote, or None.

    Returns:
        The report's parts; ``app.jobs.report_wire.report_to_wire`` makes the wire report.

    Example:
        >>> parts = assemble_report(check_id="c1", filename="r.pt", sha256="0" * 64,
        ...     size_bytes=1, analysis=analysis, architecture=arch)  # doctest: +SKIP
        >>> parts.summary.verdict  # doctest: +SKIP
        <Verdict.COMPATIBLE: 'compatible'>
    """
    checkpoint = analysis.checkpoint
    total = architecture.index.parameter_numel
    return ReportParts(
        schema_version=REPORT_SCHEMA_VERSION,
        check_id=check_id,
        checkpoint=CheckpointPart(
            filename=filename,
            sha256=sha256,
            size_bytes=size_bytes,
            format=checkpoint.format,
            state_dict_path=checkpoint.state_dict_path,
            state_dict_reason=analysis.state_dict_reason,
            candidates=tuple(
                Candidate(c.path, c.tensor_count, analysis.candidate_scores.get(c.path))
                for c in checkpoint.candidates
            ),
            tensor_count=len(checkpoint.index),
            parameter_count=checkpoint.index.numel,
        ),
        architecture=ArchitecturePart(
            name=architecture.name,
            source=architecture.source,
            kwargs=dict(architecture.kwargs),
            tensor_count=len(architecture.index),
            parameter_count=total,
        ),
        summary=_summary(analysis),
        applied_transforms=tuple(_step(s) for s in analysis.alignment.steps),
        alternatives=tuple(_alternative(a, total) for a in analysis.alignment.alternatives),
        keys=_keys(analysis, architecture.index),
        modules=tuple(_node(n) for n in analysis.modules),
        training_plan=_plan(analysis.plan),
        notes=(
            *checkpoint.notes,
            *architecture.notes,
            *analysis.alignment.notes,
            *analysis.adapter_notes,
            *describe_placement(analysis.placement),
            *notes,
        ),
        merged=merged,
        suggested_options=tuple(
            SuggestedOptionsEntry(
                s.options, round(s.loaded_parameter_fraction, FRACTION_DIGITS), s.verdict
            )
            for s in analysis.suggestions
        ),
    )


def build_report(
    *,
    check_id: str,
    filename: str,
    sha256: str,
    size_bytes: int,
    analysis: Analysis,
    architecture: ArchitectureIndex,
    notes: Sequence[str] = (),
    merged: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The engine's part of the report as JSON (``assemble_report``, then ``report_json``).

    For callers without the job layer (tests, benchmarks): the same fields and values the
    wire report has, without ``reused_from``, ``safety``, ``closest_architectures`` and
    ``checkpoint.shards``, which only the job knows. ``merged`` takes ``MergedFile``'s fields.
    """
    parts = assemble_report(
        check_id=check_id,
        filename=filename,
        sha256=sha256,
        size_bytes=size_bytes,
        analysis=analysis,
        architecture=architecture,
        notes=notes,
        merged=MergedFile(**merged) if merged is not None else None,
    )
    result: dict[str, Any] = report_json(parts)
    return result


def _fraction(value: float | None) -> float | None:
    return None if value is None else round(value, FRACTION_DIGITS)


def _summary(analysis: Analysis) -> Summary:
    result = analysis.result
    reasons = Counter(e.reason for e in analysis.explanations.all())
    return Summary(
        matched=len(result.matched),
        missing=len(result.missing),
        unexpected=len(result.unexpected),
        shape_mismatched=len(result.shape_mismatched),
        dtype_differs=len(result.dtype_differs),
        loaded_parameter_count=result.loaded_parameter_numel,
        loaded_parameter_fraction=round(result.loaded_parameter_fraction, FRACTION_DIGITS),
        strict_loadable=analysis.strict_loadable,
        verdict=analysis.verdict,
        reasons=dict(sorted(reasons.items(), key=_by_value)),
        message=analysis.message,
    )


def _by_value(item: tuple[Reason, int]) -> str:
    return item[0].value


_PATTERNED = (TransformKind.RENAME, TransformKind.LEAF_SYNONYM, TransformKind.CONVERSION)


def _step(step: AppliedStep) -> TransformEntry:
    t = step.transform
    return TransformEntry(
        kind=t.kind,
        prefix=t.prefix
        if t.kind in (TransformKind.STRIP_PREFIX, TransformKind.ADD_PREFIX)
        else None,
        pattern=t.pattern if t.kind in _PATTERNED else None,
        replacement=t.replacement if t.kind in _PATTERNED else None,
        origin=t.origin,
        keys_changed=step.keys_changed,
    )


def _alternative(alt: ScoredAlignment, total: int) -> AlternativeEntry:
    fraction = alt.loaded_parameter_numel / total if total else 0.0
    return AlternativeEntry(
        transforms=tuple(_step(s) for s in alt.steps),
        loaded_parameter_count=alt.loaded_parameter_numel,
        loaded_parameter_fraction=round(fraction, FRACTION_DIGITS),
        matched=alt.matched,
    )


def _keys(analysis: Analysis, model: TensorIndex) -> KeysPart:
    result, why = analysis.result, analysis.explanations
    sources = analysis.alignment.sources
    original = analysis.checkpoint.index
    return KeysPart(
        matched=tuple(result.matched),
        missing=tuple(
            MissingEntry(
                key=key,
                shape=tuple(model.tensors[key].shape),
                reason=why.missing[key].reason,
                detail=why.missing[key].detail,
            )
            for key in result.missing
        ),
        unexpected=tuple(
            UnexpectedEntry(
                key=sources.get(key, key),
                aligned_key=key,
                shape=tuple(original.tensors[sources.get(key, key)].shape),
                reason=why.unexpected[key].reason,
                detail=why.unexpected[key].detail,
            )
            for key in result.unexpected
        ),
        shape_mismatched=tuple(
            ShapeMismatchEntry(
                key=m.key,
                checkpoint_key=sources[m.key],
                checkpoint_shape=tuple(m.checkpoint_shape),
                model_shape=tuple(m.model_shape),
                reason=why.shape_mismatched[m.key].reason,
                detail=why.shape_mismatched[m.key].detail,
            )
            for m in result.shape_mismatched
        ),
        dtype_differs=tuple(
            DtypeEntry(
                key=d.key,
                checkpoint_key=sources[d.key],
                checkpoint_dtype=d.checkpoint_dtype,
                model_dtype=d.model_dtype,
                lossless=is_lossless(d.checkpoint_dtype, d.model_dtype),
                reason=why.dtype_differs[d.key].reason,
                detail=why.dtype_differs[d.key].detail,
            )
            for d in result.dtype_differs
        ),
        ambiguous=tuple(analysis.alignment.ambiguous),
        adapted=tuple(
            AdaptedEntry(a.key, a.checkpoint_keys, a.adapter, a.detail)
            for a in analysis.adaptations
        ),
    )


def _node(node: ModuleTreeNode) -> ModuleEntry:
    counts = node.counts
    return ModuleEntry(
        module=node.module,
        repeat=node.repeat,
        status=node.status,
        matched=counts["matched"],
        missing=counts["missing"],
        unexpected=counts["unexpected"],
        shape_mismatched=counts["shape_mismatched"],
        parameter_count=node.parameter_count,
        loaded_parameter_count=node.loaded_parameter_count,
        loaded_parameter_fraction=_fraction(node.loaded_parameter_fraction),
        reasons=dict(node.reasons),
        children=tuple(_node(c) for c in node.children),
    )


def _plan(plan: TrainingPlan) -> PlanPart:
    return PlanPart(
        mode=plan.mode,
        trainable_patterns=tuple(plan.trainable_patterns),
        trainable=tuple(plan.trainable),
        frozen=tuple(plan.frozen),
        trainable_parameter_count=plan.trainable_numel,
        frozen_parameter_count=plan.frozen_numel,
        optimizer_param_groups=tuple(
            ParamGroupEntry(g.name, tuple(g.params), g.weight_decay) for g in plan.groups
        ),
        notes=tuple(plan.notes),
    )
