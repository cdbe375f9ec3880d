"""Tests for find_state_dict: unwrapping checkpoints without recursion."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest
import torch

from app.errors import LimitExceededError, NoTensorsError, StateDictKeyError
from app.readers import state_dict as sd
from app.readers.state_dict import find_state_dict, index_tensors
from app.tensors import StateDictCandidate

from .helpers import tiny_state_dict


def test_find_state_dict_flat_root() -> None:
    found = find_state_dict(tiny_state_dict())
    assert found.path == ""
    assert found.candidates == (StateDictCandidate("", 5),)
    assert found.notes == ()


def test_find_state_dict_unwraps_state_dict_key() -> None:
    found = find_state_dict({"epoch": 3, "state_dict": tiny_state_dict()})
    assert found.path == "state_dict"
    assert list(found.tensors) == list(tiny_state_dict())
    assert "Used the state_dict at 'state_dict' (1 candidate found)." in found.notes


def test_find_state_dict_prefers_model_over_optimizer() -> None:
    obj = {"model": tiny_state_dict(), "optimizer": {"exp_avg": torch.zeros(1)}}
    found = find_state_dict(obj)
    assert found.path == "model"
    assert [c.path for c in found.candidates] == ["model", "optimizer"]


def test_find_state_dict_nested_wrapper() -> None:
    found = find_state_dict({"checkpoint": {"model": OrderedDict(tiny_state_dict())}})
    assert found.path == "checkpoint.model"
    assert len(found.tensors) == 5


def test_find_state_dict_prefers_ema() -> None:
    found = find_state_dict({"state_dict": tiny_state_dict(), "state_dict_ema": tiny_state_dict()})
    assert found.path == "state_dict_ema"
    assert {c.path for c in found.candidates} == {"state_dict", "state_dict_ema"}


def test_find_state_dict_falls_back_to_most_tensors() -> None:
    obj = {"a": {"x": torch.zeros(1)}, "b": tiny_state_dict()}
    assert find_state_dict(obj).path == "b"


def test_find_state_dict_explicit_key() -> None:
    obj = {"state_dict": tiny_state_dict(), "state_dict_ema": {"w": torch.zeros(1)}}
    found = find_state_dict(obj, state_dict_key="state_dict")
    assert found.path == "state_dict"


def test_find_state_dict_missing_key_lists_candidates() -> None:
    with pytest.raises(StateDictKeyError, match=r"'nope'.*Candidates: 'state_dict' \(5 tensors\)"):
        find_state_dict({"state_dict": tiny_state_dict()}, state_dict_key="nope")


def test_find_state_dict_key_without_tensors_is_refused() -> None:
    obj = {"state_dict": tiny_state_dict(), "config": {"lr": 0.1}}
    with pytest.raises(StateDictKeyError, match="'config' does not name a dict holding tensors"):
        find_state_dict(obj, state_dict_key="config")


def test_find_state_dict_notes_skipped_entries() -> None:
    obj: dict[Any, Any] = {"w": torch.zeros(2), 0: torch.zeros(1), "step": 5, "cfg": {}}
    found = find_state_dict(obj)
    assert list(found.tensors) == ["w"]
    assert "Skipped 1 entries with non-string keys (e.g. 0)." in found.notes
    assert any(n.startswith("Skipped 2 non-tensor values (1 int, 1 dict") for n in found.notes)


def test_find_state_dict_no_tensors_lists_top_level_keys() -> None:
    with pytest.raises(NoTensorsError, match=r"'epoch' \(int\), 'config' \(dict\)"):
        find_state_dict({"epoch": 3, "config": {"lr": 0.1}})


def test_find_state_dict_single_tensor_is_refused() -> None:
    with pytest.raises(NoTensorsError, match=r"single tensor \(shape \[2, 3\]\)"):
        find_state_dict(torch.zeros(2, 3))


def test_find_state_dict_list_is_refused() -> None:
    with pytest.raises(NoTensorsError, match="list of 2 items, not a dict"):
        find_state_dict([torch.zeros(1), torch.zeros(2)])


def test_find_state_dict_deep_nesting_is_cut_not_recursed() -> None:
    root: dict[str, Any] = {}
    node = root
    for _ in range(10_000):  # far beyond the recursion limit
        child: dict[str, Any] = {}
        node["n"] = child
        node = child
    node["w"] = torch.zeros(1)
    root["model"] = {"w": torch.zeros(1)}
    found = find_state_dict(root)
    assert found.path == "model"
    assert any("deeper than 32 levels" in n for n in found.notes)


def test_find_state_dict_survives_cycles() -> None:
    obj: dict[str, Any] = {"model": {"w": torch.zeros(1)}}
    obj["self"] = obj
    assert find_state_dict(obj).path == "model"


def test_find_state_dict_node_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sd, "MAX_NODES", 10)
    obj = {f"k{i}": i for i in range(20)}
    with pytest.raises(LimitExceededError, match="more than 10 nested values"):
        find_state_dict(obj)


def test_index_tensors_shapes_and_dtypes() -> None:
    index = index_tensors(tiny_state_dict())
    assert index.get("fc.weight") is not None
    assert [(i.key, i.shape, i.dtype) for i in index][2:] == [
        ("fc.weight", (2, 4), "float16"),
        ("fc.bias", (2,), "bfloat16"),
        ("bn.num_batches_tracked", (), "int64"),
    ]
