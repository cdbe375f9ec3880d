"""The directory backend of the storage interface: keys are files, copies are links."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from app.storage import LocalStorage, Storage, open_storage
from app.storage.local import SHARED_TEMP_STALE_SECONDS


def test_local_storage_round_trips_ranges_stat_list_and_delete(tmp_path: Path) -> None:
    storage: Storage = LocalStorage(tmp_path)
    storage.put_bytes("results/a/report.json", b"0123456789")
    storage.put_bytes("results/a/report.tag", b"t")
    assert storage.read_bytes("results/a/report.json") == b"0123456789"
    assert storage.read_range("results/a/report.json", 3, 4) == b"3456"
    assert storage.read_range("results/a/report.json", 8, 100) == b"89"
    info = storage.stat("results/a/report.json")
    assert info is not None and info.size_bytes == 10
    assert storage.stat("results/a/missing") is None
    assert sorted(storage.list_keys("results")) == ["results/a/report.json", "results/a/report.tag"]
    storage.delete("results/a/report.tag")
    storage.delete("results/a/report.tag")  # missing: not an error
    storage.delete_prefix("results/a")
    assert list(storage.list_keys("results")) == []
    with pytest.raises(FileNotFoundError):
        storage.read_bytes("results/a/report.json")


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a//b", "a/./b", "", "a/.hidden"])
def test_local_storage_refuses_keys_that_could_leave_its_root(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="not a storage key"):
        LocalStorage(tmp_path).read_bytes(key)


def test_local_storage_copy_is_a_hard_link_and_false_when_the_source_is_gone(
    tmp_path: Path,
) -> None:
    storage = LocalStorage(tmp_path)
    storage.put_bytes("results/a/merged.pt", b"weights")
    assert storage.copy("results/a/merged.pt", "results/b/merged.pt")
    assert storage.copy("results/a/merged.pt", "results/b/merged.pt")  # exists: kept
    first, second = (storage.get_local_path(f"results/{c}/merged.pt") for c in "ab")
    assert first.stat().st_ino == second.stat().st_ino
    assert not storage.copy("results/x/merged.pt", "results/c/merged.pt")


def test_local_storage_streamed_write_commits_under_a_key_once(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    for expected in (True, False):
        writer = storage.open_writer()
        for block in writer.fill([b"ab", b"cd"]):
            writer.write_block(block)
            block.release()
        assert writer.commit("blobs/k") is expected
        writer.abort()  # after a second commit: drops the second copy
    assert storage.read_bytes("blobs/k") == b"abcd"
    assert list(storage.tmp_dir.iterdir()) == []


def test_local_storage_local_target_and_download_name_the_stored_file(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    with storage.local_target("results/a/merged.safetensors") as out:
        out.write_bytes(b"merged")
    assert storage.read_bytes("results/a/merged.safetensors") == b"merged"
    assert storage.download("results/a/merged.safetensors").path == out
    with pytest.raises(FileNotFoundError):
        storage.download("results/a/gone.pt")


def test_shared_storage_clears_only_stale_temp_files(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path, shared=True)
    fresh, stale = storage.tmp_dir / "upload-fresh", storage.tmp_dir / "upload-stale"
    fresh.write_bytes(b"another machine's upload in progress")
    stale.write_bytes(b"left by a process that is gone")
    past = time.time() - SHARED_TEMP_STALE_SECONDS - 60
    os.utime(stale, (past, past))
    assert storage.clear_temp() == 1
    assert list(storage.tmp_dir.iterdir()) == [fresh]
    assert LocalStorage(tmp_path).clear_temp() == 1  # the data directory: this process's own


def test_open_storage_refuses_a_shared_directory_that_does_not_exist(tmp_path: Path) -> None:
    assert isinstance(open_storage("", data_dir=tmp_path), LocalStorage)
    shared = open_storage(tmp_path.as_uri(), data_dir=tmp_path / "scratch")
    assert isinstance(shared, LocalStorage) and shared.root == tmp_path
    with pytest.raises(FileNotFoundError, match="create or mount it"):
        open_storage((tmp_path / "not-mounted").as_uri(), data_dir=tmp_path)
