"""Tests of app.matching.prefixes."""

from __future__ import annotations

import doctest

import app.matching.prefixes as prefixes_module
from app.matching.prefixes import candidate_pairs, known_prefix_pairs, learn_prefix_pairs
from tests.matching.helpers import ckpt_of, model_of


def test_learn_prefix_pairs_docstring_example_runs() -> None:
    assert doctest.testmod(prefixes_module).failed == 0


def test_learn_prefix_pairs_ranks_by_parameter_elements() -> None:
    model = model_of(("enc.big.weight", (100,)), ("dec.small.weight", (2,)))
    ckpt = ckpt_of(("big.weight", (100,)), ("small.weight", (2,)))
    assert learn_prefix_pairs(ckpt, model)[:2] == [("", "enc."), ("", "dec.")]


def test_learn_prefix_pairs_drops_module_restricted_copies() -> None:
    model = model_of(("backbone.layer4.w", (3,)))
    ckpt = ckpt_of(("module.layer4.w", (3,)))
    assert learn_prefix_pairs(ckpt, model) == [("module.", "backbone.")]


def test_learn_prefix_pairs_skips_suffixes_shared_by_many_keys() -> None:
    model = model_of(*[(f"m{i}.weight", (3,)) for i in range(20)])
    assert learn_prefix_pairs(ckpt_of(("x.weight", (3,))), model) == []


def test_known_prefix_pairs_only_where_keys_start_with_them() -> None:
    model = model_of(("backbone.body.conv.w", (1,)))
    ckpt = ckpt_of(("module.conv.w", (1,)))
    assert known_prefix_pairs(ckpt, model) == [
        ("module.", ""),
        ("", "backbone."),
        ("", "backbone.body."),
        ("module.", "backbone."),
        ("module.", "backbone.body."),
    ]


def test_candidate_pairs_start_with_identity_without_duplicates() -> None:
    model = model_of(("backbone.conv.w", (1,)))
    pairs = candidate_pairs(ckpt_of(("conv.w", (1,))), model)
    assert pairs[0] == ("", "")
    assert len(pairs) == len(set(pairs))
