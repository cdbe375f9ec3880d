"""Tests of app.storage.sources: path sources only under the roots, symlinks resolved."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.errors import SourceForbiddenError, SourceNotFoundError, SourceNotRegularError
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


@pytest.fixture
def unix_socket(root: Path) -> Iterator[Path]:
    path = root / "model" / "sock.safetensors"
    if len(os.fsencode(path)) >= 100:  # sun_path holds 108 bytes
        pytest.skip("tmp_path is too long for a unix socket")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        yield path


def test_resolve_source_refuses_a_fifo_or_socket_as_the_source(
    root: Path, unix_socket: Path
) -> None:
    os.mkfifo(root / "model" / "pipe.safetensors")
    os.mkfifo(root / "pipe.index.json")
    cases = {
        root / "model" / "pipe.safetensors": "'pipe.safetensors' is a FIFO",
        root / "pipe.index.json": "'pipe.index.json' is a FIFO",
        unix_socket: "'sock.safetensors' is a socket",
    }
    for raw, message in cases.items():
        with pytest.raises(SourceNotRegularError, match=re.escape(message)) as info:
            resolve_source(str(raw), [root])
        assert info.value.status == 422
        assert info.value.type == "/problems/source-not-regular"
        assert str(root) not in info.value.detail


@pytest.mark.parametrize("name", ["model.safetensors.index.json", "b-00002.safetensors", "x"])
def test_resolve_source_refuses_a_directory_or_index_beside_a_fifo(root: Path, name: str) -> None:
    # An index may name any file beside it as a shard, and is not read at submission.
    os.mkfifo(root / "model" / name)
    for raw in (root / "model", root / "model" / "m.index.json"):
        with pytest.raises(
            SourceNotRegularError, match=re.escape(f"{name!r}, read with this source, is a")
        ):
            resolve_source(str(raw), [root])
    assert resolve_source(str(root / "model" / "a.safetensors"), [root]).size_bytes == 10


def test_resolve_source_refuses_a_symlink_to_a_fifo(root: Path) -> None:
    os.mkfifo(root / "pipe")
    os.symlink(root / "pipe", root / "model" / "c.safetensors")
    with pytest.raises(SourceNotRegularError, match=r"'c\.safetensors', read with"):
        resolve_source(str(root / "model"), [root])


def test_resolve_source_reads_a_directory_named_like_an_index(root: Path) -> None:
    (root / "x.index.json").mkdir()
    (root / "x.index.json" / "a.safetensors").write_bytes(b"x" * 3)
    (root / "model" / "y.index.json").mkdir()  # a directory inside is not a file it reads
    assert resolve_source(str(root / "x.index.json"), [root]).size_bytes == 3
    assert resolve_source(str(root / "model"), [root]).size_bytes == 17
