"""Tests of app.matching.candidates."""

from __future__ import annotations

from app.matching.align import auto_align
from app.matching.candidates import choose_candidate
from app.tensors import CheckpointIndex, StateDictCandidate
from tests.matching.helpers import ckpt_of, model_of

MODEL = model_of(("conv.w", (8,)), ("fc.w", (10, 4)))
FULL = ckpt_of(("conv.w", (8,)), ("fc.w", (10, 4)))
SMALL_HEAD = ckpt_of(("conv.w", (8,)), ("fc.w", (2, 4)))


def _checkpoint(reader_choice: str, **indexes: object) -> CheckpointIndex:
    return CheckpointIndex(
        "torch_zip",
        indexes[reader_choice],  # type: ignore[arg-type]
        state_dict_path=reader_choice,
        candidates=tuple(StateDictCandidate(p, 2) for p in indexes),
        notes=(f"Used the state_dict at {reader_choice!r} (2 candidates found).", "Other."),
        candidate_indexes=indexes,  # type: ignore[arg-type]
    )


def _align(model=MODEL):  # type: ignore[no-untyped-def]
    return lambda index: auto_align(index, model)


def test_choose_candidate_uses_the_one_that_loads_most() -> None:
    checkpoint = _checkpoint("state_dict_ema", state_dict=FULL, state_dict_ema=SMALL_HEAD)
    choice = choose_candidate(checkpoint, MODEL, requested="auto", align=_align())
    assert choice.checkpoint.state_dict_path == "state_dict"
    assert choice.checkpoint.index is FULL
    assert dict(choice.scores) == {"state_dict": 48, "state_dict_ema": 8}
    assert choice.reason == (
        "Used 'state_dict', which loads the most parameter elements ('state_dict' loads 48, "
        "'state_dict_ema' loads 8)."
    )
    assert choice.checkpoint.notes == ("Other.", choice.reason)


def test_choose_candidate_tie_keeps_the_readers_choice() -> None:
    checkpoint = _checkpoint("state_dict_ema", state_dict=FULL, state_dict_ema=FULL)
    choice = choose_candidate(checkpoint, MODEL, requested="auto", align=_align())
    assert choice.checkpoint.state_dict_path == "state_dict_ema"
    assert choice.reason.startswith(
        "Candidates tie ('state_dict' loads 48, 'state_dict_ema' loads 48"
    )


def test_choose_candidate_respects_state_dict_key() -> None:
    checkpoint = CheckpointIndex("torch_zip", FULL, state_dict_path="model")
    choice = choose_candidate(checkpoint, MODEL, requested="model", align=_align())
    assert choice.checkpoint is checkpoint
    assert choice.reason == "The option state_dict_key named 'model'."


def test_choose_candidate_single_candidate_needs_no_scoring() -> None:
    choice = choose_candidate(
        CheckpointIndex("safetensors", FULL), MODEL, requested="auto", align=_align()
    )
    assert choice.scores == {}
    assert choice.reason == "The only dict of tensors in the file is the file itself."
