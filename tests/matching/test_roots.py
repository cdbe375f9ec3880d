"""Tests of app.matching.roots: one prefix pair per top-level root (issue 10, defect 7), and
alternatives without noise (defect 6)."""

from __future__ import annotations

import doctest
from pathlib import Path

import torch
import torchvision

import app.matching.roots as roots_module
from app.matching.align import auto_align
from app.schemas import Verdict
from tests.matching import projects
from tests.matching.helpers import ckpt_of, model_of
from tests.matching.truth import assert_message_agrees, facts_of_analysis


def _steps(steps: object) -> list[str]:
    return [s.transform.describe() for s in steps]  # type: ignore[attr-defined]


def test_extend_by_root_docstring_example_runs() -> None:
    assert doctest.testmod(roots_module).failed == 0


def test_mmpretrain_backbone_and_head_both_load(tmp_path: Path) -> None:
    analysis = projects.run_check(
        projects.mmpretrain_resnet("resnet50"), tmp_path / "mm.pth", "torchvision:resnet50"
    )
    assert analysis.key_map["fc.weight"] == "head.fc.weight"
    assert analysis.key_map["layer1.0.conv1.weight"] == "backbone.layer1.0.conv1.weight"
    assert _steps(analysis.alignment.steps) == ["strip 'backbone.'", r"rename '^head\\.' -> ''"]
    assert analysis.verdict is Verdict.COMPATIBLE
    assert not analysis.explanations.new_modules
    assert_message_agrees(analysis.message, facts_of_analysis(analysis))


def test_mmpretrain_merge_uses_the_combined_mapping(tmp_path: Path) -> None:
    obj = projects.mmpretrain_resnet("resnet18", meta=False)
    path = tmp_path / "mm18.pth"
    analysis = projects.run_check(obj, path, "torchvision:resnet18")
    merged = projects.merge(path, analysis, torchvision.models.resnet18)
    state = obj["state_dict"]
    assert torch.equal(merged["fc.weight"], state["head.fc.weight"])
    assert torch.equal(
        merged["layer2.0.downsample.0.weight"], state["backbone.layer2.0.downsample.0.weight"]
    )
    torchvision.models.resnet18().load_state_dict(merged, strict=True)


def test_a_root_that_loads_under_the_winner_keeps_it() -> None:
    model = model_of(("conv.w", (8, 4)), ("fc.w", (2, 8)))
    ckpt = ckpt_of(("module.conv.w", (8, 4)), ("module.fc.w", (2, 8)), ("extra.w", (3,)))
    alignment = auto_align(ckpt, model)
    assert _steps(alignment.steps) == ["strip 'module.'"]


def test_a_root_pair_that_would_rename_other_roots_is_not_used() -> None:
    # 'backbone.head.x' becomes 'head.x' after the strip: a rename of '^head\.' would move it.
    model = model_of(("head.x", (8,)), ("conv.w", (16,)), ("fc.w", (4,)))
    ckpt = ckpt_of(("backbone.head.x", (8,)), ("backbone.conv.w", (16,)), ("head.fc.w", (4,)))
    alignment = auto_align(ckpt, model)
    assert _steps(alignment.steps) == ["strip 'backbone.'"]
    assert alignment.names["head.fc.w"] == "head.fc.w"


def test_a_root_pair_that_explains_little_of_its_root_is_noise() -> None:
    model = model_of(("conv.w", (64,)), ("fc.w", (2,)))
    ckpt = ckpt_of(("backbone.conv.w", (64,)), ("aux.fc.w", (2,)), ("aux.big.w", (500,)))
    alignment = auto_align(ckpt, model)
    assert alignment.names["aux.fc.w"] == "aux.fc.w"


def test_alternatives_are_few_and_load_at_least_half_the_winner(tmp_path: Path) -> None:
    analysis = projects.run_check(
        projects.mmpretrain_resnet("resnet50"), tmp_path / "mm.pth", "torchvision:resnet50"
    )
    best = analysis.result.loaded_parameter_numel
    alternatives = analysis.alignment.alternatives
    assert len(alternatives) <= 5
    assert all(a.loaded_parameter_numel >= best / 2 for a in alternatives)
    moco = projects.run_check(projects.moco_v2(), tmp_path / "moco.pth", "torchvision:resnet50")
    assert [_steps(a.steps) for a in moco.alignment.alternatives] == [["strip 'module.encoder_k.'"]]
