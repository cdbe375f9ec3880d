"""Tests of the timm architecture source."""

from __future__ import annotations

import pytest
import timm

from app.architectures import describe
from app.errors import ArchitectureArgumentsError


def test_describe_timm_resnet18_matches_timm_state_dict() -> None:
    arch = describe("timm:resnet18", {})
    expected = timm.create_model("resnet18", pretrained=False).state_dict()
    assert arch.index.keys() == list(expected)
    assert all(info.shape == tuple(expected[info.key].shape) for info in arch.index)


def test_describe_timm_vit_img_size_changes_pos_embed() -> None:
    default = describe("timm:vit_tiny_patch16_224", {})
    larger = describe("timm:vit_tiny_patch16_224", {"img_size": 384})
    assert default.index.tensors["pos_embed"].shape == (1, 197, 192)
    assert larger.index.tensors["pos_embed"].shape == (1, 577, 192)


def test_describe_timm_bad_kwarg_quotes_the_constructor() -> None:
    with pytest.raises(
        ArchitectureArgumentsError, match="unexpected keyword argument 'num_clases'"
    ):
        describe("timm:resnet18", {"num_clases": 10})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pretrained": True},
        {"checkpoint_path": "/etc/passwd"},
        {"pretrained_cfg_overlay": {"file": "/tmp/w.pth"}},
        {"pretrained_cfg_overlay": {"url": "https://example.com/w.pth"}},
        {"pretrained_cfg": {"hf_hub_id": "timm/resnet18.a1_in1k"}},
    ],
)
def test_describe_timm_refuses_weight_locations(kwargs: dict[str, object]) -> None:
    with pytest.raises(ArchitectureArgumentsError, match="never downloads weights"):
        describe("timm:resnet18", kwargs)
