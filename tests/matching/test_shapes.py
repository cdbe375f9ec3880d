"""Tests of app.matching.shapes."""

from __future__ import annotations

from app.matching.compare import ShapeMismatch
from app.matching.shapes import explain_shape, find_stem, head_cause, position_kind
from app.schemas import Reason
from tests.matching.helpers import model_of


def test_head_cause_names_num_classes_only_when_the_kwargs_say_so() -> None:
    assert head_cause(1000, 10, {"num_classes": 10}) == "num_classes changed from 1000 to 10"
    assert head_cause(1000, 10, {}) == "its output size changed from 1000 to 10"


def test_explain_shape_unexplained_gives_both_shapes() -> None:
    why = explain_shape(ShapeMismatch("a.w", (3,), (5, 2)), stem=None, last_module=None, kwargs={})
    assert (why.reason, why.detail) == (
        Reason.UNEXPLAINED,
        "The shapes differ (checkpoint [3], model [5, 2]).",
    )


def test_explain_shape_head_needs_only_the_output_dim_to_differ() -> None:
    why = explain_shape(
        ShapeMismatch("fc.weight", (1000, 8), (10, 4)), stem=None, last_module="fc", kwargs={}
    )
    assert why.reason is Reason.UNEXPLAINED


def test_explain_shape_square_weight_beside_a_transposed_one() -> None:
    m = ShapeMismatch("h.0.attn.c_proj.weight", (8, 8), (8, 8), "h.0.attn.c_attn.weight")
    why = explain_shape(m, stem=None, last_module=None, kwargs={})
    assert why.reason is Reason.TRANSPOSED
    assert "'h.0.attn.c_attn.weight' in the same block is stored transposed" in why.detail


def test_find_stem_skips_class_tokens_and_position_embeddings() -> None:
    model = model_of(
        ("cls_token", (1, 1, 8)),
        ("pos_embed", (1, 5, 8)),
        ("patch_embed.proj.weight", (8, 3, 4, 4)),
    )
    assert find_stem(model) == "patch_embed.proj.weight"


def test_position_kind_by_name_and_rank() -> None:
    assert position_kind("layers.0.attn.relative_position_bias_table", (169, 3)) == "relative"
    assert position_kind("transformer.wpe.weight", (1024, 8)) == "text"
    assert position_kind("pos_embed", (1, 197, 8)) == "image"
    assert position_kind("visual.positional_embedding", (50, 8)) == "image"


def test_explain_shape_text_position_table_names_the_config_field() -> None:
    m = ShapeMismatch("transformer.wpe.weight", (1024, 8), (2048, 8))
    why = explain_shape(m, stem=None, last_module=None, kwargs={"n_positions": 2048})
    assert why.reason is Reason.POSITION_EMBEDDING_RESIZED
    assert "n_positions changed from 1024 to 2048. Extend it" in why.detail
