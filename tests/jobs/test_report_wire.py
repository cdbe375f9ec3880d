"""Tests of app.jobs.report_wire: the typed report becomes the wire report, as before."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from app.catalog_index.closest import Fit
from app.jobs.index_calls import NOT_READY_NOTE, ClosestArchitectures
from app.jobs.report_wire import report_to_wire
from app.matching.analysis import MatchOptions, analyse
from app.matching.report import assemble_report, build_report
from app.matching.report_parts import MergedFile, ReportParts
from app.schemas import Report
from app.tensors import (
    ArchitectureIndex,
    CheckpointIndex,
    Safety,
    StateDictCandidate,
    TensorIndex,
    TensorInfo,
    TensorKind,
)

P = TensorKind.PARAMETER
MODEL = TensorIndex.from_infos(
    [
        TensorInfo("conv.weight", (4, 3, 3, 3), "float32", P),
        TensorInfo("bn.running_mean", (4,), "float32", TensorKind.BUFFER),
        TensorInfo("fc.weight", (10, 4), "float32", P),
        TensorInfo("fc.bias", (10,), "float32", P),
    ]
)
CKPT = TensorIndex.from_infos(
    [
        TensorInfo("module.conv.weight", (4, 3, 3, 3), "float16"),
        TensorInfo("module.bn.running_mean", (4,), "float32"),
        TensorInfo("module.fc.weight", (1000, 4), "float32"),
        TensorInfo("step", (), "int64"),
    ]
)
CHECKPOINT = CheckpointIndex(
    "torch_zip", CKPT, "state_dict", (StateDictCandidate("state_dict", 4),), ("Unwrapped.",)
)
ARCHITECTURE = ArchitectureIndex("torchvision:tiny", "torchvision", {"num_classes": 10}, MODEL)
MERGED = {
    "format": "pt",
    "filename": "merged.pt",
    "loaded_keys": 2,
    "kept_keys": 2,
    "size_bytes": 9,
}
ARGUMENTS: dict[str, Any] = {
    "check_id": "c1",
    "filename": "tiny.pt",
    "sha256": "ab" * 32,
    "size_bytes": 1234,
    "architecture": ARCHITECTURE,
    "notes": ["Merged."],
}


@dataclass(frozen=True)
class _Shard:
    filename: str
    format: str
    tensor_count: int
    size_bytes: int


def _parts() -> ReportParts:
    analysis = analyse(CHECKPOINT, ARCHITECTURE, MatchOptions())
    return assemble_report(analysis=analysis, merged=MergedFile(**MERGED), **ARGUMENTS)


def _dict_report() -> dict[str, Any]:
    analysis = analyse(CHECKPOINT, ARCHITECTURE, MatchOptions())
    return build_report(analysis=analysis, merged=MERGED, **ARGUMENTS)


def test_report_wire_is_byte_for_byte_the_validated_dict() -> None:
    """What the job stored before (the dict, validated by ``Report``) is what it stores now."""
    before = Report.model_validate(_dict_report()).model_dump(mode="json")
    after = report_to_wire(_parts()).model_dump(mode="json")
    assert json.dumps(after) == json.dumps(before)
    assert after["summary"]["reasons"] and after["applied_transforms"]  # not a trivial report


def test_report_wire_engine_json_is_the_wire_json_of_the_same_fields() -> None:
    engine = _dict_report()
    wire = report_to_wire(_parts()).model_dump(mode="json")
    wire_checkpoint, engine_checkpoint = wire.pop("checkpoint"), engine.pop("checkpoint")
    assert {k: wire_checkpoint[k] for k in engine_checkpoint} == engine_checkpoint
    assert {k: wire[k] for k in engine} == engine
    # What only the job knows (shards, safety, closest, reused_from...) is null without it.
    assert "shards" in wire_checkpoint and "safety" in wire and "reused_from" in wire
    assert all(wire_checkpoint[k] is None for k in set(wire_checkpoint) - set(engine_checkpoint))
    assert all(wire[k] is None for k in set(wire) - set(engine))


def test_report_wire_adds_shards_safety_and_closest_with_their_notes() -> None:
    fit = Fit("torchvision:resnet18", loaded_parameter_fraction=0.5, checkpoint_fraction=0.5)
    report = report_to_wire(
        _parts(),
        shards=[_Shard("a.safetensors", "safetensors", 3, 10), _Shard("b.bin", "torch_zip", 1, 5)],
        safety=Safety("torch_zip", True, ("collections.OrderedDict",)),
        closest=ClosestArchitectures((fit,), ("A note.",)),
    )
    wire = report.model_dump(mode="json")
    assert wire["checkpoint"]["shards"] == [
        {"filename": "a.safetensors", "format": "safetensors", "tensor_count": 3, "size_bytes": 10},
        {"filename": "b.bin", "format": "torch_zip", "tensor_count": 1, "size_bytes": 5},
    ]
    assert wire["safety"] == {
        "format": "torch_zip",
        "uses_pickle": True,
        "pickle_globals": ["collections.OrderedDict"],
        "refused_globals": [],
        "allowed_globals": [],
    }
    assert wire["closest_architectures"] == [fit.to_wire()]
    assert wire["notes"][-2:] == ["Merged.", "A note."]
    assert Report.model_validate_json(report.model_dump_json()) == report


def test_report_wire_closest_without_fits_is_null_with_its_note() -> None:
    wire = report_to_wire(_parts(), closest=ClosestArchitectures(None, (NOT_READY_NOTE,)))
    assert wire.closest_architectures is None
    assert wire.notes[-1] == NOT_READY_NOTE
    assert wire.checkpoint.shards is None and wire.safety is None
