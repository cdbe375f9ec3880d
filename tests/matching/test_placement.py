"""Tests of app.matching.placement: head modules and where loaded parameters sit."""

from __future__ import annotations

import doctest

import app.matching.placement as placement_module
from app.matching.compare import compare
from app.matching.placement import place, resolve_heads
from app.matching.reasons import explain
from tests.matching.helpers import B, ckpt_of, model_of


def test_placement_docstring_examples_run() -> None:
    assert doctest.testmod(placement_module).failed == 0


def test_resolve_heads_falls_back_to_the_last_top_level_module_with_parameters() -> None:
    model = model_of(("body.w", (4,)), ("fc.w", (2,)), ("extra.count", (), B))
    assert resolve_heads(model, None) == ("fc",)
    assert resolve_heads(model_of(("net.a.w", (4,)), ("net.b.w", (2,))), None) == ()


def test_place_counts_buffers_nowhere_and_heads_apart() -> None:
    model = model_of(
        ("body.w", (6,)), ("body.running_mean", (6,), B), ("head.a.w", (3,)), ("head.b.w", (1,))
    )
    ckpt = ckpt_of(("body.w", (6,)), ("head.a.w", (3,)))
    result = compare(ckpt, model)
    why = explain(result, checkpoint=ckpt, model=model, sources={k: k for k in ckpt.tensors})
    found = place(result, why, model=model, heads=("head",))
    assert (found.backbone_numel, found.backbone_loaded, found.head_numel, found.head_loaded) == (
        6,
        6,
        4,
        3,
    )
    assert found.loaded_modules == ("body", "head.a")
    assert found.backbone_modules == 1
