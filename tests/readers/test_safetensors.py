"""Tests for the safetensors reader: header-only index and hostile headers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from app.errors import (
    CorruptCheckpointError,
    LimitExceededError,
    NoTensorsError,
    StateDictKeyError,
)
from app.readers import read_checkpoint, safetensors_reader
from app.readers.safetensors_reader import load_tensors, read_index

from .helpers import Saver, tiny_state_dict


def _write_header(path: Path, header: object, data: bytes = b"") -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    return path


def test_read_index_keys_shapes_dtypes(save_safetensors: Saver) -> None:
    ckpt = read_checkpoint(save_safetensors(tiny_state_dict(), "model.bin"))
    assert ckpt.format == "safetensors"
    assert {i.key: (i.shape, i.dtype) for i in ckpt.index} == {
        "conv.weight": ((4, 3, 3, 3), "float32"),
        "conv.bias": ((4,), "float32"),
        "fc.weight": ((2, 4), "float16"),
        "fc.bias": ((2,), "bfloat16"),
        "bn.num_batches_tracked": ((), "int64"),
    }
    assert ckpt.state_dict_path == ""
    assert [(c.path, c.tensor_count) for c in ckpt.candidates] == [("", 5)]
    assert ckpt.notes == ("The header's __metadata__ entry was ignored.",)


def test_read_index_fp8_and_bool(save_safetensors: Saver) -> None:
    tensors = {"a": torch.zeros(3, dtype=torch.float8_e4m3fn), "b": torch.ones(2, dtype=torch.bool)}
    index = read_index(save_safetensors(tensors, "f8.safetensors")).index
    assert [(i.key, i.dtype) for i in index] == [("a", "float8_e4m3fn"), ("b", "bool")]


def test_read_index_dtype_table_matches_torch() -> None:
    for name, _bits in safetensors_reader.DTYPES.values():
        assert isinstance(getattr(torch, name), torch.dtype)


def test_read_index_max_tensors(save_safetensors: Saver) -> None:
    path = save_safetensors(tiny_state_dict(), "m.safetensors")
    with pytest.raises(LimitExceededError, match="max_tensors=2"):
        read_index(path, max_tensors=2)


def test_read_index_state_dict_key_does_not_apply(save_safetensors: Saver) -> None:
    path = save_safetensors(tiny_state_dict(), "m.safetensors")
    with pytest.raises(StateDictKeyError, match="a safetensors file is one flat state_dict"):
        read_index(path, state_dict_key="model")


def test_read_index_header_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safetensors_reader, "MAX_HEADER_BYTES", 10)
    path = _write_header(tmp_path / "big", {"a": {"dtype": "F32", "shape": [], "data_offsets": []}})
    with pytest.raises(LimitExceededError, match="max_header_bytes=10"):
        read_index(path)


def test_read_index_only_metadata_has_no_tensors(tmp_path: Path) -> None:
    path = _write_header(tmp_path / "meta", {"__metadata__": {"format": "pt"}})
    with pytest.raises(NoTensorsError, match="lists no tensors"):
        read_checkpoint(path)


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("nope", "is not an object"),
        ({"shape": [1], "data_offsets": [0, 4]}, "has no dtype"),
        ({"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}, "invalid shape"),
        ({"dtype": "F32", "shape": [1], "data_offsets": [0]}, "invalid data_offsets"),
        ({"dtype": "F32", "shape": [1], "data_offsets": [0, 400]}, "outside the file"),
        ({"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}, "does not match its shape"),
    ],
)
def test_read_index_bad_entries_are_corrupt(tmp_path: Path, entry: object, problem: str) -> None:
    path = _write_header(tmp_path / "bad", {"w": entry}, b"\x00" * 4)
    with pytest.raises(CorruptCheckpointError, match=problem):
        read_checkpoint(path)


def test_read_index_invalid_json_is_corrupt(tmp_path: Path) -> None:
    raw = b"{not json"
    path = tmp_path / "bad"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw)
    with pytest.raises(CorruptCheckpointError, match="not valid JSON"):
        read_checkpoint(path)


def test_read_index_deeply_nested_json_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "deep"
    raw = b"{" + b'"a":[' * 200_000 + b"]" * 200_000 + b"}"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw)
    with pytest.raises(CorruptCheckpointError, match="not valid JSON"):
        read_checkpoint(path)


def test_read_index_unknown_dtype_is_noted(tmp_path: Path) -> None:
    path = _write_header(
        tmp_path / "x",
        {"w": {"dtype": "F6_E2M3", "shape": [4], "data_offsets": [0, 3]}},
        b"\x00" * 3,
    )
    ckpt = read_index(path)
    assert ckpt.index.keys() == ["w"]
    assert "Unknown safetensors dtype codes kept as-is: safetensors:F6_E2M3." in ckpt.notes


def test_load_tensors_safetensors_path_must_be_root(save_safetensors: Saver) -> None:
    path = save_safetensors(tiny_state_dict(), "m.safetensors")
    with pytest.raises(StateDictKeyError, match="does not apply to a safetensors file"):
        load_tensors(path, ["conv.bias"], state_dict_path="model")


def test_load_tensors_safetensors_damaged_is_corrupt(tmp_path: Path) -> None:
    path = _write_header(
        tmp_path / "x", {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 8]}}, b"\x00" * 8
    )
    with pytest.raises(CorruptCheckpointError, match="safetensors file could not be read"):
        load_tensors(path, ["w"])
