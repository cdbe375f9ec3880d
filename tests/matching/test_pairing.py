"""Issue 12, structure-aware alignment: tensors paired by order and shape across libraries
(real timm and torchvision classes, tiny configs), applied only when unambiguous, otherwise
suggested as a ``key_map``; never crosswise. Forward tests prove the mappings."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import pytest

from app.enums import TransformKind
from app.matching.analysis import Analysis, MatchOptions, analyse
from app.matching.pairing import pair_by_structure
from app.schemas import Verdict
from app.tensors import ArchitectureIndex, CheckpointIndex, TensorIndex, TensorInfo, TensorKind

if TYPE_CHECKING:
    import torch

ModelIndex = Callable[["torch.nn.Module"], TensorIndex]
CkptIndex = Callable[[Mapping[str, "torch.Tensor"]], TensorIndex]


def _analyse(
    ckpt: TensorIndex, model: TensorIndex, options: MatchOptions | None = None
) -> Analysis:
    arch = ArchitectureIndex("plugin:m", "plugin", {}, model)
    return analyse(CheckpointIndex("safetensors", ckpt), arch, options or MatchOptions())


def _load(model: torch.nn.Module, state: Mapping[str, torch.Tensor], analysis: Analysis) -> None:
    model.load_state_dict({m: state[c] for m, c in analysis.key_map.items()}, strict=True)


def test_pairing_applies_an_unambiguous_mapping_and_the_outputs_agree(
    model_index: ModelIndex, checkpoint_index: CkptIndex
) -> None:
    torch = pytest.importorskip("torch")
    from torch import nn

    class Named(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3)
            self.bn1 = nn.BatchNorm2d(8)
            self.conv2 = nn.Conv2d(8, 8, 3)
            self.bn2 = nn.BatchNorm2d(8)
            self.fc = nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.bn1(self.conv1(x)))
            x = torch.relu(self.bn2(self.conv2(x)))
            return self.fc(x.mean((2, 3)))

    class Pool(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean((2, 3))

    torch.manual_seed(0)
    source = nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        Pool(),
        nn.Linear(8, 4),
    ).eval()
    for bn in (source[1], source[4]):
        bn.running_mean.uniform_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_()
    state = source.state_dict()
    target = Named().eval()
    analysis = _analyse(checkpoint_index(state), model_index(target))
    assert analysis.verdict is Verdict.COMPATIBLE, analysis.message
    kinds = [s.transform.kind for s in analysis.alignment.steps]
    assert kinds[-1] is TransformKind.KEY_MAP
    assert not analysis.suggestions
    _load(target, state, analysis)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(source(x), target(x), atol=1e-6)


def test_pairing_never_maps_swapped_same_shaped_blocks_crosswise() -> None:
    p = TensorKind.PARAMETER
    model = TensorIndex.from_infos(
        [TensorInfo(f"body.block{i}.weight", (4, 4), "float32", p) for i in (1, 2)]
    )
    ckpt = TensorIndex.from_infos(
        [TensorInfo(f"enc.block{i}.weight", (4, 4), "float32") for i in (2, 1)]
    )
    pairing = pair_by_structure({k: k for k in ckpt.tensors}, ckpt, model)
    crosswise = {
        "enc.block2.weight": "body.block1.weight",
        "enc.block1.weight": "body.block2.weight",
    }
    assert pairing is None or not set(pairing.mapping.items()) & set(crosswise.items())
    analysis = _analyse(ckpt, model)
    assert not set(analysis.key_map.items()) & {(v, k) for k, v in crosswise.items()}


def test_pairing_suggests_a_key_map_for_timm_vit_into_torchvision(
    model_index: ModelIndex, checkpoint_index: CkptIndex
) -> None:
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    source = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10
    ).eval()
    target = VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=128,
        num_classes=10,
    ).eval()
    state = source.state_dict()
    ckpt, model = checkpoint_index(state), model_index(target)
    analysis = _analyse(ckpt, model)
    # pos_embed comes before patch_embed in timm and after conv_proj in torchvision: only suggested
    assert analysis.verdict is not Verdict.COMPATIBLE
    assert len(analysis.suggestions) == 1
    suggestion = analysis.suggestions[0]
    assert suggestion.verdict is Verdict.COMPATIBLE
    assert suggestion.loaded_parameter_fraction == 1.0
    mapping = suggestion.options["key_map"]
    assert isinstance(mapping, dict)
    assert mapping["blocks.1.attn.qkv.weight"] == (
        "encoder.layers.encoder_layer_1.self_attention.in_proj_weight"
    )
    applied = _analyse(ckpt, model, MatchOptions(key_map=tuple(mapping.items())))
    assert applied.verdict is Verdict.COMPATIBLE
    _load(target, state, applied)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(source(x), target(x), atol=1e-5)


def test_pairing_does_not_run_when_prefix_alignment_loads_enough(
    model_index: ModelIndex, checkpoint_index: CkptIndex
) -> None:
    pytest.importorskip("torch")
    from torchvision.models import resnet18

    model = resnet18(num_classes=10)
    state = {f"module.{k}": v for k, v in resnet18().state_dict().items()}
    analysis = _analyse(checkpoint_index(state), model_index(model))
    assert not any(s.transform.kind is TransformKind.KEY_MAP for s in analysis.alignment.steps)
    assert not analysis.suggestions  # the new head is expected, not paired with anything


def test_pairing_of_a_file_in_sorted_key_order_maps_no_block_to_another(
    model_index: ModelIndex, checkpoint_index: CkptIndex
) -> None:
    """safetensors stores keys sorted (``blocks.10`` before ``blocks.2``): order alone would
    map block 10 onto layer 2; the names' block numbers veto every such pair."""
    pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    from torchvision.models.vision_transformer import VisionTransformer

    source = timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=16, depth=12, num_heads=2, num_classes=10
    )
    target = VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=12,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=64,
        num_classes=10,
    )
    state = dict(sorted(source.state_dict().items()))
    analysis = _analyse(checkpoint_index(state), model_index(target))
    proposed = [dict(s.options["key_map"]) for s in analysis.suggestions]  # type: ignore[call-overload]
    for mapping in [analysis.key_map, *proposed]:
        for ckpt_key, model_key in mapping.items():
            if ckpt_key.startswith("blocks."):
                block = ckpt_key.split(".")[1]
                assert f"encoder_layer_{block}." in model_key, (ckpt_key, model_key)
