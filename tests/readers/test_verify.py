"""Tests of app.readers.verify: a merged file is read back against what was written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from app.errors import InternalError
from app.readers.verify import verify_merged

_EXPECTED = {"w": ((2, 2), torch.float32), "b": ((2,), torch.float16)}


def _safetensors(path: Path, header: dict[str, object], data: bytes) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    return path


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_verify_merged_accepts_the_file_as_written(tmp_path: Path, fmt: str) -> None:
    state = {"w": torch.zeros(2, 2), "b": torch.zeros(2, dtype=torch.float16)}
    path = tmp_path / f"m.{fmt}"
    save_file(state, path) if fmt == "safetensors" else torch.save(state, path)
    verify_merged(path, _EXPECTED, format=fmt)
    assert path.exists()


@pytest.mark.parametrize(
    ("b", "data_len", "problem"),
    [
        ({"dtype": "F4", "shape": [2], "data_offsets": [16, 18]}, 18, "could not be read"),
        ({"dtype": "F16", "shape": [2], "data_offsets": [16, 24]}, 24, "could not be read"),
        ({"dtype": "F16", "shape": [2], "data_offsets": [16, 20]}, 24, "could not be read"),
        ({"dtype": "BF16", "shape": [2], "data_offsets": [16, 20]}, 20, "dtype differs"),
    ],
    ids=[
        "f4-two-bytes-for-two-values",
        "bytes-not-numel-times-size",
        "gap-at-the-end",
        "other-dtype",
    ],
)
def test_verify_merged_removes_a_file_whose_header_does_not_match_its_bytes(
    tmp_path: Path, b: dict[str, object], data_len: int, problem: str
) -> None:
    header = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}, "b": b}
    path = _safetensors(tmp_path / "m.safetensors", header, b"\0" * data_len)
    with pytest.raises(InternalError, match=f"did not verify: .*{problem}"):
        verify_merged(path, _EXPECTED, format="safetensors")
    assert not path.exists()


def test_verify_merged_removes_a_file_missing_a_key(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    torch.save({"w": torch.zeros(2, 2)}, path)
    with pytest.raises(InternalError, match="holds 1 keys, not the 2 written"):
        verify_merged(path, _EXPECTED, format="pt")
    assert not path.exists()
