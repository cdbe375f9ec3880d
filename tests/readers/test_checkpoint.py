"""Tests for the dispatching entry points read_checkpoint and load_tensors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from app.errors import SourceNotRegularError, UnsupportedFormatError
from app.readers import load_tensors, open_tensors, read_checkpoint, registry
from app.readers.protocol import Reader
from app.readers.source import ByteSource
from tests.fifos import call_bounded

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


def _use(entry: str, path: Path) -> list[str]:
    """The keys read from ``path`` by one of the entry points."""
    if entry == "read":
        return sorted(read_checkpoint(path).index.keys())
    if entry == "load":
        return sorted(load_tensors(path, keys=["conv.weight"]))
    with open_tensors(path) as source:
        assert torch.equal(source.read("conv.weight"), tiny_state_dict()["conv.weight"])
        return sorted(source.keys())


@pytest.mark.parametrize("entry", ["read", "load", "open"])
def test_checkpoint_entry_points_refuse_a_fifo_without_blocking(tmp_path: Path, entry: str) -> None:
    fifo = tmp_path / "upload.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(SourceNotRegularError, match=r"'upload\.safetensors' is a FIFO"):
        call_bounded(lambda: _use(entry, fifo), fifos=[fifo])


@pytest.mark.parametrize("entry", ["read", "load", "open"])
def test_checkpoint_reads_the_file_it_sniffed_when_a_fifo_replaces_it(
    save_any: Saver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry: str
) -> None:
    # A writer under the source roots renames a FIFO over the file between the format sniff
    # and the reader's own opens: every open after the first must still reach the same file.
    path = save_any(tiny_state_dict(), "upload")

    identify = registry.identify

    def identify_then_swap(source: ByteSource) -> Reader:
        found = identify(source)
        if not path.is_fifo():
            os.mkfifo(tmp_path / "pipe")
            os.replace(tmp_path / "pipe", path)
        return found

    monkeypatch.setattr(registry, "identify", identify_then_swap)
    wanted = ["conv.weight"] if entry == "load" else sorted(tiny_state_dict())
    assert call_bounded(lambda: _use(entry, path), fifos=[path]) == wanted
    assert path.is_fifo()
