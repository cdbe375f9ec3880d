"""Tests of app.storage.sources: path sources only under the roots, symlinks resolved."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.errors import SourceForbiddenError, SourceNotFoundError
from app.storage.sources import resolve_source


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "model").mkdir(parents=True)
    (root / "model" / "a.safetensors").write_bytes(b"x" * 10)
    (root / "model" / "b.safetensors").write_bytes(b"y" * 5)
    (root / "model" / "m.index.json").write_text("{}")
    (tmp_path / "secret.bin").write_bytes(b"s")
    return root


def test_resolve_source_file_under_a_root(root: Path) -> None:
    found = resolve_source(str(root / "model" / "a.safetensors"), [root])
    assert found.path == (root / "model" / "a.safetensors").resolve()
    assert (found.filename, found.size_bytes) == ("a.safetensors", 10)
    assert len(found.fingerprint) == 64


def test_resolve_source_directory_and_index_sum_their_files(root: Path) -> None:
    directory = resolve_source(str(root / "model"), [root])
    index = resolve_source(str(root / "model" / "m.index.json"), [root])
    assert directory.size_bytes == index.size_bytes == 17
    assert directory.fingerprint != index.fingerprint


def test_resolve_source_fingerprint_changes_with_the_file(root: Path) -> None:
    before = resolve_source(str(root / "model" / "a.safetensors"), [root]).fingerprint
    (root / "model" / "a.safetensors").write_bytes(b"z" * 11)
    after = resolve_source(str(root / "model" / "a.safetensors"), [root]).fingerprint
    assert before != after


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("relative/a.safetensors", "must be absolute"),
        ("{root}/model/../../secret.bin", "may not contain '..'"),
        ("{root}/model/../model/a.safetensors", "may not contain '..'"),
        ("{tmp}/secret.bin", "outside the source roots"),
        ("/etc/passwd", "outside the source roots"),
    ],
)
def test_resolve_source_refuses_paths_outside(root: Path, raw: str, message: str) -> None:
    path = raw.format(root=root, tmp=root.parent)
    with pytest.raises(SourceForbiddenError, match=message) as info:
        resolve_source(path, [root])
    assert info.value.status == 403
    assert info.value.extensions["roots"] == [str(root)]


def test_resolve_source_refuses_symlinks_that_escape(root: Path) -> None:
    os.symlink(root.parent / "secret.bin", root / "model" / "link.bin")
    os.symlink(root.parent, root / "up")
    for raw in (root / "model" / "link.bin", root / "up" / "secret.bin"):
        with pytest.raises(SourceForbiddenError, match="after resolving symlinks"):
            resolve_source(str(raw), [root])


def test_resolve_source_refuses_a_directory_or_index_with_a_shard_that_escapes(
    root: Path,
) -> None:
    os.symlink(root.parent / "secret.bin", root / "model" / "b-00002.safetensors")
    for raw in (root / "model", root / "model" / "m.index.json"):
        with pytest.raises(SourceForbiddenError, match=r"'b-00002\.safetensors', read with"):
            resolve_source(str(raw), [root])
    # A single file beside it is still fine: only what the source reads counts.
    assert resolve_source(str(root / "model" / "a.safetensors"), [root]).size_bytes == 10


def test_resolve_source_follows_symlinks_that_stay_inside(root: Path) -> None:
    os.symlink(root / "model" / "a.safetensors", root / "alias.safetensors")
    found = resolve_source(str(root / "alias.safetensors"), [root])
    assert found.path == (root / "model" / "a.safetensors").resolve()
    assert found.filename == "alias.safetensors"


def test_resolve_source_is_off_without_roots(root: Path) -> None:
    with pytest.raises(SourceForbiddenError, match="Path sources are off"):
        resolve_source(str(root / "model" / "a.safetensors"), [])


def test_resolve_source_missing_path_inside_a_root_is_404(root: Path) -> None:
    with pytest.raises(SourceNotFoundError, match="No file or directory"):
        resolve_source(str(root / "nope.bin"), [root])
