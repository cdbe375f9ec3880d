"""Tests of app.matching.shapes."""

from __future__ import annotations

from app.matching.compare import ShapeMismatch
from app.matching.shapes import explain_shape, head_cause
from app.schemas import Reason


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
