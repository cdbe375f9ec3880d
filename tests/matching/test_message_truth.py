"""``summary.message`` never contradicts the key lists (issue 10, defect 10): checked on every
scenario built here from real architectures; tests/api/test_scenarios.py checks its own."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision

from tests.matching import projects
from tests.matching.truth import assert_message_agrees, facts_of_analysis


def _meta_state(factory: Callable[[], torch.nn.Module]) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return dict(factory().state_dict())


def _detector() -> dict[str, torch.Tensor]:
    """torchvision ``fasterrcnn_resnet50_fpn().state_dict()``, as its references save it."""
    return _meta_state(
        lambda: torchvision.models.detection.fasterrcnn_resnet50_fpn(
            weights=None, weights_backbone=None
        )
    )


def _data_parallel_resnet50() -> dict[str, Any]:
    state = _meta_state(torchvision.models.resnet50)
    return {"epoch": 3, "state_dict": {"module." + k: v for k, v in state.items()}}


def _timm_efficientnet() -> dict[str, torch.Tensor]:
    import timm

    return _meta_state(lambda: timm.create_model("efficientnet_b0"))


def _two_generators() -> dict[str, Any]:
    state = _meta_state(torchvision.models.resnet18)
    return {"state_dict": {p + k: v for p in ("net_a.", "net_b.") for k, v in state.items()}}


SCENARIOS: dict[str, tuple[Callable[[], Any], str, dict[str, Any]]] = {
    "detector_into_resnet50": (_detector, "torchvision:resnet50", {}),
    "resnet50_into_detector": (
        _data_parallel_resnet50,
        "torchvision:fasterrcnn_resnet50_fpn",
        {"weights_backbone": None},
    ),
    "resnet50_into_resnet101": (_data_parallel_resnet50, "torchvision:resnet101", {}),
    "resnet50_ten_classes": (_data_parallel_resnet50, "torchvision:resnet50", {"num_classes": 10}),
    "moco_v2": (projects.moco_v2, "torchvision:resnet50", {}),
    "moco_v3": (projects.moco_v3, "torchvision:resnet50", {}),
    "dino": (projects.dino_resnet, "torchvision:resnet50", {}),
    "mmpretrain": (projects.mmpretrain_resnet, "torchvision:resnet18", {}),
    "timm_efficientnet": (_timm_efficientnet, "torchvision:efficientnet_b0", {}),
    "two_generators": (_two_generators, "torchvision:resnet18", {}),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_message_agrees_with_the_keys(name: str, tmp_path: Path) -> None:
    build, architecture, kwargs = SCENARIOS[name]
    analysis = projects.run_check(build(), tmp_path / f"{name}.pt", architecture, kwargs)
    assert_message_agrees(analysis.message, facts_of_analysis(analysis))


def test_detector_into_resnet50_names_the_unused_parts_not_the_loaded_backbone(
    tmp_path: Path,
) -> None:
    analysis = projects.run_check(_detector(), tmp_path / "frcnn.pt", "torchvision:resnet50")
    assert analysis.key_map["layer1.0.conv1.weight"] == "backbone.body.layer1.0.conv1.weight"
    assert "The checkpoint's backbone.fpn, rpn, roi_heads are not used" in analysis.message
    assert "The checkpoint's backbone," not in analysis.message


def test_moco_v2_names_the_key_encoder_unused_not_the_wrapper(tmp_path: Path) -> None:
    analysis = projects.run_check(projects.moco_v2(), tmp_path / "moco.pt", "torchvision:resnet50")
    assert "module.encoder_k" in analysis.explanations.checkpoint_only_modules
    assert "module" not in analysis.explanations.checkpoint_only_modules
