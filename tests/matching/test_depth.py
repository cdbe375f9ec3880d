"""Tests of app.matching.depth: stacks of another depth (issue 10, defect 4)."""

from __future__ import annotations

import doctest
from pathlib import Path

import torch
import torchvision

import app.matching.depth as depth_module
from app.schemas import Reason, Verdict
from tests.checkpoints import save_checkpoint
from tests.matching.scenarios import analyse_file, reasons_under


def _torchvision_weights(name: str, path: Path) -> Path:
    """A torchvision classifier saved as torchvision's own weight files are: the bare
    ``state_dict()`` (random init instead of the ImageNet weights)."""
    torch.manual_seed(0)
    return save_checkpoint(torchvision.models.get_model(name).state_dict(), path)


def test_depth_docstring_examples_run() -> None:
    assert doctest.testmod(depth_module).failed == 0


def test_find_depth_changes_shallower_checkpoint_is_not_a_new_module(tmp_path: Path) -> None:
    """resnet18 (2, 2, 2, 2 blocks) into resnet34 (3, 4, 6, 3): like resnet50 into resnet101,
    the missing blocks sit in the middle of the network, beside loaded blocks of their shape."""
    analysis = analyse_file(_torchvision_weights("resnet18", tmp_path / "r18.pth"), "resnet34")
    assert reasons_under(analysis, "layer3.2") == {"depth_changed", "ignorable"}
    assert reasons_under(analysis, "layer1.2") == {"depth_changed", "ignorable"}
    assert not analysis.explanations.new_modules
    assert analysis.verdict is Verdict.PARTIAL
    detail = analysis.explanations.missing["layer3.2.conv1.weight"].detail
    assert detail.startswith("layer3 has 6 blocks in the model and 2 in the checkpoint")
    assert "layer3 has 6 blocks in the model and 2 in the checkpoint" in analysis.message
    assert "layer3.{2..5}" in analysis.message
    assert "train them" not in analysis.message
    structure = analysis.explanations.structure
    assert structure is not None
    assert [c.stack for c in structure.depth] == ["layer1", "layer2", "layer3", "layer4"]


def test_find_depth_changes_deeper_checkpoint_is_not_merely_unused(tmp_path: Path) -> None:
    analysis = analyse_file(_torchvision_weights("resnet34", tmp_path / "r34.pth"), "resnet18")
    unused = analysis.explanations.unexpected["layer3.5.conv1.weight"]
    assert unused.reason is Reason.DEPTH_CHANGED
    assert "layer3.{2..5}" in unused.detail
    assert analysis.explanations.checkpoint_only_modules == ()
    assert analysis.verdict is Verdict.PARTIAL


def test_find_depth_changes_needs_a_loaded_sibling_of_the_same_shapes(tmp_path: Path) -> None:
    """efficientnet's features.8 (the conv head) follows features.7 but is another block: a
    checkpoint without it is missing a module, not a depth."""
    torch.manual_seed(0)
    state = torchvision.models.efficientnet_b0().state_dict()
    kept = {k: v for k, v in state.items() if not k.startswith("features.8.")}
    analysis = analyse_file(save_checkpoint(kept, tmp_path / "e.pth"), "efficientnet_b0")
    assert reasons_under(analysis, "features.8") == {"new_module", "ignorable"}
    assert analysis.verdict is Verdict.COMPATIBLE_WITH_CHANGES
