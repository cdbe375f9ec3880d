"""A report's bytes of a checkpoint, fetched by ranges into a sparse file, index as the whole."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from app.readers import read_checkpoint
from app.readers.report_ranges import fetch_report_bytes
from app.storage.ranged import RangeFile


def _ranged(path: Path) -> RangeFile:
    data = path.read_bytes()
    return RangeFile(lambda start, n: data[start : start + n], len(data), read_ahead=4096)


def _state() -> dict[str, torch.Tensor]:
    return {f"layer{i}.weight": torch.randn(256, 256) for i in range(8)} | {
        "head.bias": torch.zeros(10)
    }


@pytest.mark.parametrize("fmt", ["zip", "safetensors"])
def test_report_ranges_sparse_file_indexes_like_the_whole_file(tmp_path: Path, fmt: str) -> None:
    source = tmp_path / f"model.{fmt}"
    if fmt == "zip":
        torch.save({"state_dict": _state(), "epoch": 3}, source)
    else:
        save_file(_state(), str(source))
    ranged = _ranged(source)
    assert fetch_report_bytes(ranged)
    sparse = tmp_path / f"sparse.{fmt}"
    ranged.write_sparse(sparse)
    assert sparse.stat().st_size == source.stat().st_size
    assert ranged.bytes_read < source.stat().st_size / 10
    whole, part = read_checkpoint(source), read_checkpoint(sparse)
    assert (part.format, part.state_dict_path, part.index) == (
        whole.format,
        whole.state_dict_path,
        whole.index,
    )


def test_report_ranges_legacy_torch_file_must_be_read_whole(tmp_path: Path) -> None:
    source = tmp_path / "legacy.pt"
    torch.save(_state(), source, _use_new_zipfile_serialization=False)
    assert not fetch_report_bytes(_ranged(source))


def test_report_ranges_unknown_bytes_fetch_the_head_only(tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_bytes(b"hello " * 100_000)
    ranged = _ranged(source)
    assert fetch_report_bytes(ranged)
    assert ranged.bytes_read == 64 * 1024
