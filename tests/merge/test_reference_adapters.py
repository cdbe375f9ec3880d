"""The streaming merge against its in-memory definition, for merges through each adapter.

``merge_state_dict`` takes the same adapter plan as ``stream_merge`` (``Analysis.adaptations``)
and computes adapted keys with the same function, so the bit-for-bit check of the streaming
merge covers adapted keys too: every adapter and operation, both dtype policies, a float16
checkpoint into float32 models (timm's helpers compute in float32 and cast back).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from app.matching.adapters import Adaptation
from app.matching.analysis import MatchOptions, analyse
from app.merge.reference import DtypePolicy, merge_state_dict
from app.merge.streaming import stream_merge
from app.readers import load_tensors, read_checkpoint
from app.readers.checkpoint import open_tensors
from app.tensors import ArchitectureIndex
from tests.matching.conftest import build_model_index
from tests.merge.test_adapters import (
    Conv1DBlock,
    LinearBlock,
    MhaBlock,
    SplitBlock,
    _split_vit,
    _vit,
)

Factory = Callable[[], nn.Module]


class _Relative(nn.Module):
    """A Swin-style attention block: its bias table follows the window ((2W-1)^2 rows)."""

    def __init__(self, window: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Module()])
        table = torch.zeros((2 * window - 1) ** 2, 3)
        self.layers[0].attn = nn.Module()
        self.layers[0].attn.relative_position_bias_table = nn.Parameter(table)
        self.layers[0].attn.proj = nn.Linear(6, 6)


class _Text(nn.Module):
    """BERT's embeddings: a text position table as long as the longest sequence."""

    def __init__(self, positions: int) -> None:
        super().__init__()
        self.embeddings = nn.Module()
        self.embeddings.word_embeddings = nn.Embedding(50, 8)
        self.embeddings.position_embeddings = nn.Embedding(positions, 8)


def _timm(name: str, **kwargs: object) -> Factory:
    return lambda: timm.create_model(name, num_classes=3, **kwargs)


CASES: list[tuple[str, Factory, Factory, list[str], set[str]]] = [
    ("conv1d_to_linear", Conv1DBlock, LinearBlock, ["transpose"], {"transpose"}),
    ("linear_to_conv1d", LinearBlock, Conv1DBlock, ["transpose"], {"transpose"}),
    (
        "stem_3_to_4",
        _timm("resnet10t"),
        _timm("resnet10t", in_chans=4),
        ["input_channels"],
        {"input_channels"},
    ),
    (
        "stem_3_to_1",
        _timm("resnet10t"),
        _timm("resnet10t", in_chans=1),
        ["input_channels"],
        {"input_channels"},
    ),
    (
        "vit_64_to_32",
        _timm("vit_tiny_patch16_224", depth=2, img_size=64),
        _timm("vit_tiny_patch16_224", depth=2, img_size=32),
        ["position_embedding"],
        {"image"},
    ),
    (
        "window_7_to_8",
        lambda: _Relative(7),
        lambda: _Relative(8),
        ["position_embedding"],
        {"relative"},
    ),
    ("text_16_to_40", lambda: _Text(16), lambda: _Text(40), ["position_embedding"], {"text"}),
    ("text_16_to_10", lambda: _Text(16), lambda: _Text(10), ["position_embedding"], {"text"}),
    ("qkv_fuse", _split_vit, _vit, ["qkv"], {"fuse"}),
    ("qkv_split", _vit, _split_vit, ["qkv"], {"split"}),
    ("in_proj_split", MhaBlock, SplitBlock, ["qkv"], {"split"}),
]


def _seeded(factory: Factory) -> dict[str, torch.Tensor]:
    torch.manual_seed(2)
    model = factory()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()  # zero-initialised tables and biases would hide a wrong slice
    return {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}


@pytest.mark.filterwarnings("ignore::UserWarning:timm.layers.interpolate")
@pytest.mark.parametrize("policy", ["model", "checkpoint"])
@pytest.mark.parametrize(
    ("source", "target", "adapt", "operations"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_streaming_merge_equals_the_reference_through_each_adapter(
    tmp_path: Path,
    source: Factory,
    target: Factory,
    adapt: Sequence[str],
    operations: set[str],
    policy: DtypePolicy,
) -> None:
    ckpt, out = tmp_path / "ckpt.safetensors", tmp_path / "merged.safetensors"
    save_file(_seeded(source), ckpt)
    with torch.device("meta"):
        meta = target()
    architecture = ArchitectureIndex("plugin:target", "plugin", {}, build_model_index(meta))
    analysis = analyse(read_checkpoint(ckpt), architecture, MatchOptions(adapt=tuple(adapt)))
    plan = {a.key: a for a in analysis.adaptations}
    assert {a.operation for a in plan.values()} == operations
    with open_tensors(ckpt, state_dict_path=analysis.checkpoint.state_dict_path) as source_:
        stream_merge(
            meta,
            source_,
            out,
            key_map=analysis.key_map,
            adaptations=plan,
            build_cpu=target,
            dtype_policy=policy,
        )
    streamed = load_file(out)
    stored = load_tensors(ckpt, keys=read_checkpoint(ckpt).index.keys())
    torch.manual_seed(0)
    reference = merge_state_dict(
        target().state_dict(),
        {key: stored[ckpt_key] for key, ckpt_key in analysis.key_map.items()},
        dtype_policy=policy,
        adaptations=plan,
        checkpoint=stored,
    )
    assert set(streamed) == set(reference)
    for key, value in reference.items():
        assert (streamed[key].shape, streamed[key].dtype) == (value.shape, value.dtype), key
    for key in [*analysis.key_map, *plan]:
        assert torch.equal(
            streamed[key].reshape(-1).view(torch.uint8),
            reference[key].contiguous().reshape(-1).view(torch.uint8),
        ), key
    if policy == "checkpoint":
        assert {reference[key].dtype for key in plan} == {torch.float16}


def test_merge_state_dict_adaptations_need_the_checkpoint() -> None:
    plan = {a.key: a for a in _transpose_plan()}
    with pytest.raises(ValueError, match="adaptations read the checkpoint's tensors"):
        merge_state_dict({"w": torch.zeros(3, 2)}, {}, adaptations=plan)


def test_merge_state_dict_refuses_a_key_both_loaded_and_adapted() -> None:
    plan = {a.key: a for a in _transpose_plan()}
    with pytest.raises(ValueError, match=r"keys both loaded and adapted: \['w'\]"):
        merge_state_dict(
            {"w": torch.zeros(3, 2)},
            {"w": torch.ones(3, 2)},
            adaptations=plan,
            checkpoint={"c": torch.ones(2, 3)},
        )


def test_merge_state_dict_adapted_key_is_the_adapter_s_value() -> None:
    plan = {a.key: a for a in _transpose_plan()}
    stored = {"c": torch.arange(6.0).reshape(2, 3)}
    merged = merge_state_dict({"w": torch.zeros(3, 2)}, {}, adaptations=plan, checkpoint=stored)
    assert torch.equal(merged["w"], stored["c"].t())


def _transpose_plan() -> list[Adaptation]:
    return [Adaptation("w", "transpose", "transpose", ("c",), "", (3, 2))]
