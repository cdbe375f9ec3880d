"""Build the wire report dict (``app.schemas.Report``) from a match result and both indexes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from app.matching.compare import MatchResult
from app.matching.modules import summarize_modules
from app.schemas import REPORT_SCHEMA_VERSION
from app.tensors import ArchitectureIndex, CheckpointIndex

FRACTION_DIGITS = 6


def build_report(
    *,
    check_id: str,
    filename: str,
    sha256: str,
    size_bytes: int,
    checkpoint: CheckpointIndex,
    architecture: ArchitectureIndex,
    result: MatchResult,
    notes: Sequence[str] = (),
    merged: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the report of one check in the exact shape of ``app.schemas.Report``.

    Args:
        check_id: The check's id.
        filename: The uploaded file's name.
        sha256: The uploaded file's sha256, hex.
        size_bytes: The uploaded file's size.
        checkpoint: What the reader found in the file.
        architecture: The architecture built on meta.
        result: ``compare(checkpoint.index, architecture.index)`` (after any alignment).
        notes: Further notes from the job (after the reader's and the architecture's).
        merged: The ``MergedInfo`` fields of a written merge (see ``build_merged_info``),
            or None.

    Returns:
        A JSON-ready dict that ``Report.model_validate`` accepts.

    """
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "check_id": check_id,
        "checkpoint": {
            "filename": filename,
            "sha256": sha256,
            "size_bytes": size_bytes,
            "format": checkpoint.format,
            "state_dict_path": checkpoint.state_dict_path,
            "candidates": [
                {"path": c.path, "tensor_count": c.tensor_count} for c in checkpoint.candidates
            ],
            "tensor_count": len(checkpoint.index),
            "parameter_count": checkpoint.index.numel,
        },
        "architecture": {
            "name": architecture.name,
            "source": architecture.source,
            "kwargs": dict(architecture.kwargs),
            "tensor_count": len(architecture.index),
            "parameter_count": architecture.index.parameter_numel,
        },
        "summary": _summary(result),
        "keys": _keys(result),
        "modules": _modules(result, checkpoint=checkpoint, architecture=architecture),
        "notes": [*checkpoint.notes, *architecture.notes, *notes],
        "merged": dict(merged) if merged is not None else None,
    }


def build_merged_info(
    result: MatchResult, *, format: str, filename: str, size_bytes: int
) -> dict[str, Any]:
    """The ``merged`` block of a report for a merged state_dict written from ``result``.

    Args:
        result: The match result the merge substituted (its ``matched`` keys were loaded).
        format: ``safetensors`` or ``pt``.
        filename: The merged file's download name.
        size_bytes: The merged file's size, as ``write_state_dict`` returned it.

    Returns:
        The dict for ``build_report(merged=...)``: loaded keys are the matched ones, kept keys
        every other model key (left at the architecture's initial values).
    """
    model_keys = len(result.matched) + len(result.missing) + len(result.shape_mismatched)
    return {
        "format": format,
        "filename": filename,
        "loaded_keys": len(result.matched),
        "kept_keys": model_keys - len(result.matched),
        "size_bytes": size_bytes,
    }


def _summary(result: MatchResult) -> dict[str, Any]:
    return {
        "matched": len(result.matched),
        "missing": len(result.missing),
        "unexpected": len(result.unexpected),
        "shape_mismatched": len(result.shape_mismatched),
        "dtype_differs": len(result.dtype_differs),
        "loaded_parameter_fraction": round(result.loaded_parameter_fraction, FRACTION_DIGITS),
        "strict_loadable": result.strict_loadable,
        "verdict": result.verdict.value,
    }


def _keys(result: MatchResult) -> dict[str, Any]:
    return {
        "matched": list(result.matched),
        "missing": list(result.missing),
        "unexpected": list(result.unexpected),
        "shape_mismatched": [
            {
                "key": m.key,
                "checkpoint_shape": list(m.checkpoint_shape),
                "model_shape": list(m.model_shape),
            }
            for m in result.shape_mismatched
        ],
        "dtype_differs": [d._asdict() for d in result.dtype_differs],
    }


def _modules(
    result: MatchResult, *, checkpoint: CheckpointIndex, architecture: ArchitectureIndex
) -> list[dict[str, Any]]:
    modules = summarize_modules(result, checkpoint.index, architecture.index)
    return [
        {
            "module": m.module,
            "matched": m.matched,
            "missing": m.missing,
            "unexpected": m.unexpected,
            "shape_mismatched": m.shape_mismatched,
            "loaded_parameter_fraction": (
                None
                if m.loaded_parameter_fraction is None
                else round(m.loaded_parameter_fraction, FRACTION_DIGITS)
            ),
        }
        for m in modules
    ]
