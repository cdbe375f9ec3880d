"""Synthetic reports for the page tests: any number of keys, hostile key names on request."""

from __future__ import annotations

import json
from typing import Any

from app.schemas import Report


def synthetic_report(blocks: int, *, hostile: str = "") -> dict[str, Any]:
    """A valid report of ``blocks`` transformer-like blocks of 10 keys each (100 000 keys for
    10 000 blocks): most load, one block in ten has a resized head and new modules."""
    matched: list[str] = []
    missing: list[dict[str, Any]] = []
    unexpected: list[dict[str, Any]] = []
    mismatched: list[dict[str, Any]] = []
    children: list[dict[str, Any]] = []
    for b in range(blocks):
        base = f"layers.{b}"
        names = [
            f"{base}.{part}.{p}" for part in ("q", "k", "v", "o", "mlp") for p in ("weight", "bias")
        ]
        status = "loaded"
        if b % 10 == 9:
            status = "partial"
            missing.append(
                {
                    "key": names[8],
                    "shape": [64, 64],
                    "reason": "new_module",
                    "detail": f"The module '{base}.mlp' is new: train it.",
                }
            )
            mismatched.append(
                {
                    "key": names[9],
                    "checkpoint_key": names[9],
                    "checkpoint_shape": [10],
                    "model_shape": [64],
                    "reason": "head_resized",
                    "detail": "The head differs only in its output size: train it.",
                }
            )
            unexpected.append(
                {
                    "key": f"{base}.extra{hostile}",
                    "aligned_key": f"{base}.extra{hostile}",
                    "shape": [3],
                    "reason": "unexplained",
                    "detail": f"Unused {hostile}",
                }
            )
            matched.extend(names[:8])
        else:
            matched.extend(names)
        loaded = 5 * 4160 if status == "loaded" else 4 * 4160
        children.append(
            _node(
                f"{base}{hostile}",
                status,
                5 * 4160,
                loaded,
                reasons={} if status == "loaded" else {"new_module": 1, "head_resized": 1},
            )
        )
    total = blocks * 5 * 4160
    loaded_total = sum(c["loaded_parameter_count"] for c in children)
    report = {
        "schema_version": "1",
        "check_id": "0" * 32,
        "checkpoint": {
            "filename": f"model{hostile}.safetensors",
            "sha256": "a" * 64,
            "size_bytes": 123456,
            "format": "safetensors",
            "state_dict_path": "",
            "candidates": [],
            "tensor_count": len(matched) + len(unexpected) + len(mismatched),
            "parameter_count": total,
        },
        "architecture": {
            "name": "plugin:big",
            "source": "plugin",
            "kwargs": {"n": blocks},
            "tensor_count": blocks * 10,
            "parameter_count": total,
        },
        "summary": {
            "matched": len(matched),
            "missing": len(missing),
            "unexpected": len(unexpected),
            "shape_mismatched": len(mismatched),
            "dtype_differs": 0,
            "loaded_parameter_count": loaded_total,
            "loaded_parameter_fraction": loaded_total / total,
            "strict_loadable": False,
            "verdict": "compatible_with_changes",
            "reasons": {"new_module": len(missing), "head_resized": len(mismatched)},
            "message": f"Most of it loads{hostile}.",
        },
        "applied_transforms": [
            {"kind": "strip_prefix", "prefix": "module.", "origin": "auto", "keys_changed": 3}
        ],
        "keys": {
            "matched": matched,
            "missing": missing,
            "unexpected": unexpected,
            "shape_mismatched": mismatched,
            "dtype_differs": [],
            "ambiguous": [],
        },
        "modules": [
            _node(
                "layers",
                "partial",
                total,
                loaded_total,
                children=children,
                reasons={"new_module": len(missing), "head_resized": len(mismatched)},
            )
        ],
        "training_plan": {
            "mode": "loaded",
            "trainable_patterns": [],
            "trainable": [m["key"] for m in missing],
            "frozen": matched,
            "trainable_parameter_count": 1,
            "frozen_parameter_count": 2,
            "optimizer_param_groups": [],
            "notes": ["BatchNorm statistics still change in train mode."],
        },
        "notes": [f"Used the state_dict at the top level{hostile}."],
        "merged": None,
        "reused_from": None,
        "safety": {
            "format": "safetensors",
            "uses_pickle": False,
            "pickle_globals": [],
            "refused_globals": [],
        },
    }
    Report.model_validate(report)
    return report


def _node(
    module: str,
    status: str,
    params: int,
    loaded: int,
    *,
    children: list[dict[str, Any]] | None = None,
    reasons: dict[str, int] | None = None,
) -> dict[str, Any]:
    return {
        "module": module,
        "repeat": 1,
        "status": status,
        "matched": 0,
        "missing": 0,
        "unexpected": 0,
        "shape_mismatched": 0,
        "parameter_count": params,
        "loaded_parameter_count": loaded,
        "loaded_parameter_fraction": loaded / params,
        "reasons": reasons or {},
        "children": children or [],
    }


def report_bytes(report: dict[str, Any]) -> bytes:
    return json.dumps(report).encode()
