"""Build the wire report dict (``app.schemas.Report``) from an analysis and both indexes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from app.enums import REPORT_SCHEMA_VERSION, TransformKind
from app.matching.align import ScoredAlignment
from app.matching.analysis import Analysis
from app.matching.dtypes import is_lossless
from app.matching.placement import describe_placement
from app.matching.plan import TrainingPlan
from app.matching.transforms import AppliedStep
from app.matching.tree import ModuleTreeNode
from app.tensors import ArchitectureIndex, TensorIndex

FRACTION_DIGITS = 6


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
    """Assemble the report of one check in the exact shape of ``app.schemas.Report``.

    Args:
        check_id: The check's id.
        filename: The uploaded file's name.
        sha256: The uploaded file's sha256, hex.
        size_bytes: The uploaded file's size.
        analysis: ``analyse(checkpoint, architecture, options)``.
        architecture: The architecture built on meta.
        notes: Further notes from the job (after the reader's, the architecture's and the
            alignment's).
        merged: The ``MergedInfo`` fields of a written merge (``app.jobs.task._merge``
            returns them), or None.

    Returns:
        A JSON-ready dict that ``Report.model_validate`` accepts.
    """
    checkpoint = analysis.checkpoint
    total = architecture.index.parameter_numel
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "check_id": check_id,
        "checkpoint": {
            "filename": filename,
            "sha256": sha256,
            "size_bytes": size_bytes,
            "format": checkpoint.format,
            "state_dict_path": checkpoint.state_dict_path,
            "state_dict_reason": analysis.state_dict_reason,
            "candidates": [
                {
                    "path": c.path,
                    "tensor_count": c.tensor_count,
                    "loaded_parameter_count": analysis.candidate_scores.get(c.path),
                }
                for c in checkpoint.candidates
            ],
            "tensor_count": len(checkpoint.index),
            "parameter_count": checkpoint.index.numel,
        },
        "architecture": {
            "name": architecture.name,
            "source": architecture.source,
            "kwargs": dict(architecture.kwargs),
            "tensor_count": len(architecture.index),
            "parameter_count": total,
        },
        "summary": _summary(analysis),
        "applied_transforms": [_step(s) for s in analysis.alignment.steps],
        "alternatives": [_alternative(a, total) for a in analysis.alignment.alternatives],
        "keys": _keys(analysis, architecture.index),
        "modules": [_node(n) for n in analysis.modules],
        "training_plan": _plan(analysis.plan),
        "notes": [
            *checkpoint.notes,
            *architecture.notes,
            *analysis.alignment.notes,
            *describe_placement(analysis.placement),
            *notes,
        ],
        "merged": dict(merged) if merged is not None else None,
    }


def _fraction(value: float | None) -> float | None:
    return None if value is None else round(value, FRACTION_DIGITS)


def _summary(analysis: Analysis) -> dict[str, Any]:
    result = analysis.result
    reasons = Counter(e.reason.value for e in analysis.explanations.all())
    return {
        "matched": len(result.matched),
        "missing": len(result.missing),
        "unexpected": len(result.unexpected),
        "shape_mismatched": len(result.shape_mismatched),
        "dtype_differs": len(result.dtype_differs),
        "loaded_parameter_count": result.loaded_parameter_numel,
        "loaded_parameter_fraction": _fraction(result.loaded_parameter_fraction),
        "strict_loadable": analysis.strict_loadable,
        "verdict": analysis.verdict.value,
        "reasons": dict(sorted(reasons.items())),
        "message": analysis.message,
    }


def _step(step: AppliedStep) -> dict[str, Any]:
    t = step.transform
    return {
        "kind": t.kind.value,
        "prefix": t.prefix
        if t.kind in (TransformKind.STRIP_PREFIX, TransformKind.ADD_PREFIX)
        else None,
        "pattern": t.pattern if t.kind is TransformKind.RENAME else None,
        "replacement": t.replacement if t.kind is TransformKind.RENAME else None,
        "origin": t.origin,
        "keys_changed": step.keys_changed,
    }


def _alternative(alt: ScoredAlignment, total: int) -> dict[str, Any]:
    return {
        "transforms": [_step(s) for s in alt.steps],
        "loaded_parameter_count": alt.loaded_parameter_numel,
        "loaded_parameter_fraction": _fraction(
            alt.loaded_parameter_numel / total if total else 0.0
        ),
        "matched": alt.matched,
    }


def _keys(analysis: Analysis, model: TensorIndex) -> dict[str, Any]:
    result, why = analysis.result, analysis.explanations
    sources = analysis.alignment.sources
    original = analysis.checkpoint.index
    return {
        "matched": list(result.matched),
        "missing": [
            {
                "key": key,
                "shape": list(model.tensors[key].shape),
                "reason": why.missing[key].reason.value,
                "detail": why.missing[key].detail,
            }
            for key in result.missing
        ],
        "unexpected": [
            {
                "key": sources.get(key, key),
                "aligned_key": key,
                "shape": list(original.tensors[sources.get(key, key)].shape),
                "reason": why.unexpected[key].reason.value,
                "detail": why.unexpected[key].detail,
            }
            for key in result.unexpected
        ],
        "shape_mismatched": [
            {
                "key": m.key,
                "checkpoint_key": sources[m.key],
                "checkpoint_shape": list(m.checkpoint_shape),
                "model_shape": list(m.model_shape),
                "reason": why.shape_mismatched[m.key].reason.value,
                "detail": why.shape_mismatched[m.key].detail,
            }
            for m in result.shape_mismatched
        ],
        "dtype_differs": [
            {
                "key": d.key,
                "checkpoint_key": sources[d.key],
                "checkpoint_dtype": d.checkpoint_dtype,
                "model_dtype": d.model_dtype,
                "lossless": is_lossless(d.checkpoint_dtype, d.model_dtype),
                "reason": why.dtype_differs[d.key].reason.value,
                "detail": why.dtype_differs[d.key].detail,
            }
            for d in result.dtype_differs
        ],
        "ambiguous": list(analysis.alignment.ambiguous),
    }


def _node(node: ModuleTreeNode) -> dict[str, Any]:
    return {
        "module": node.module,
        "repeat": node.repeat,
        "status": node.status.value,
        **node.counts,
        "parameter_count": node.parameter_count,
        "loaded_parameter_count": node.loaded_parameter_count,
        "loaded_parameter_fraction": _fraction(node.loaded_parameter_fraction),
        "reasons": {r.value: n for r, n in node.reasons.items()},
        "children": [_node(c) for c in node.children],
    }


def _plan(plan: TrainingPlan) -> dict[str, Any]:
    return {
        "mode": plan.mode,
        "trainable_patterns": list(plan.trainable_patterns),
        "trainable": list(plan.trainable),
        "frozen": list(plan.frozen),
        "trainable_parameter_count": plan.trainable_numel,
        "frozen_parameter_count": plan.frozen_numel,
        "optimizer_param_groups": [
            {"name": g.name, "params": list(g.params), "weight_decay": g.weight_decay}
            for g in plan.groups
        ],
        "notes": list(plan.notes),
    }
