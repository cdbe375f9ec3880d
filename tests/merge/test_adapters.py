"""Adapters: merged tensors equal the libraries' own helpers, and merged models compute the same."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from timm.layers.pos_embed import resample_abs_pos_embed
from timm.layers.pos_embed_rel import resize_rel_pos_bias_table
from timm.models import adapt_input_conv
from torch import nn
from torch.nn import functional as F  # noqa: N812

from app.enums import Reason
from app.matching.adapters import Adaptation
from app.matching.analysis import Analysis, MatchOptions, analyse
from app.merge.adapters import adapt_tensor
from app.merge.streaming import stream_merge
from app.readers import read_checkpoint
from app.readers.checkpoint import open_tensors  # app.readers exports it after the refactor
from app.tensors import ArchitectureIndex
from tests.matching.conftest import build_model_index

Factory = Callable[[], nn.Module]


def _merge(
    state: dict[str, torch.Tensor], factory: Factory, tmp_path: Path, adapt: Sequence[str]
) -> tuple[Analysis, dict[str, torch.Tensor]]:
    """The worker's path: read the file, analyse with ``adapt``, stream the merge, load it."""
    ckpt, out = tmp_path / "ckpt.safetensors", tmp_path / "merged.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, ckpt)
    with torch.device("meta"):
        meta = factory()
    architecture = ArchitectureIndex("plugin:target", "plugin", {}, build_model_index(meta))
    analysis = analyse(read_checkpoint(ckpt), architecture, MatchOptions(adapt=tuple(adapt)))
    with open_tensors(ckpt, state_dict_path=analysis.checkpoint.state_dict_path) as source:
        merged = stream_merge(
            meta,
            source,
            out,
            key_map=analysis.key_map,
            adaptations={a.key: a for a in analysis.adaptations},
            build_cpu=factory,
        )
    assert merged.loaded_keys == len(analysis.key_map) + len(analysis.adaptations)
    return analysis, load_file(out)


def _loaded(factory: Factory, state: dict[str, torch.Tensor]) -> nn.Module:
    model = factory()
    model.load_state_dict(state, strict=True)
    return model.eval()


def _seeded(factory: Factory) -> nn.Module:
    torch.manual_seed(1)
    return factory().eval()


def test_adapt_tensor_input_channels_is_timms_adapt_input_conv() -> None:
    weight = torch.randn(8, 3, 3, 3)
    for channels in (1, 2, 4, 7):
        a = Adaptation("w", "input_channels", "input_channels", ("w",), "", (8, channels, 3, 3))
        got = adapt_tensor(a, lambda _: weight)
        assert torch.equal(got, adapt_input_conv(channels, weight.clone()))
    assert torch.equal(weight, weight.clone())  # the file's tensor is not scaled in place


def test_adapt_tensor_image_position_is_timms_resample_abs_pos_embed() -> None:
    table = torch.randn(1, 1 + 14 * 14, 16)
    a = Adaptation(
        "pos_embed", "position_embedding", "image", ("pos_embed",), "", (1, 1 + 8 * 8, 16),
        prefix_tokens=1, old_grid=(14, 14), new_grid=(8, 8),
    )  # fmt: skip
    expected = resample_abs_pos_embed(table, new_size=[8, 8], num_prefix_tokens=1)
    assert torch.equal(adapt_tensor(a, lambda _: table), expected)


@pytest.mark.filterwarnings("ignore::UserWarning:timm.layers.interpolate")
def test_adapt_tensor_relative_table_is_timms_resize_rel_pos_bias_table() -> None:
    table = torch.randn(13 * 13, 3)  # window 7
    a = Adaptation(
        "t", "position_embedding", "relative", ("t",), "", (23 * 23, 3), new_grid=(12, 12)
    )
    expected = resize_rel_pos_bias_table(table, new_window_size=(12, 12), new_bias_shape=(529, 3))
    assert torch.equal(adapt_tensor(a, lambda _: table), expected)


def test_adapt_tensor_text_table_truncates_or_repeats_rows() -> None:
    table = torch.arange(12.0).reshape(4, 3)
    longer = Adaptation("p", "position_embedding", "text", ("p",), "", (10, 3))
    shorter = Adaptation("p", "position_embedding", "text", ("p",), "", (2, 3))
    assert torch.equal(adapt_tensor(longer, lambda _: table)[:4], table)
    assert torch.equal(adapt_tensor(longer, lambda _: table)[4:8], table)
    assert torch.equal(adapt_tensor(shorter, lambda _: table), table[:2])


def test_adapt_tensor_refuses_a_result_of_another_shape() -> None:
    a = Adaptation("w", "transpose", "transpose", ("w",), "", (3, 3))
    with pytest.raises(ValueError, match=r"made \[2, 3\] for 'w'"):
        adapt_tensor(a, lambda _: torch.zeros(3, 2))


def test_input_channels_forward_4_channel_timm_resnet_stem(tmp_path: Path) -> None:
    def source() -> nn.Module:
        return timm.create_model("resnet10t", num_classes=5)

    def target() -> nn.Module:
        return timm.create_model("resnet10t", num_classes=5, in_chans=4)

    state = _seeded(source).state_dict()
    analysis, merged = _merge(state, target, tmp_path, ["input_channels"])
    assert analysis.result.loaded_parameter_fraction == 1.0
    assert analysis.verdict.value == "compatible"
    assert [(a.key, a.adapter) for a in analysis.adaptations] == [
        ("conv1.0.weight", "input_channels")
    ]
    # timm's own path: adapt_input_conv on the pretrained stem, then load.
    reference = {**state, "conv1.0.weight": adapt_input_conv(4, state["conv1.0.weight"].clone())}
    x = torch.randn(2, 4, 64, 64)
    with torch.no_grad():
        got, want = _loaded(target, merged)(x), _loaded(target, reference)(x)
    torch.testing.assert_close(got, want)
    assert torch.equal(merged["conv1.0.weight"], reference["conv1.0.weight"])


def test_position_embedding_forward_timm_vit_at_another_image_size(tmp_path: Path) -> None:
    def source() -> nn.Module:
        return timm.create_model("vit_tiny_patch16_224", num_classes=3, depth=2)

    def target() -> nn.Module:
        return timm.create_model("vit_tiny_patch16_224", num_classes=3, depth=2, img_size=96)

    trained = _seeded(source)
    state = trained.state_dict()
    analysis, merged = _merge(state, target, tmp_path, ["position_embedding"])
    assert analysis.result.loaded_parameter_fraction == 1.0
    assert "position_embedding_resized" not in {e.reason.value for e in analysis.explanations.all()}
    # timm's own loader converts the same tensors with its checkpoint filter.
    from timm.models.vision_transformer import checkpoint_filter_fn

    model = target()
    reference = checkpoint_filter_fn(dict(state), model)
    assert torch.equal(merged["pos_embed"], reference["pos_embed"])
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(_loaded(target, merged)(x), _loaded(target, reference)(x))


class SplitAttention(nn.Module):
    """timm's ``Attention`` with query, key and value in three Linears (as transformers' ViT)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q, self.k, self.v = (nn.Linear(dim, dim) for _ in range(3))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, **_: object) -> torch.Tensor:
        b, n, c = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.q(x)), heads(self.k(x)), heads(self.v(x)))
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


def _vit() -> nn.Module:
    return timm.create_model("vit_tiny_patch16_224", num_classes=3, depth=2, img_size=64)


def _split_vit() -> nn.Module:
    model = _vit()
    for block in model.blocks:  # type: ignore[union-attr]
        block.attn = SplitAttention(192, 3)
    return model


@pytest.mark.parametrize(("source", "target"), [(_vit, _split_vit), (_split_vit, _vit)])
def test_qkv_forward_timm_vit_fused_and_split(
    tmp_path: Path, source: Factory, target: Factory
) -> None:
    trained = _seeded(source)
    analysis, merged = _merge(trained.state_dict(), target, tmp_path, ["qkv"])
    assert analysis.result.loaded_parameter_fraction == 1.0
    assert analysis.verdict.value == "compatible"
    assert {a.adapter for a in analysis.adaptations} == {"qkv"}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(_loaded(target, merged)(x), trained(x))


class MhaBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)


class SplitBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.Module()
        self.attn.q_proj, self.attn.k_proj, self.attn.v_proj = (nn.Linear(16, 16) for _ in "qkv")
        self.attn.out_proj = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, n, 4, 4).transpose(1, 2)

        a = self.attn
        out = F.scaled_dot_product_attention(
            heads(a.q_proj(x)), heads(a.k_proj(x)), heads(a.v_proj(x))
        )
        return a.out_proj(out.transpose(1, 2).reshape(b, n, c))


def test_qkv_forward_torchvision_style_in_proj_weight(tmp_path: Path) -> None:
    trained = _seeded(MhaBlock)
    analysis, merged = _merge(trained.state_dict(), SplitBlock, tmp_path, ["qkv"])
    assert analysis.result.loaded_parameter_fraction == 1.0
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        want = trained.attn(x, x, x, need_weights=False)[0]
        torch.testing.assert_close(_loaded(SplitBlock, merged)(x), want)


class Conv1DBlock(nn.Module):
    """GPT-2's block layout: transformers' Conv1D stores (in, out)."""

    def __init__(self) -> None:
        from transformers.pytorch_utils import Conv1D

        super().__init__()
        self.h = nn.ModuleList([nn.Module()])
        self.h[0].c_fc, self.h[0].c_proj = Conv1D(24, 8), Conv1D(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h[0].c_proj(self.h[0].c_fc(x)[..., :8])


class LinearBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.h = nn.ModuleList([nn.Module()])
        self.h[0].c_fc, self.h[0].c_proj = nn.Linear(8, 24), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h[0].c_proj(self.h[0].c_fc(x)[..., :8])


@pytest.mark.parametrize(
    ("source", "target"), [(Conv1DBlock, LinearBlock), (LinearBlock, Conv1DBlock)]
)
def test_transpose_forward_conv1d_and_linear_square_weight_included(
    tmp_path: Path, source: Factory, target: Factory
) -> None:
    trained = _seeded(source)
    for p in trained.parameters():
        nn.init.normal_(p)  # Conv1D starts its biases at zero
    analysis, merged = _merge(trained.state_dict(), target, tmp_path, ["transpose"])
    assert {a.key for a in analysis.adaptations} == {"h.0.c_fc.weight", "h.0.c_proj.weight"}
    assert analysis.result.loaded_parameter_fraction == 1.0
    x = torch.randn(3, 8)
    with torch.no_grad():
        torch.testing.assert_close(_loaded(target, merged)(x), trained(x))


def test_without_adapt_the_keys_keep_their_reasons_and_initial_values(tmp_path: Path) -> None:
    state = _seeded(Conv1DBlock).state_dict()
    analysis, merged = _merge(state, LinearBlock, tmp_path, [])
    assert analysis.adaptations == ()
    assert analysis.explanations.shape_mismatched["h.0.c_fc.weight"].reason is Reason.TRANSPOSED
    assert not torch.equal(merged["h.0.c_fc.weight"], state["h.0.c_fc.weight"].t())
