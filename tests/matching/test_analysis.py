"""Tests of app.matching.analysis."""

from __future__ import annotations

import doctest

import pytest

import app.matching.analysis as analysis_module
from app.errors import InvalidOptionsError
from app.matching.analysis import MatchOptions, analyse
from app.schemas import Verdict
from app.tensors import ArchitectureIndex, CheckpointIndex, TensorIndex
from tests.matching.helpers import ckpt_of, model_of

MODEL = model_of(("net.conv.w", (4, 3)), ("net.fc.w", (2, 4)))
ARCH = ArchitectureIndex("plugin:net", "plugin", {}, MODEL)


def _analyse(ckpt: TensorIndex, **options: object) -> analysis_module.Analysis:
    return analyse(CheckpointIndex("torch_zip", ckpt), ARCH, MatchOptions(**options))  # type: ignore[arg-type]


def test_analyse_docstring_example_runs() -> None:
    assert doctest.testmod(analysis_module).failed == 0


def test_analyse_key_map_is_model_key_from_checkpoint_key() -> None:
    analysis = _analyse(ckpt_of(("conv.w", (4, 3)), ("fc.w", (2, 4))))
    assert analysis.key_map == {"net.conv.w": "conv.w", "net.fc.w": "fc.w"}
    assert analysis.verdict is Verdict.COMPATIBLE


def test_analyse_key_map_leaves_out_transposed_tensors() -> None:
    analysis = _analyse(ckpt_of(("conv.w", (3, 4)), ("fc.w", (2, 4))))
    assert analysis.key_map == {"net.fc.w": "fc.w"}
    assert analysis.explanations.shape_mismatched["net.conv.w"].reason.value == "transposed"


def test_analyse_explicit_options_replace_auto_and_say_so() -> None:
    analysis = _analyse(ckpt_of(("conv.w", (4, 3))), add_prefix="net.")
    assert [s.transform.origin for s in analysis.alignment.steps] == ["option"]
    assert (
        "Explicit key options were given, so automatic alignment did not run."
        in analysis.alignment.notes
    )


def test_analyse_align_none_compares_keys_as_they_are() -> None:
    analysis = _analyse(ckpt_of(("conv.w", (4, 3))), align="none")
    assert analysis.result.matched == ()
    assert analysis.alignment.notes == ("Alignment is off (align: none).",)
    assert analysis.verdict is Verdict.INCOMPATIBLE


def test_analyse_match_by_suffix_leftover_is_unexpected() -> None:
    ckpt = ckpt_of(("old.conv.w", (4, 3)), ("net.conv.w", (9,)))
    analysis = _analyse(ckpt, match_by_suffix=True)
    assert analysis.key_map == {"net.conv.w": "old.conv.w"}
    assert "net.conv.w" in analysis.result.unexpected
    assert analysis.explanations.unexpected["net.conv.w"].detail == (
        "match_by_suffix gave its name to another checkpoint key."
    )


def test_analyse_colliding_rename_raises() -> None:
    with pytest.raises(InvalidOptionsError, match="maps two checkpoint keys onto 'x'"):
        _analyse(ckpt_of(("a", (1,)), ("b", (1,))), rename=(("^[ab]$", "x"),))


def test_analyse_plan_follows_freeze_options() -> None:
    analysis = _analyse(
        ckpt_of(("conv.w", (4, 3)), ("fc.w", (2, 4))),
        freeze_mode="all",
        trainable=(r"fc\.",),
        freeze_given=True,
    )
    assert analysis.plan.trainable == ("net.fc.w",)
