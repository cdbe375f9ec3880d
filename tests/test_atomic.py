"""Atomic writes: the target is absent or whole, and no temp file survives a failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.atomic import atomic_file


def test_atomic_file_replaces_the_target_when_complete(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with atomic_file(target) as out:
        out.write(b"new")
    assert target.read_bytes() == b"new"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_file_failed_write_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), atomic_file(tmp_path / "out.bin") as out:
        out.write(b"half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_file_failed_replace_removes_the_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(self: Path, target: Path) -> Path:
        raise OSError("disk full")

    monkeypatch.setattr(Path, "replace", fail)
    with pytest.raises(OSError, match="disk full"), atomic_file(tmp_path / "out.bin") as out:
        out.write(b"data")
    assert list(tmp_path.iterdir()) == []
