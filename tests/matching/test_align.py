"""Tests of app.matching.align."""

from __future__ import annotations

import doctest

import pytest

import app.matching.align as align_module
from app.errors import InvalidOptionsError
from app.matching.align import auto_align, explicit_align, score_names
from app.matching.transforms import strip
from app.tensors import TensorIndex, TensorInfo
from tests.matching.helpers import P, ckpt_of, model_of


def _steps(alignment: align_module.Alignment) -> list[str]:
    return [s.transform.describe() for s in alignment.steps]


def test_auto_align_docstring_example_runs() -> None:
    assert doctest.testmod(align_module).failed == 0


def test_auto_align_strips_and_adds_learned_prefixes() -> None:
    model = model_of(("backbone.body.conv.weight", (4, 3)), ("head.weight", (2, 4)))
    ckpt = ckpt_of(("module.conv.weight", (4, 3)), ("module.fc.weight", (9, 4)))
    alignment = auto_align(ckpt, model)
    assert _steps(alignment) == ["strip 'module.'", "add 'backbone.body.'"]
    assert alignment.names["module.conv.weight"] == "backbone.body.conv.weight"
    assert alignment.sources["backbone.body.conv.weight"] == "module.conv.weight"
    assert "Aligned keys automatically" in alignment.notes[0]


def test_auto_align_keeps_keys_when_they_already_fit() -> None:
    model = model_of(("fc.weight", (2, 2)))
    alignment = auto_align(ckpt_of(("fc.weight", (2, 2))), model)
    assert alignment.steps == ()
    assert alignment.notes == ()


def test_auto_align_nothing_loads_keeps_keys_and_lists_no_winner() -> None:
    alignment = auto_align(ckpt_of(("a.w", (1,))), model_of(("b.w", (2,))))
    assert alignment.steps == ()
    assert dict(alignment.names) == {"a.w": "a.w"}


def test_auto_align_scores_elements_not_keys() -> None:
    model = model_of(("a.big", (1000,)), ("b.s1", (1,)), ("b.s2", (1,)))
    ckpt = ckpt_of(("big", (1000,)), ("s1", (1,)), ("s2", (1,)))
    assert _steps(auto_align(ckpt, model)) == ["add 'a.'"]


def test_auto_align_near_tie_is_an_alternative_and_a_note() -> None:
    model = model_of(("student.conv.w", (4,)), ("teacher.conv.w", (4,)))
    alignment = auto_align(ckpt_of(("conv.w", (4,))), model)
    assert _steps(alignment) == ["add 'student.'"]
    top = alignment.alternatives[0]
    assert [s.transform.describe() for s in top.steps] == ["add 'teacher.'"]
    assert top.loaded_parameter_numel == 4
    assert any(n.startswith("Near-tie: add 'teacher.' would load 4") for n in alignment.notes)


def test_auto_align_lists_only_alternatives_loading_half_the_winner() -> None:
    model = model_of(("fc.w", (2,)))
    alignment = auto_align(ckpt_of(("module.fc.w", (2,))), model)
    assert alignment.alternatives == ()  # keeping the keys as they are loads nothing


def test_auto_align_skips_candidates_that_collide() -> None:
    model = model_of(("fc.w", (2,)))
    ckpt = ckpt_of(("module.fc.w", (2,)), ("fc.w", (3,)))
    alignment = auto_align(ckpt, model)
    assert alignment.steps == ()


def test_auto_align_finds_the_prefixes_on_tens_of_thousands_of_keys() -> None:
    # Its speed is measured in benchmarks/, not asserted here (the guide: no timed tests).
    keys = [f"layers.{i}.block.{j}.{n}" for i in range(400) for j in range(10) for n in "abcde"]
    model = TensorIndex.from_infos([TensorInfo("model." + k, (8,), "float32", P) for k in keys])
    ckpt = TensorIndex.from_infos([TensorInfo("module." + k, (8,), "float16") for k in keys])
    alignment = auto_align(ckpt, model)
    assert _steps(alignment) == ["strip 'module.'", "add 'model.'"]


def test_explicit_align_applies_options_and_notes_them() -> None:
    model = model_of(("fc.w", (2,)))
    alignment = explicit_align(
        ckpt_of(("module.fc.w", (2,))), model, transforms=[strip("module.")], suffix=False
    )
    assert alignment.names == {"module.fc.w": "fc.w"}
    assert alignment.notes == ("Applied strip 'module.' from the options: 1 keys changed.",)


def test_explicit_align_warns_about_a_transform_that_changed_nothing() -> None:
    model = model_of(("fc.w", (2,)))
    alignment = explicit_align(
        ckpt_of(("fc.w", (2,))), model, transforms=[strip("x.")], suffix=False
    )
    assert "The option strip 'x.' changed no key; check it." in alignment.notes


def test_explicit_align_collision_raises() -> None:
    ckpt = ckpt_of(("module.fc.w", (2,)), ("fc.w", (2,)))
    with pytest.raises(InvalidOptionsError, match=r"maps two checkpoint keys onto 'fc\.w'"):
        explicit_align(ckpt, model_of(("fc.w", (2,))), transforms=[strip("module.")], suffix=False)


def test_explicit_align_by_suffix_reports_ambiguous_and_leftovers() -> None:
    model = model_of(("net.a.conv.w", (2,)), ("net.b.conv.w", (2,)), ("net.fc.w", (3,)))
    ckpt = ckpt_of(("conv.w", (2,)), ("old.fc.w", (3,)), ("net.fc.w", (5,)))
    alignment = explicit_align(ckpt, model, transforms=[], suffix=True)
    assert alignment.ambiguous == ("conv.w",)
    assert alignment.names == {"conv.w": "conv.w", "old.fc.w": "net.fc.w"}
    assert alignment.leftover == ("net.fc.w",)
    assert _steps(alignment) == ["match by suffix"]
    assert any("match several model keys by suffix" in n for n in alignment.notes)


def test_score_names_counts_parameter_elements_and_keys() -> None:
    model = model_of(("w", (3, 2)), ("b", (3,)))
    ckpt = ckpt_of(("w", (3, 2)), ("b", (4,)))
    assert score_names({"w": "w", "b": "b"}, ckpt, model) == (6, 1)
