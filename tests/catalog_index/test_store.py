"""The index on disk: chunks kept as they finish, joined atomically, other formats ignored."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from app.catalog_index import store
from app.catalog_index.store import (
    build_chunk,
    chunk_path,
    finish_index,
    index_path,
    load_index,
    missing_chunks,
)


def test_chunks_resume_and_finish_into_one_index(tmp_path: Path) -> None:
    names = ["torchvision:resnet18", "timm:resnet18", "nowhere:model"]
    (chunk,) = missing_chunks(tmp_path, names)
    assert build_chunk(tmp_path, chunk) == 2  # the unknown name is left out, not fatal
    assert missing_chunks(tmp_path, names) == []
    assert load_index(tmp_path) is None  # chunks are not an index yet
    summary = finish_index(tmp_path, names)
    assert (summary["architectures"], summary["failed"]) == (2, 1)
    assert summary["bytes"] == index_path(tmp_path).stat().st_size
    assert not chunk_path(tmp_path, chunk).exists()
    index = load_index(tmp_path)
    assert index is not None and index.failed == ("nowhere:model",)
    assert {s.name for s in index.signatures} == {"torchvision:resnet18", "timm:resnet18"}


def test_a_missing_chunk_counts_as_failed(tmp_path: Path) -> None:
    summary = finish_index(tmp_path, ["torchvision:resnet18"])
    assert (summary["architectures"], summary["failed"]) == (0, 1)


def test_an_index_of_another_format_is_not_read(tmp_path: Path) -> None:
    path = index_path(tmp_path)
    path.parent.mkdir(parents=True)
    document = {"versions": {"format": "0"}, "folds": [], "architectures": [], "failed": []}
    path.write_bytes(gzip.compress(json.dumps(document).encode()))
    assert load_index(tmp_path) is None
    with pytest.raises(ValueError, match="not a catalogue index of format"):
        store.read_signatures(path)
