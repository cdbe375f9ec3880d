"""Content-addressed uploads: one copy per content, limits while streaming, no leftovers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from app.errors import InsufficientStorageError, UploadTooLargeError
from app.storage import BlobStore, ResultStore, UploadWriter, direct_file
from tests.full_disk import FullDisk


def test_upload_writer_commit_stores_content_under_its_sha256(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    with UploadWriter(blobs, max_bytes=100) as writer:
        writer.write_many([b"hello ", b"world"])
        digest, size = writer.commit()
    assert digest == hashlib.sha256(b"hello world").hexdigest()
    assert size == 11
    assert blobs.path_for(digest).read_bytes() == b"hello world"
    assert list(blobs.tmp_dir.iterdir()) == []


def test_upload_writer_second_copy_costs_no_disk(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    for _ in range(2):
        with UploadWriter(blobs, max_bytes=100) as writer:
            writer.write(b"same")
            digest, _ = writer.commit()
    assert [p.name for p in blobs.root.rglob("*") if p.is_file()] == [digest]


def test_a_second_copy_stays_until_abort_so_a_server_can_answer_first(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    first = UploadWriter(blobs, max_bytes=100)
    first.write(b"same")
    first.commit()
    assert list(blobs.tmp_dir.iterdir()) == []  # new bytes: moved into the store
    second = UploadWriter(blobs, max_bytes=100)
    second.write(b"same")
    second.commit()
    assert list(blobs.tmp_dir.iterdir()) == [second.tmp_path]  # stored already: left
    second.abort()
    assert list(blobs.tmp_dir.iterdir()) == []


def test_upload_writer_over_limit_raises_and_keeps_nothing(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    with (
        pytest.raises(UploadTooLargeError, match="limit of 10 bytes"),
        UploadWriter(blobs, max_bytes=10) as writer,
    ):
        writer.write(b"12345")
        writer.write(b"678901")
    assert list(blobs.tmp_dir.iterdir()) == []


def test_upload_writer_disk_full_is_507_and_removes_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = BlobStore(tmp_path)
    writer = UploadWriter(blobs, max_bytes=100)

    monkeypatch.setattr(direct_file, "os", FullDisk())
    with pytest.raises(InsufficientStorageError, match="disk space") as info, writer:
        writer.write(b"x")  # held in the buffer: the disk is first written at commit
        writer.commit()
    assert info.value.status == 507
    assert list(blobs.tmp_dir.iterdir()) == []


def test_blob_store_refuses_paths_that_are_not_digests(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sha256"):
        BlobStore(tmp_path).path_for("../../etc/passwd")


def test_result_store_round_trips_and_deletes_a_report(tmp_path: Path) -> None:
    results = ResultStore(tmp_path)
    check_id = "0" * 32
    results.write_report(check_id, {"a": 1})
    assert results.read_report(check_id) == b'{"a":1}'
    results.delete(check_id)
    assert results.read_report(check_id) is None
    with pytest.raises(ValueError, match="check id"):
        results.dir_for("../x")


def test_result_store_refuses_nan_in_a_report(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Out of range float"):
        ResultStore(tmp_path).write_report("1" * 32, {"x": float("nan")})
    assert not list((tmp_path / "results" / ("1" * 32)).glob("*"))
