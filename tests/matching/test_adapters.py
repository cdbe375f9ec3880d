"""Adapters in matching: which keys each one loads, how they count, and what it refuses."""

from __future__ import annotations

from collections.abc import Sequence

from app.enums import Reason, Verdict
from app.matching.analysis import Analysis, MatchOptions, analyse
from app.tensors import ArchitectureIndex, CheckpointIndex, TensorIndex, TensorInfo, TensorKind

Shapes = dict[str, tuple[int, ...]]


def _analyse(model: Shapes, ckpt: Shapes, adapt: Sequence[str]) -> Analysis:
    p = TensorKind.PARAMETER
    model_index = TensorIndex.from_infos([TensorInfo(k, s, "float32", p) for k, s in model.items()])
    ckpt_index = TensorIndex.from_infos([TensorInfo(k, s, "float32") for k, s in ckpt.items()])
    return analyse(
        CheckpointIndex("safetensors", ckpt_index),
        ArchitectureIndex("plugin:net", "plugin", {}, model_index),
        MatchOptions(adapt=tuple(adapt)),
    )


def _reasons(analysis: Analysis) -> set[Reason]:
    return {e.reason for e in analysis.explanations.all()}


def test_apply_adapters_nothing_asked_changes_nothing() -> None:
    model = {"h.0.c_fc.weight": (24, 8), "h.0.c_fc.bias": (24,)}
    ckpt = {"h.0.c_fc.weight": (8, 24), "h.0.c_fc.bias": (24,)}
    analysis = _analyse(model, ckpt, [])
    assert analysis.adaptations == () and analysis.adapter_notes == ()
    assert _reasons(analysis) == {Reason.TRANSPOSED}
    assert analysis.verdict is Verdict.PARTIAL


def test_apply_adapters_transpose_counts_as_loaded_with_a_note() -> None:
    model = {"h.0.c_fc.weight": (24, 8), "h.0.c_proj.weight": (8, 8), "h.0.c_proj.bias": (8,)}
    ckpt = {"h.0.c_fc.weight": (8, 24), "h.0.c_proj.weight": (8, 8), "h.0.c_proj.bias": (8,)}
    analysis = _analyse(model, ckpt, ["transpose"])
    assert [a.key for a in analysis.adaptations] == ["h.0.c_fc.weight", "h.0.c_proj.weight"]
    assert analysis.result.loaded_parameter_fraction == 1.0
    assert analysis.verdict is Verdict.COMPATIBLE
    assert analysis.key_map == {"h.0.c_proj.bias": "h.0.c_proj.bias"}  # adapted ones computed
    assert analysis.adapter_notes[0].startswith("Adapter transpose: 2 keys loaded through it")
    assert set(analysis.plan.frozen) == set(model)


def test_apply_adapters_input_channels_refuses_what_timm_cannot_convert() -> None:
    model = {"conv1.weight": (8, 3, 3, 3), "fc.weight": (2, 8)}
    ckpt = {"conv1.weight": (8, 4, 3, 3), "fc.weight": (2, 8)}
    analysis = _analyse(model, ckpt, ["input_channels"])
    assert analysis.adaptations == ()
    detail = analysis.explanations.shape_mismatched["conv1.weight"].detail
    assert "Not adapted: timm's adapt_input_conv converts" in detail
    assert "not 4 into 3" in detail


def test_apply_adapters_image_position_keeps_prefix_tokens() -> None:
    model = {"pos_embed": (1, 1 + 6 * 6, 8), "patch_embed.proj.weight": (8, 3, 16, 16)}
    ckpt = {"pos_embed": (1, 1 + 14 * 14, 8), "patch_embed.proj.weight": (8, 3, 16, 16)}
    (a,) = _analyse(model, ckpt, ["position_embedding"]).adaptations
    assert (a.operation, a.prefix_tokens, a.old_grid, a.new_grid) == ("image", 1, (14, 14), (6, 6))


def test_apply_adapters_relative_table_gets_the_models_window() -> None:
    key = "layers.0.blocks.0.attn.relative_position_bias_table"
    (a,) = _analyse({key: (23 * 23, 3)}, {key: (13 * 13, 3)}, ["position_embedding"]).adaptations
    assert (a.operation, a.new_grid) == ("relative", (12, 12))
    assert "window 7x7 -> 12x12" in a.detail


def test_apply_adapters_text_table_extended() -> None:
    key = "embeddings.position_embeddings.weight"
    model = {key: (1024, 8), "embeddings.word_embeddings.weight": (50, 8)}
    ckpt = {key: (512, 8), "embeddings.word_embeddings.weight": (50, 8)}
    analysis = _analyse(model, ckpt, ["position_embedding"])
    (a,) = analysis.adaptations
    assert a.operation == "text" and "extended from 512 to 1024 rows" in a.detail
    assert analysis.result.loaded_parameter_fraction == 1.0


def test_apply_adapters_qkv_fuses_three_equal_blocks() -> None:
    model = {"blk.attn.qkv.weight": (24, 8), "blk.attn.qkv.bias": (24,)}
    ckpt = {
        f"blk.attn.{r}.{leaf}": s for r in "qkv" for leaf, s in (("weight", (8, 8)), ("bias", (8,)))
    }
    analysis = _analyse(model, ckpt, ["qkv"])
    fused = {a.key: a for a in analysis.adaptations}
    assert fused["blk.attn.qkv.weight"].checkpoint_keys == tuple(
        f"blk.attn.{r}.weight" for r in "qkv"
    )
    assert analysis.result.unexpected == ()
    assert analysis.verdict is Verdict.COMPATIBLE


def test_apply_adapters_qkv_refuses_interleaved_and_grouped_query_layouts() -> None:
    neox = _analyse(
        {f"l.attention.{r}.weight": (8, 8) for r in ("query", "key", "value")},
        {"l.attention.query_key_value.weight": (24, 8)},
        ["qkv"],
    )
    assert neox.adaptations == ()
    assert "Not adapted: GPT-NeoX, BLOOM and Falcon interleave" in (
        neox.explanations.missing["l.attention.query.weight"].detail
    )
    gqa = _analyse(
        {
            "l.attn.q_proj.weight": (8, 8),
            "l.attn.k_proj.weight": (4, 8),
            "l.attn.v_proj.weight": (4, 8),
        },
        {"l.attn.qkv_proj.weight": (16, 8)},
        ["qkv"],
    )
    assert gqa.adaptations == ()
    assert "(grouped-query attention)" in gqa.explanations.missing["l.attn.k_proj.weight"].detail
    assert any("left as they are" in n for n in gqa.adapter_notes)
