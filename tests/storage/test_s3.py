"""The S3 backend against a real S3-compatible server (moto's), and the ranged file object."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.storage import BlobStore, UploadWriter
from app.storage.ranged import RangeFile, coalesce
from app.storage.s3 import S3Storage
from app.storage.s3_client import S3Location, parse_s3_url, s3_client
from tests.s3_server import S3Server, s3_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("moto")) as running:
        running.client().create_bucket(Bucket="store")
        yield running


@pytest.fixture
def storage(server: S3Server, tmp_path: Path) -> S3Storage:
    return S3Storage(S3Location("store", f"p{tmp_path.name[-8:]}"), scratch=tmp_path / "scratch")


def test_s3_storage_verbs_behave_as_the_directory_backend(storage: S3Storage) -> None:
    storage.put_bytes("results/a/report.json", b"0123456789")
    assert storage.read_bytes("results/a/report.json") == b"0123456789"
    assert storage.read_range("results/a/report.json", 3, 4) == b"3456"
    assert storage.read_range("results/a/report.json", 8, 100) == b"89"
    assert storage.read_range("results/a/report.json", 50, 4) == b""
    info = storage.stat("results/a/report.json")
    assert info is not None and info.size_bytes == 10
    assert storage.stat("results/a/missing") is None
    with pytest.raises(FileNotFoundError, match="missing"):
        storage.read_bytes("results/a/missing")
    assert storage.copy("results/a/report.json", "results/b/report.json")
    assert not storage.copy("results/a/missing", "results/b/other")
    assert sorted(storage.list_keys("results")) == [
        "results/a/report.json",
        "results/b/report.json",
    ]
    local = storage.get_local_path("results/b/report.json")
    assert local.read_bytes() == b"0123456789"
    stored = storage.stat("results/b/report.json")
    assert stored is not None and local.stat().st_mtime == stored.modified  # same ETag anywhere
    storage.delete_prefix("results")
    assert list(storage.list_keys("results")) == []
    with storage.local_target("results/c/merged.pt") as path:
        path.write_bytes(b"merged")
    assert storage.read_bytes("results/c/merged.pt") == b"merged"
    assert storage.download("results/c/merged.pt").path is not None


def test_s3_writer_streams_a_multipart_upload_and_commits_under_the_digest(
    storage: S3Storage, server: S3Server
) -> None:
    blobs = BlobStore(storage)
    data = bytes(range(256)) * (80 * 1024)  # 20 MiB: two parts of 16 MiB at most
    with UploadWriter(blobs, max_bytes=len(data)) as upload:
        for start in range(0, len(data), 1 << 20):
            upload.write(data[start : start + (1 << 20)])
        digest, size = upload.commit()
    assert digest == hashlib.sha256(data).hexdigest() and size == len(data)
    assert storage.read_range(blobs.key_for(digest), len(data) - 3, 3) == data[-3:]
    assert list(storage.list_keys("tmp")) == []  # the temp object was copied and dropped
    parts = [p for m, p, s in server.requests() if m == "PUT" and "partNumber=2" in p]
    assert parts, "the upload was not sent as a multipart upload"
    with UploadWriter(blobs, max_bytes=len(data)) as again:  # sent again: False, temp dropped
        again.write(data)
        assert again.commit() == (digest, size)
    assert list(storage.list_keys("tmp")) == []


def test_s3_storage_presigns_downloads_only_when_asked(storage: S3Storage) -> None:
    storage.put_bytes("results/d/merged.pt", b"x")
    presigning = S3Storage(
        S3Location(storage.bucket, storage.prefix), scratch=storage.scratch, presign=True
    )
    download = presigning.download("results/d/merged.pt")
    assert download.path is None and download.url is not None and "Signature" in download.url
    with pytest.raises(FileNotFoundError):
        presigning.download("results/d/missing.pt")


def test_s3_storage_clear_temp_aborts_stale_uploads_and_temp_objects(
    storage: S3Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = storage.open_writer()
    list(writer.fill([b"abc"]))
    storage.put_bytes("tmp/upload-left", b"x")
    storage.clear_temp()  # (moto dates every multipart upload 2010: it goes already)
    assert list(storage.list_keys("tmp")) == ["tmp/upload-left"]  # young: maybe in progress
    monkeypatch.setattr("app.storage.s3.TEMP_STALE_SECONDS", -60.0)
    storage.clear_temp()
    assert list(storage.list_keys("tmp")) == []
    open_uploads = s3_client().list_multipart_uploads(
        Bucket=storage.bucket, Prefix=storage.object_key("tmp") + "/"
    )
    assert open_uploads.get("Uploads", []) == []


def test_range_file_reads_ahead_counts_and_coalesces() -> None:
    data = bytes(range(256)) * 1024
    calls: list[tuple[int, int]] = []

    def read_range(start: int, length: int) -> bytes:
        calls.append((start, length))
        return data[start : start + length]

    f = RangeFile(read_range, len(data), read_ahead=4096)
    f.seek(1000)
    assert f.read(10) == data[1000:1010]
    assert f.read(10) == data[1010:1020]  # from the window read ahead
    assert calls == [(1000, 4096)] and f.bytes_read == 4096
    assert f.seek(-4, 2) == len(data) - 4 and f.read() == data[-4:]
    pieces = f.fetch_ranges([(100_000, 10), (100_020, 10), (200_000, 5)])
    assert [(s, len(b)) for s, b in pieces] == [(100_000, 30), (200_000, 5)]


def test_coalesce_clips_and_merges_neighbours() -> None:
    assert coalesce([(90, 20), (0, 5), (7, 3)], gap=2, size=100) == [(0, 10), (90, 10)]


def test_parse_s3_url_refuses_what_is_not_a_bucket_url() -> None:
    assert parse_s3_url("s3://b/k/x") == S3Location("b", "k/x")
    with pytest.raises(ValueError, match="not an s3://bucket/key URL"):
        parse_s3_url("s3:///k")
