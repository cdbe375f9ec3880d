"""Tests of app.matching.attention: fused and split attention projections."""

from __future__ import annotations

import doctest

import app.matching.attention as attention_module
from app.matching.attention import explain_fused_attention
from app.schemas import Reason

SPLIT = {f"attn.{n}.weight": (8, 8) for n in ("q_proj", "k_proj", "v_proj")}


def test_explain_fused_attention_docstring_example_runs() -> None:
    assert doctest.testmod(attention_module).failed == 0


def test_explain_fused_attention_names_the_file_keys_and_slices() -> None:
    why = explain_fused_attention(
        SPLIT, {"attn.qkv.weight": (24, 8)}, sources={"attn.qkv.weight": "blocks.0.attn.qkv.weight"}
    )
    assert {e.reason for e in why.values()} == {Reason.RESHAPED}
    assert why["attn.k_proj.weight"].detail == (
        "The checkpoint fuses query, key, value in 'blocks.0.attn.qkv.weight': this key tensor "
        "is its slice 8:16 along dim 0; split it out. Not merged."
    )


def test_explain_fused_attention_needs_every_part_and_shapes_that_concatenate() -> None:
    two = {k: v for k, v in SPLIT.items() if "v_proj" not in k}
    assert explain_fused_attention(two, {"attn.qkv.weight": (24, 8)}, sources={}) == {}
    assert explain_fused_attention(SPLIT, {"attn.qkv.weight": (24, 4)}, sources={}) == {}
    assert explain_fused_attention(SPLIT, {"other.qkv.weight": (24, 8)}, sources={}) == {}


def test_explain_fused_attention_kv_holds_two_parts() -> None:
    split = {"cross.k.weight": (8, 8), "cross.v.weight": (8, 8)}
    why = explain_fused_attention({"cross.kv.weight": (16, 8)}, split, sources={})
    assert "(key, value, in that order) along dim 0" in why["cross.kv.weight"].detail


def test_explain_fused_attention_conv1d_and_interleaved_layouts_are_named() -> None:
    why = explain_fused_attention({"h.attn.c_attn.weight": (8, 24)}, {
        f"h.attn.{n}.weight": (8, 8) for n in ("query", "key", "value")
    }, sources={})  # fmt: skip
    assert "along dim 1 (the fused weight is stored (in, out)" in why["h.attn.c_attn.weight"].detail
    neox = {f"l.attention.{n}.weight": (8, 8) for n in ("q_proj", "k_proj", "v_proj")}
    why = explain_fused_attention(neox, {"l.attention.query_key_value.weight": (24, 8)}, sources={})
    assert "interleave per attention head" in why["l.attention.q_proj.weight"].detail


def test_explain_fused_attention_multihead_attention_tensors() -> None:
    """nn.MultiheadAttention holds ``in_proj_weight``, or ``q_proj_weight``... when kdim differs."""
    split = {f"mha.{r}_proj_weight": (8, 8) for r in "qkv"}
    why = explain_fused_attention({"mha.in_proj_weight": (24, 8)}, split, sources={})
    assert set(why) == {"mha.in_proj_weight", *split}
