"""Tests of app.matching.advice: one sentence per kind of fix."""

from __future__ import annotations

import doctest

import app.matching.advice as advice_module
from app.matching.advice import position_sentences
from app.matching.compare import ShapeMismatch


def test_advice_docstring_example_runs() -> None:
    assert doctest.testmod(advice_module).failed == 0


def test_position_sentences_one_per_kind() -> None:
    sentences = position_sentences(
        [
            ShapeMismatch("pos_embed", (1, 197, 8), (1, 577, 8)),
            ShapeMismatch("text.embeddings.position_embeddings.weight", (514, 8), (258, 8)),
            ShapeMismatch("b.0.attn.relative_position_bias_table", (169, 2), (225, 2)),
        ],
        {"config": {"max_position_embeddings": 258}},
    )
    assert sentences == [
        "The position embedding pos_embed changed size ([1, 197, 8] -> [1, 577, 8]): "
        "interpolate it with timm's resample_abs_pos_embed, or train it.",
        "The relative-position table b.0.attn.relative_position_bias_table changed size "
        "([169, 2] -> [225, 2]): the attention window changed; interpolate it with timm's "
        "resize_rel_pos_bias_table, or train it.",
        "The position table text.embeddings.position_embeddings.weight has 514 rows in the "
        "checkpoint and 258 in the model (max_position_embeddings changed from 514 to 258). "
        "Truncate it to its first 258 rows (sequences get shorter), or keep the checkpoint's "
        "length.",
    ]


def test_position_sentences_vision_tower_table_is_an_image_one() -> None:
    """CLIP's vision tower keeps its patch positions in a 2-D nn.Embedding."""
    key = "vision_model.embeddings.position_embedding.weight"
    sentences = position_sentences([ShapeMismatch(key, (50, 8), (197, 8))], {})
    assert "resample_abs_pos_embed" in sentences[0]
