"""Tests for the dispatching entry points read_checkpoint and load_tensors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.errors import UnsupportedFormatError
from app.readers import load_tensors, read_checkpoint

from .helpers import Saver, tiny_state_dict


def test_read_checkpoint_same_index_for_every_format(save_any: Saver) -> None:
    ckpt = read_checkpoint(save_any(tiny_state_dict(), "upload"))
    assert sorted(ckpt.index.keys()) == sorted(tiny_state_dict())
    assert ckpt.index.numel == sum(t.numel() for t in tiny_state_dict().values())


def test_load_tensors_equal_to_originals(save_any: Saver) -> None:
    original = tiny_state_dict()
    path = save_any(original, "upload")
    keys = ["fc.bias", "conv.weight", "bn.num_batches_tracked"]
    loaded = load_tensors(path, keys=keys)
    assert list(loaded) == keys
    for key in keys:
        assert loaded[key].device.type == "cpu"
        assert torch.equal(loaded[key], original[key])


def test_load_tensors_from_wrapped_state_dict(save_torch: Saver) -> None:
    original = tiny_state_dict()
    path = save_torch({"epoch": 1, "checkpoint": {"model": original}}, "wrapped")
    ckpt = read_checkpoint(path)
    loaded = load_tensors(path, keys=ckpt.index.keys(), state_dict_path=ckpt.state_dict_path)
    assert all(torch.equal(loaded[k], original[k]) for k in original)


def test_load_tensors_unknown_key(save_any: Saver) -> None:
    path = save_any(tiny_state_dict(), "upload")
    with pytest.raises(KeyError, match=r"1 keys not in the state_dict, e.g. \['nope'\]"):
        load_tensors(path, keys=["conv.bias", "nope"])


def test_load_tensors_refuses_unsupported_format(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(UnsupportedFormatError, match="Detected a text file"):
        load_tensors(path, keys=["w"])
