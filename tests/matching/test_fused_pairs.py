"""Fused attention projections paired with their split parts: only a unique candidate in the
same block, only the layout the qkv adapter proves, never a name already taken."""

from __future__ import annotations

import doctest

import app.matching.fused_pairs as fused_module
import app.matching.pair_evidence as evidence_module
from app.matching.fused_pairs import pair_fused
from app.matching.pair_evidence import positions
from app.tensors import TensorInfo

ROLES = ("query", "key", "value")


def _split(module: str, rows: int = 4) -> list[TensorInfo]:
    return [TensorInfo(f"{module}.{r}.weight", (rows, 4), "f") for r in ROLES]


def _pair(
    ck: list[TensorInfo], md: list[TensorInfo], reserved: set[str] | None = None
) -> dict[str, str]:
    return pair_fused(
        ck,
        md,
        ck_positions=positions(ck),
        md_positions=positions(md),
        reserved=reserved or set(),
    ).mapping


def test_fused_pairs_and_pair_evidence_docstring_examples_run() -> None:
    assert doctest.testmod(fused_module).failed == 0
    assert doctest.testmod(evidence_module).failed == 0


def test_fused_pairs_follow_block_positions() -> None:
    md = [TensorInfo(f"blocks.{i}.attn.qkv.weight", (12, 4), "f") for i in range(3)]
    ck = [t for i in (0, 1, 2) for t in _split(f"encoder.layer.{i}.attention")]
    mapping = _pair(ck, md)
    assert mapping["encoder.layer.2.attention.value.weight"] == "blocks.2.attn.value.weight"
    assert len(mapping) == 9


def test_fused_pairs_leave_two_candidates_in_one_block_alone() -> None:
    """A decoder block with self- and cross-attention of one shape: which is which is unknown."""
    md = [TensorInfo("blocks.0.attn.qkv.weight", (12, 4), "f")]
    ck = _split("layer.self_attn") + _split("layer.cross_attn")
    assert _pair(ck, md) == {}


def test_fused_pairs_refuse_unproven_layouts_and_taken_names() -> None:
    interleaved = [TensorInfo("h.attn.query_key_value.weight", (12, 4), "f")]
    assert _pair(_split("layer.attention"), interleaved) == {}
    unequal = [TensorInfo("blk.attn.qkv.weight", (12, 4), "f")]
    parts = [
        TensorInfo(f"layer.att.{r}.weight", (n, 4), "f")
        for r, n in zip(ROLES, (6, 3, 3), strict=True)
    ]
    assert _pair(parts, unequal) == {}
    fused = [TensorInfo("blk.attn.qkv.weight", (12, 4), "f")]
    assert _pair(_split("layer.att"), fused, reserved={"blk.attn.query.weight"}) == {}


def test_fused_checkpoint_tensor_is_named_beside_the_model_s_parts() -> None:
    ck = [TensorInfo("blocks.0.attn.qkv.bias", (12,), "f")]
    md = [TensorInfo(f"vit.layer.attention.{r}.bias", (4,), "f") for r in ROLES]
    assert _pair(ck, md) == {"blocks.0.attn.qkv.bias": "vit.layer.attention.qkv.bias"}
