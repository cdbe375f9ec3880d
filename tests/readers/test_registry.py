"""A format is one module and one line: a toy format registered here is read like the others."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from app.errors import UnsupportedFormatError
from app.readers import (
    ByteSource,
    describe_safety,
    load_tensors,
    open_tensors,
    read_checkpoint,
    register_reader,
    sniff_format,
)
from app.readers.lazy import SpanSource, TensorSource
from app.readers.registry import readers, unregister_reader
from app.readers.source import Head
from app.tensors import CheckpointIndex, Safety, StateDictCandidate, TensorIndex, TensorInfo

MAGIC = b"TOYCKPT\n"


class ToyReader:
    """A whole format: ``TOYCKPT`` then JSON of key -> flat float values and shape."""

    format = "toy"
    description = "a toy checkpoint"

    def matches(self, head: Head) -> bool:
        return head.data.startswith(MAGIC)

    def read_index(
        self, source: ByteSource, *, state_dict_key: str, max_tensors: int
    ) -> CheckpointIndex:
        infos = [TensorInfo(k, tuple(t.shape), "float32") for k, t in _tensors(source).items()]
        return CheckpointIndex(
            format=self.format,
            index=TensorIndex.from_infos(infos),
            state_dict_path="",
            candidates=(StateDictCandidate("", len(infos)),),
            notes=(),
        )

    @contextmanager
    def open_tensors(self, source: ByteSource, *, state_dict_path: str) -> Iterator[TensorSource]:
        yield SpanSource({}, _tensors(source))

    def load_tensors(
        self, source: ByteSource, keys: Iterable[str], *, state_dict_path: str
    ) -> dict[str, torch.Tensor]:
        tensors = _tensors(source)
        return {k: tensors[k] for k in keys}

    def describe_safety(self, source: ByteSource) -> Safety:
        return Safety(format=self.format, uses_pickle=False)


def _tensors(source: ByteSource) -> dict[str, torch.Tensor]:
    body = json.loads(source.read_at(len(MAGIC), source.size()))
    return {k: torch.tensor(v["values"]).reshape(v["shape"]) for k, v in body.items()}


@pytest.fixture
def toy() -> Iterator[ToyReader]:
    reader = ToyReader()
    register_reader(reader)  # the one line a new format adds in app/readers/__init__.py
    yield reader
    unregister_reader(reader.format)


def _write_toy(path: Path) -> Path:
    body = {"fc.weight": {"shape": [2, 2], "values": [1.0, 2.0, 3.0, 4.0]}}
    path.write_bytes(MAGIC + json.dumps(body).encode())
    return path


def test_registry_toy_format_is_read_by_every_entry_point(toy: ToyReader, tmp_path: Path) -> None:
    path = _write_toy(tmp_path / "model.toy")
    assert sniff_format(path) == "toy"
    checkpoint = read_checkpoint(path)
    assert (checkpoint.format, list(checkpoint.index.keys())) == ("toy", ["fc.weight"])
    assert describe_safety(path) == Safety(format="toy", uses_pickle=False)
    expected = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert torch.equal(load_tensors(path, keys=["fc.weight"])["fc.weight"], expected)
    with open_tensors(path) as source:
        assert torch.equal(source.read("fc.weight"), expected)


def test_registry_toy_format_shards_through_the_composite(toy: ToyReader, tmp_path: Path) -> None:
    # A directory of shards of a registered format is read by sharded with no change there.
    shards = tmp_path / "shards"
    shards.mkdir()
    _write_toy(shards / "a.bin")
    body = {"fc.bias": {"shape": [2], "values": [5.0, 6.0]}}
    (shards / "b.bin").write_bytes(MAGIC + json.dumps(body).encode())
    checkpoint = read_checkpoint(shards)
    assert sorted(checkpoint.index.keys()) == ["fc.bias", "fc.weight"]
    assert describe_safety(shards).format == "toy"


def test_registry_unknown_bytes_list_the_registered_formats(toy: ToyReader, tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"hello\n")
    with pytest.raises(UnsupportedFormatError, match="a safetensors file, or a toy checkpoint"):
        sniff_format(path)


def test_registry_duplicate_format_is_refused(toy: ToyReader) -> None:
    with pytest.raises(ValueError, match="'toy' is registered already"):
        register_reader(ToyReader())


def test_registry_unregistered_format_is_unsupported(tmp_path: Path) -> None:
    path = _write_toy(tmp_path / "model.toy")
    assert "toy" not in [r.format for r in readers()]
    with pytest.raises(UnsupportedFormatError, match="Detected a text file"):
        read_checkpoint(path)


def test_registry_builtin_formats_in_order() -> None:
    assert [r.format for r in readers()] == ["torch_zip", "torch_legacy", "safetensors"]
