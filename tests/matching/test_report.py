"""Tests of app.matching.report."""

from __future__ import annotations

import json

from app.matching.compare import compare
from app.matching.report import build_merged_info, build_report
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


def _report(**overrides: object) -> dict[str, object]:
    arguments: dict[str, object] = {
        "check_id": "c1",
        "filename": "tiny.pt",
        "sha256": "ab" * 32,
        "size_bytes": 1234,
        "checkpoint": CHECKPOINT,
        "architecture": ARCHITECTURE,
        "result": compare(CKPT, MODEL),
    }
    return build_report(**{**arguments, **overrides})  # type: ignore[arg-type]


def test_build_report_validates_against_schema() -> None:
    report = _report()
    parsed = Report.model_validate(report)
    assert parsed.model_dump(mode="json") == report


def test_build_report_is_json_ready() -> None:
    report = _report()
    assert json.loads(json.dumps(report)) == report


def test_build_report_fills_blocks() -> None:
    report = _report()
    assert report["schema_version"] == "1"
    assert report["checkpoint"] == {
        "filename": "tiny.pt",
        "sha256": "ab" * 32,
        "size_bytes": 1234,
        "format": "torch_zip",
        "state_dict_path": "state_dict",
        "candidates": [
            {"path": "state_dict", "tensor_count": 4},
            {"path": "ema", "tensor_count": 4},
        ],
        "tensor_count": 4,
        "parameter_count": 108 + 4 + 4000 + 1,
    }
    assert report["architecture"] == {
        "name": "torchvision:tiny",
        "source": "torchvision",
        "kwargs": {"num_classes": 10},
        "tensor_count": 4,
        "parameter_count": 108 + 40 + 10,
    }


def test_build_report_summary_and_keys() -> None:
    report = _report()
    assert report["summary"] == {
        "matched": 2,
        "missing": 1,
        "unexpected": 1,
        "shape_mismatched": 1,
        "dtype_differs": 1,
        "loaded_parameter_fraction": round(108 / 158, 6),
        "strict_loadable": False,
        "verdict": "partial",
    }
    assert report["keys"] == {
        "matched": ["conv.weight", "bn.running_mean"],
        "missing": ["fc.bias"],
        "unexpected": ["step"],
        "shape_mismatched": [
            {"key": "fc.weight", "checkpoint_shape": [1000, 4], "model_shape": [10, 4]}
        ],
        "dtype_differs": [
            {"key": "conv.weight", "checkpoint_dtype": "float16", "model_dtype": "float32"}
        ],
    }


def test_build_report_modules_are_rounded_and_ordered() -> None:
    modules = _report()["modules"]
    assert modules == [
        {
            "module": "conv",
            "matched": 1,
            "missing": 0,
            "unexpected": 0,
            "shape_mismatched": 0,
            "loaded_parameter_fraction": 1.0,
        },
        {
            "module": "bn",
            "matched": 1,
            "missing": 0,
            "unexpected": 0,
            "shape_mismatched": 0,
            "loaded_parameter_fraction": None,
        },
        {
            "module": "fc",
            "matched": 0,
            "missing": 1,
            "unexpected": 0,
            "shape_mismatched": 1,
            "loaded_parameter_fraction": 0.0,
        },
        {
            "module": "",
            "matched": 0,
            "missing": 0,
            "unexpected": 1,
            "shape_mismatched": 0,
            "loaded_parameter_fraction": None,
        },
    ]


def test_build_report_notes_checkpoint_then_architecture_then_job() -> None:
    report = _report(notes=["Merged."])
    assert report["notes"] == ["Unwrapped 'state_dict'.", "Built on meta.", "Merged."]


def test_build_report_without_merge_has_null_merged() -> None:
    assert _report()["merged"] is None


def test_build_report_with_merged_info_validates() -> None:
    result = compare(CKPT, MODEL)
    merged = build_merged_info(
        result, format="safetensors", filename="c1.safetensors", size_bytes=99
    )
    report = _report(merged=merged)
    assert report["merged"] == {
        "format": "safetensors",
        "filename": "c1.safetensors",
        "loaded_keys": 2,
        "kept_keys": 2,
        "size_bytes": 99,
    }
    assert Report.model_validate(report).merged is not None


def test_build_report_empty_model_validates() -> None:
    empty = ArchitectureIndex("plugin:empty", "plugin", {}, TensorIndex())
    report = _report(architecture=empty, result=compare(CKPT, TensorIndex()))
    parsed = Report.model_validate(report)
    assert parsed.summary.loaded_parameter_fraction == 0.0
    assert parsed.summary.verdict == "compatible"


def test_build_report_imports_leave_torch_unloaded() -> None:
    import subprocess
    import sys
    from pathlib import Path

    import app

    code = (
        "import sys, app.matching.compare, app.matching.modules, app.matching.report, "
        "app.matching.merge; print('torch' in sys.modules)"
    )
    root = Path(app.__file__).parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
