"""Tests of app.matching.report."""

from __future__ import annotations

import json
from typing import Any

from app.matching.analysis import MatchOptions, analyse
from app.matching.report import build_report
from app.schemas import Report
from app.tensors import (
    ArchitectureIndex,
    CheckpointIndex,
    StateDictCandidate,
    TensorIndex,
    TensorInfo,
    TensorKind,
)

P = TensorKind.PARAMETER
B = TensorKind.BUFFER

MODEL = TensorIndex.from_infos(
    [
        TensorInfo("conv.weight", (4, 3, 3, 3), "float32", P),
        TensorInfo("bn.running_mean", (4,), "float32", B),
        TensorInfo("fc.weight", (10, 4), "float32", P),
        TensorInfo("fc.bias", (10,), "float32", P),
    ]
)
CKPT = TensorIndex.from_infos(
    [
        TensorInfo("conv.weight", (4, 3, 3, 3), "float16"),
        TensorInfo("bn.running_mean", (4,), "float32"),
        TensorInfo("fc.weight", (1000, 4), "float32"),
        TensorInfo("step", (), "int64"),
    ]
)
CHECKPOINT = CheckpointIndex(
    format="torch_zip",
    index=CKPT,
    state_dict_path="state_dict",
    candidates=(StateDictCandidate("state_dict", 4), StateDictCandidate("ema", 4)),
    notes=("Unwrapped 'state_dict'.",),
)
ARCHITECTURE = ArchitectureIndex(
    name="torchvision:tiny",
    source="torchvision",
    kwargs={"num_classes": 10},
    index=MODEL,
    notes=("Built on meta.",),
)


def _report(
    checkpoint: CheckpointIndex = CHECKPOINT,
    architecture: ArchitectureIndex = ARCHITECTURE,
    **overrides: Any,
) -> dict[str, Any]:
    analysis = analyse(checkpoint, architecture, MatchOptions())
    arguments: dict[str, Any] = {
        "check_id": "c1",
        "filename": "tiny.pt",
        "sha256": "ab" * 32,
        "size_bytes": 1234,
        "analysis": analysis,
        "architecture": architecture,
    }
    return build_report(**{**arguments, **overrides})


def test_build_report_validates_against_schema() -> None:
    report = _report()
    parsed = Report.model_validate_json(json.dumps(report))
    assert parsed.summary.model_dump(mode="json") == report["summary"]
    assert parsed.keys.model_dump(mode="json") == report["keys"]


def test_build_report_is_json_ready() -> None:
    report = _report()
    assert json.loads(json.dumps(report)) == report


def test_build_report_fills_checkpoint_and_architecture() -> None:
    report = _report()
    assert report["checkpoint"]["candidates"] == [
        {"path": "state_dict", "tensor_count": 4, "loaded_parameter_count": None},
        {"path": "ema", "tensor_count": 4, "loaded_parameter_count": None},
    ]
    assert (
        report["checkpoint"]["state_dict_reason"]
        == "The only dict of tensors in the file is the dict at 'state_dict'."
    )
    assert report["architecture"]["parameter_count"] == 108 + 40 + 10


def test_build_report_summary_gives_reasons_and_message() -> None:
    summary = _report()["summary"]
    assert summary["verdict"] == "partial"  # fc.bias is missing for no known reason
    assert summary["loaded_parameter_count"] == 108
    # "step" is a top-level tensor the model has none of: only in the checkpoint, not a mystery.
    assert summary["reasons"] == {
        "dtype_cast": 1,
        "head_resized": 1,
        "unexplained": 1,
        "new_module": 1,
    }
    assert "num_classes changed from 1000 to 10" in summary["message"]


def test_build_report_keys_carry_reasons() -> None:
    keys = _report()["keys"]
    assert keys["matched"] == ["conv.weight", "bn.running_mean"]
    assert keys["missing"] == [
        {
            "key": "fc.bias",
            "shape": [10],
            "reason": "unexplained",
            "detail": "No checkpoint tensor is named 'fc.bias' after alignment, though its module "
            "is in the checkpoint.",
        }
    ]
    assert keys["unexpected"][0]["key"] == "step"
    assert keys["shape_mismatched"][0]["reason"] == "head_resized"
    assert keys["dtype_differs"][0] == {
        "key": "conv.weight",
        "checkpoint_key": "conv.weight",
        "checkpoint_dtype": "float16",
        "model_dtype": "float32",
        "lossless": True,
        "reason": "dtype_cast",
        "detail": "Loads with a cast: float16 -> float32 is lossless.",
    }


def test_build_report_modules_are_a_tree() -> None:
    modules = _report()["modules"]
    assert [m["module"] for m in modules] == ["", "conv", "bn", "fc"]
    assert modules[3]["status"] == "not_loaded"
    assert modules[3]["loaded_parameter_fraction"] == 0.0


def test_build_report_training_plan_trains_what_did_not_load() -> None:
    plan = _report()["training_plan"]
    assert plan["trainable"] == ["fc.weight", "fc.bias"]
    assert plan["frozen"] == ["conv.weight"]


def test_build_report_notes_checkpoint_then_architecture_then_job() -> None:
    assert _report(notes=["Merged."])["notes"] == [
        "Unwrapped 'state_dict'.",
        "Built on meta.",
        "Head and backbone: the head is fc (50 parameter elements, 0.0% loaded); the backbone, "
        "everything else, has 108 (100.0% loaded, 0.0% in new modules).",
        "Merged.",
    ]


def test_build_report_without_merge_has_null_merged() -> None:
    assert _report()["merged"] is None


def test_build_report_with_merged_info_validates() -> None:
    merged = {
        "format": "safetensors",
        "filename": "c1.safetensors",
        "loaded_keys": 2,
        "kept_keys": 2,
        "size_bytes": 99,
    }
    report = _report(merged=merged)
    assert report["merged"] == {
        "format": "safetensors",
        "filename": "c1.safetensors",
        "loaded_keys": 2,
        "kept_keys": 2,
        "size_bytes": 99,
    }
    assert Report.model_validate(report).merged is not None


def test_build_report_empty_model_is_incompatible() -> None:
    empty = ArchitectureIndex("plugin:empty", "plugin", {}, TensorIndex())
    parsed = Report.model_validate(_report(architecture=empty))
    assert parsed.summary.loaded_parameter_fraction == 0.0
    assert parsed.summary.verdict == "incompatible"


def test_build_report_imports_leave_torch_unloaded() -> None:
    import subprocess
    import sys
    from pathlib import Path

    import app

    code = (
        "import sys, app.matching.analysis, app.matching.report, app.merge.reference, "
        "app.training; print('torch' in sys.modules)"
    )
    root = Path(app.__file__).parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
