"""Tests of app.matching.suffix."""

from __future__ import annotations

import doctest

import app.matching.suffix as suffix_module
from app.matching.suffix import match_by_suffix
from tests.matching.helpers import ckpt_of, model_of


def _identity(*keys: str) -> dict[str, str]:
    return {k: k for k in keys}


def test_match_by_suffix_docstring_example_runs() -> None:
    assert doctest.testmod(suffix_module).failed == 0


def test_match_by_suffix_takes_the_longest_common_suffix() -> None:
    model = model_of(("backbone.res2.0.conv1.weight", (4,)), ("head.conv1.weight", (4,)))
    ckpt = ckpt_of(("res2.0.conv1.weight", (4,)))
    found = match_by_suffix(_identity("res2.0.conv1.weight"), ckpt, model)
    assert dict(found.names) == {"res2.0.conv1.weight": "backbone.res2.0.conv1.weight"}
    assert found.ambiguous == ()


def test_match_by_suffix_needs_equal_shape() -> None:
    model = model_of(("a.conv.weight", (4,)), ("b.conv.weight", (8,)))
    found = match_by_suffix(_identity("conv.weight"), ckpt_of(("conv.weight", (8,))), model)
    assert dict(found.names) == {"conv.weight": "b.conv.weight"}


def test_match_by_suffix_reports_ambiguous_keys() -> None:
    model = model_of(("a.conv.weight", (4,)), ("b.conv.weight", (4,)))
    found = match_by_suffix(_identity("conv.weight"), ckpt_of(("conv.weight", (4,))), model)
    assert dict(found.names) == {}
    assert found.ambiguous == ("conv.weight",)


def test_match_by_suffix_exact_name_wins() -> None:
    model = model_of(("conv.weight", (4,)), ("x.conv.weight", (4,)))
    found = match_by_suffix(_identity("conv.weight"), ckpt_of(("conv.weight", (4,))), model)
    assert dict(found.names) == {"conv.weight": "conv.weight"}


def test_match_by_suffix_two_keys_tied_for_one_model_key_are_ambiguous() -> None:
    model = model_of(("net.conv.weight", (4,)))
    ckpt = ckpt_of(("a.conv.weight", (4,)), ("b.conv.weight", (4,)))
    found = match_by_suffix(_identity("a.conv.weight", "b.conv.weight"), ckpt, model)
    assert dict(found.names) == {}
    assert found.ambiguous == ("a.conv.weight", "b.conv.weight")


def test_match_by_suffix_longer_offer_wins_a_model_key() -> None:
    model = model_of(("net.layer.conv.weight", (4,)))
    ckpt = ckpt_of(("x.layer.conv.weight", (4,)), ("y.conv.weight", (4,)))
    found = match_by_suffix(_identity("x.layer.conv.weight", "y.conv.weight"), ckpt, model)
    assert dict(found.names) == {"x.layer.conv.weight": "net.layer.conv.weight"}
    assert found.ambiguous == ()
