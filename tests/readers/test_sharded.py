"""Tests of app.readers.sharded: directories and *.index.json read as one checkpoint."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from app.errors import CorruptCheckpointError, NoTensorsError, SourceNotRegularError
from app.readers import load_tensors, open_tensors, read_checkpoint
from app.readers.sharded import ShardedCheckpointIndex
from tests.fifos import call_bounded

from .helpers import tiny_state_dict


def _write_shards(
    directory: Path, kind: str, *, with_index: bool = True
) -> dict[str, torch.Tensor]:
    """Split the tiny state_dict over two shards (safetensors or .bin) with an index."""
    directory.mkdir(parents=True, exist_ok=True)
    state = tiny_state_dict()
    keys = list(state)
    parts = {1: keys[:2], 2: keys[2:]}
    ext = "safetensors" if kind == "safetensors" else "bin"
    weight_map = {}
    for number, part in parts.items():
        name = f"model-0000{number}-of-00002.{ext}"
        tensors = {k: state[k] for k in part}
        if kind == "safetensors":
            save_file(tensors, directory / name)
        else:
            torch.save(tensors, directory / name)
        weight_map.update(dict.fromkeys(part, name))
    if with_index:
        index_name = (
            "model.safetensors.index.json"
            if ext == "safetensors"
            else ("pytorch_model.bin.index.json")
        )
        (directory / index_name).write_text(
            json.dumps({"metadata": {"total_size": 1}, "weight_map": weight_map})
        )
    return state


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
def test_sharded_index_reads_as_one_checkpoint(tmp_path: Path, kind: str) -> None:
    state = _write_shards(tmp_path, kind)
    index = next(tmp_path.glob("*.index.json"))
    ckpt = read_checkpoint(index)
    assert isinstance(ckpt, ShardedCheckpointIndex)
    assert set(ckpt.index.keys()) == set(state)
    assert ckpt.index.get("fc.bias").dtype == "bfloat16"  # type: ignore[union-attr]
    assert [s.filename for s in ckpt.shards] == [
        f"model-00001-of-00002.{'safetensors' if kind == 'safetensors' else 'bin'}",
        f"model-00002-of-00002.{'safetensors' if kind == 'safetensors' else 'bin'}",
    ]
    assert [s.tensor_count for s in ckpt.shards] == [2, 3]
    assert ckpt.format == ("safetensors" if kind == "safetensors" else "torch_zip")
    assert ckpt.notes[0].startswith(f"Read as one checkpoint from 2 shards listed in {index.name}")
    loaded = load_tensors(index, keys=list(state))
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def test_sharded_directory_uses_its_index_or_its_files(tmp_path: Path) -> None:
    state = _write_shards(tmp_path / "indexed", "safetensors")
    assert set(read_checkpoint(tmp_path / "indexed").index.keys()) == set(state)
    _write_shards(tmp_path / "plain", "bin", with_index=False)
    ckpt = read_checkpoint(tmp_path / "plain")
    assert set(ckpt.index.keys()) == set(state)
    assert "listed in" not in ckpt.notes[0]
    with open_tensors(tmp_path / "plain") as source:
        assert torch.equal(source.read("conv.weight"), state["conv.weight"])


def test_sharded_directory_prefers_safetensors_files(tmp_path: Path) -> None:
    save_file({"a": torch.zeros(2)}, tmp_path / "model.safetensors")
    torch.save({"b": torch.zeros(2)}, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text("{}")
    assert read_checkpoint(tmp_path).index.keys() == ["a"]


def test_sharded_empty_directory_is_no_tensors(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("hi")
    with pytest.raises(NoTensorsError, match="no checkpoint files"):
        read_checkpoint(tmp_path)


@pytest.mark.parametrize(
    ("weight_map", "message"),
    [
        ({"a": "../outside.safetensors"}, "not a file beside the index"),
        ({"a": "/etc/passwd"}, "not a file beside the index"),
        ({"a": "absent.safetensors"}, "is missing"),
        ({"a": "s.safetensors", "ghost": "s.safetensors"}, "keys that no shard holds"),
        ([], "no weight_map"),
    ],
)
def test_sharded_bad_index_is_corrupt(tmp_path: Path, weight_map: object, message: str) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    save_file({"a": torch.zeros(2)}, shards / "s.safetensors")
    save_file({"a": torch.zeros(2)}, tmp_path / "outside.safetensors")
    index = shards / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(CorruptCheckpointError, match=message):
        read_checkpoint(index)


def test_sharded_symlinked_shard_leaving_the_directory_is_refused(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    save_file({"a": torch.zeros(2)}, tmp_path / "secret.safetensors")
    os.symlink(tmp_path / "secret.safetensors", shards / "s.safetensors")
    (shards / "m.index.json").write_text(json.dumps({"weight_map": {"a": "s.safetensors"}}))
    with pytest.raises(CorruptCheckpointError, match="not a file beside the index"):
        read_checkpoint(shards / "m.index.json")


def test_sharded_key_in_two_shards_is_corrupt(tmp_path: Path) -> None:
    save_file({"a": torch.zeros(2)}, tmp_path / "one.safetensors")
    save_file({"a": torch.ones(2)}, tmp_path / "two.safetensors")
    with pytest.raises(CorruptCheckpointError, match="in two shards"):
        read_checkpoint(tmp_path)


def test_sharded_index_ignores_tensors_it_does_not_assign(tmp_path: Path) -> None:
    save_file({"a": torch.zeros(2), "extra": torch.zeros(1)}, tmp_path / "s.safetensors")
    (tmp_path / "m.index.json").write_text(json.dumps({"weight_map": {"a": "s.safetensors"}}))
    ckpt = read_checkpoint(tmp_path / "m.index.json")
    assert ckpt.index.keys() == ["a"]
    assert any("1 shard tensors that the weight_map does not assign" in n for n in ckpt.notes)


def test_sharded_directory_symlink_leaving_it_is_refused(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    shards.mkdir()
    save_file({"a": torch.zeros(2)}, shards / "a.safetensors")
    save_file({"b": torch.zeros(2)}, tmp_path / "secret.safetensors")
    os.symlink(tmp_path / "secret.safetensors", shards / "b.safetensors")
    with pytest.raises(CorruptCheckpointError, match="not a file beside the index"):
        read_checkpoint(shards)


@pytest.mark.parametrize(
    "weight_map",
    [
        {"a": "m.index.json"},  # itself
        {"a": "other.index.json"},  # another index, which names this one
        {"a": "s.safetensors", "b": "m.index.json"},
        {"a": "link.safetensors"},  # a symlink to this index
    ],
)
def test_sharded_index_naming_an_index_as_a_shard_is_corrupt(
    tmp_path: Path, weight_map: dict[str, str]
) -> None:
    save_file({"a": torch.zeros(2)}, tmp_path / "s.safetensors")
    (tmp_path / "m.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (tmp_path / "other.index.json").write_text(json.dumps({"weight_map": {"a": "m.index.json"}}))
    os.symlink("m.index.json", tmp_path / "link.safetensors")
    with pytest.raises(CorruptCheckpointError, match=r"is an index \(\*\.index\.json\) itself"):
        read_checkpoint(tmp_path / "m.index.json")


def test_sharded_shard_name_with_nul_is_corrupt(tmp_path: Path) -> None:
    save_file({"a": torch.zeros(2)}, tmp_path / "s.safetensors")
    (tmp_path / "m.index.json").write_text(json.dumps({"weight_map": {"a": "s\x00.safetensors"}}))
    with pytest.raises(CorruptCheckpointError, match="not a file beside the index"):
        read_checkpoint(tmp_path / "m.index.json")


def test_sharded_directory_named_like_an_index_is_a_directory(tmp_path: Path) -> None:
    source = tmp_path / "x.index.json"
    source.mkdir()
    save_file({"a": torch.zeros(2)}, source / "s.safetensors")
    (source / "y.index.json").mkdir()  # not an index: a directory inside is not read
    (source / "z.safetensors").mkdir()
    ckpt = read_checkpoint(source)
    assert ckpt.index.keys() == ["a"]
    assert "listed in" not in ckpt.notes[0]


def test_sharded_shard_that_is_a_directory_or_symlink_loop_is_not_read(tmp_path: Path) -> None:
    save_file({"a": torch.zeros(2)}, tmp_path / "s.safetensors")
    (tmp_path / "d.safetensors").mkdir()
    os.symlink(tmp_path / "loop.safetensors", tmp_path / "loop.safetensors")
    index = tmp_path / "m.index.json"
    index.write_text(json.dumps({"weight_map": {"a": "d.safetensors"}}))
    with pytest.raises(SourceNotRegularError, match=r"'d\.safetensors' is a directory"):
        read_checkpoint(index)
    index.write_text(json.dumps({"weight_map": {"a": "loop.safetensors"}}))
    with pytest.raises(CorruptCheckpointError, match=r"'loop\.safetensors' is missing"):
        read_checkpoint(index)
    index.unlink()  # without an index, neither is a file of the directory
    assert read_checkpoint(tmp_path).index.keys() == ["a"]


@pytest.mark.parametrize(
    ("fifo_name", "weight_map"),
    [
        ("model.safetensors.index.json", None),  # the index a directory source would use
        ("b.safetensors", None),  # a shard of a directory without an index
        ("b.bin", {"a": "s.safetensors", "b": "b.bin"}),  # a shard the index names
    ],
)
def test_sharded_fifo_index_or_shard_is_refused_without_blocking(
    tmp_path: Path, fifo_name: str, weight_map: dict[str, str] | None
) -> None:
    save_file({"a": torch.zeros(2)}, tmp_path / "s.safetensors")
    if weight_map is not None:
        (tmp_path / "m.index.json").write_text(json.dumps({"weight_map": weight_map}))
    os.mkfifo(tmp_path / fifo_name)
    with pytest.raises(SourceNotRegularError, match=re.escape(f"{fifo_name!r} is a FIFO")):
        call_bounded(lambda: read_checkpoint(tmp_path), fifos=[tmp_path / fifo_name])


def test_sharded_fifo_as_the_index_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "m.index.json")
    with pytest.raises(SourceNotRegularError, match=r"'m\.index\.json' is a FIFO"):
        call_bounded(
            lambda: read_checkpoint(tmp_path / "m.index.json"), fifos=[tmp_path / "m.index.json"]
        )
