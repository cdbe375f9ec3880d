"""Tests of app.matching.verdict."""

from __future__ import annotations

from app.matching.compare import compare
from app.matching.reasons import explain
from app.matching.verdict import MIN_LOADED_SHARE, decide_verdict
from app.schemas import Verdict
from app.tensors import TensorIndex
from tests.matching.helpers import B, ckpt_of, model_of


def _verdict(ckpt: TensorIndex, model: TensorIndex) -> Verdict:
    result = compare(ckpt, model)
    why = explain(result, checkpoint=ckpt, model=model, sources={k: k for k in ckpt.tensors})
    return decide_verdict(result, why)


MODEL = model_of(
    ("body.w", (100,)), ("body.num_batches_tracked", (), B), ("fc.w", (10, 4)), ("fc.b", (10,))
)


def test_decide_verdict_compatible_apart_from_ignorable() -> None:
    assert (
        _verdict(ckpt_of(("body.w", (100,)), ("fc.w", (10, 4)), ("fc.b", (10,))), MODEL)
        is Verdict.COMPATIBLE
    )


def test_decide_verdict_compatible_with_changes_for_a_resized_head() -> None:
    ckpt = ckpt_of(("body.w", (100,)), ("fc.w", (5, 4)), ("fc.b", (5,)))
    assert _verdict(ckpt, MODEL) is Verdict.COMPATIBLE_WITH_CHANGES


def test_decide_verdict_partial_for_unexplained() -> None:
    ckpt = ckpt_of(("body.w", (100,)), ("fc.w", (10, 4)))
    assert _verdict(ckpt, MODEL) is Verdict.PARTIAL


def test_decide_verdict_incompatible_under_the_share() -> None:
    assert MIN_LOADED_SHARE == 0.1
    model = model_of(("body.w", (1000,)), ("fc.w", (10, 4)), ("fc.b", (10,)))
    ckpt = ckpt_of(("fc.w", (10, 4)), ("fc.b", (10,)))  # 50 of 1050 elements
    assert _verdict(ckpt, model) is Verdict.INCOMPATIBLE


def test_decide_verdict_nothing_loaded_is_never_compatible() -> None:
    model = model_of(("num_batches_tracked", (), B))
    assert _verdict(ckpt_of(("other", (1,))), model) is Verdict.INCOMPATIBLE
