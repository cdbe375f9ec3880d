"""The S3 backend of ``Storage``: ``CKPT_COMPAT_STORAGE_URL=s3://bucket/prefix``.

Every key lives under ``prefix/``. Uploads stream into a multipart upload under a temp key
(``tmp/upload-<uuid>``) while they are hashed; the key they belong under is their digest,
known only at the end, so ``commit`` copies them server-side to it and drops the temp
object. Readers that need a real file get a copy in local scratch (``get_local_path``); a
merge is written to scratch and uploaded (``local_target``). Downloads stream through the API
unless presigned redirects are asked for (``presign``): a redirect breaks ``curl -OJ``'s
file name and answers ``HEAD`` with the store's headers, so it is opt-in.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from app.storage.backend import Block, Download, ObjectInfo, check_key
from app.storage.s3_client import S3Location, is_not_found, s3_client

PART_BYTES = 16 * 1024 * 1024  # S3 wants parts of 5 MiB at least (the last excepted)
TEMP_PREFIX = "tmp"
TEMP_STALE_SECONDS = 6 * 3600.0  # other API processes may be uploading younger temp objects
PRESIGN_SECONDS = 3600


class BytesBlock:
    """Bytes handed out by ``S3Writer.fill``; they own their memory, so release is free."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    @property
    def data(self) -> memoryview:
        return memoryview(self._data)

    def release(self) -> None:
        """Nothing to give back: the bytes go when the last reference does."""


class S3Writer:
    """A multipart upload to a temp key, copied under its final key at ``commit``."""

    def __init__(self, storage: S3Storage, *, part_bytes: int = PART_BYTES) -> None:
        self._storage = storage
        self._part_bytes = part_bytes
        self.temp_key = f"{TEMP_PREFIX}/upload-{uuid.uuid4().hex}"
        self._object = storage.object_key(self.temp_key)
        client = s3_client()
        self._upload_id: str | None = client.create_multipart_upload(
            Bucket=storage.bucket, Key=self._object
        )["UploadId"]
        self._pending = bytearray()
        self._parts: list[dict[str, Any]] = []
        self._completed = False

    def fill(self, chunks: Iterable[bytes]) -> Iterator[BytesBlock]:
        data = b"".join(bytes(chunk) for chunk in chunks)
        if data:
            yield BytesBlock(data)

    def write_block(self, block: Block) -> None:
        """Buffer the block; send a part whenever a part's worth is buffered."""
        self._pending += block.data
        while len(self._pending) >= self._part_bytes:
            self._send_part(bytes(self._pending[: self._part_bytes]))
            del self._pending[: self._part_bytes]

    def _send_part(self, data: bytes) -> None:
        number = len(self._parts) + 1
        answer = s3_client().upload_part(
            Bucket=self._storage.bucket,
            Key=self._object,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=data,
        )
        self._parts.append({"ETag": answer["ETag"], "PartNumber": number})

    def commit(self, key: str) -> bool:
        """Complete the upload and copy it under ``key`` (server-side, however large).

        When ``key`` is stored already it is copied over anyway (same bytes), so its
        ``modified`` starts over as on disk; False then, and the temp object waits for
        ``abort``.
        """
        if self._pending or not self._parts:
            self._send_part(bytes(self._pending))
            self._pending.clear()
        s3_client().complete_multipart_upload(
            Bucket=self._storage.bucket,
            Key=self._object,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )
        self._completed = True
        existed = self._storage.stat(key) is not None
        self._storage.copy_object(self.temp_key, key)
        if not existed:
            self._storage.delete(self.temp_key)
        return not existed

    def abort(self) -> None:
        if not self._completed and self._upload_id is not None:
            with contextlib.suppress(Exception):
                s3_client().abort_multipart_upload(
                    Bucket=self._storage.bucket, Key=self._object, UploadId=self._upload_id
                )
            self._upload_id = None
        self._storage.delete(self.temp_key)


class S3Storage:
    """Objects under ``s3://bucket/prefix``; ``scratch`` is a local directory for copies."""

    def __init__(self, location: S3Location, *, scratch: Path, presign: bool = False) -> None:
        self.bucket = location.bucket
        self.prefix = location.key.strip("/")
        self.scratch = scratch
        self.presign = presign
        scratch.mkdir(parents=True, exist_ok=True)

    def object_key(self, key: str) -> str:
        """The S3 key of a storage key."""
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def open_writer(self) -> S3Writer:
        return S3Writer(self)

    def put_bytes(self, key: str, data: bytes) -> None:
        """One PUT: S3 makes it visible whole or not at all."""
        s3_client().put_object(Bucket=self.bucket, Key=self.object_key(key), Body=data)

    def read_bytes(self, key: str) -> bytes:
        with _missing_is_file_not_found(key):
            answer = s3_client().get_object(Bucket=self.bucket, Key=self.object_key(key))
        body: bytes = answer["Body"].read()
        return body

    def read_range(self, key: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        rng = f"bytes={start}-{start + length - 1}"
        try:
            with _missing_is_file_not_found(key):
                answer = s3_client().get_object(
                    Bucket=self.bucket, Key=self.object_key(key), Range=rng
                )
        except Exception as exc:
            if getattr(exc, "response", {}).get("Error", {}).get("Code") == "InvalidRange":
                return b""  # from past the end
            raise
        data: bytes = answer["Body"].read()
        return data

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            answer = s3_client().head_object(Bucket=self.bucket, Key=self.object_key(key))
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise
        return ObjectInfo(answer["ContentLength"], answer["LastModified"].timestamp())

    def list_keys(self, prefix: str) -> Iterator[str]:
        base = self.object_key(prefix) + "/"
        skip = len(self.prefix) + 1 if self.prefix else 0
        pages = (
            s3_client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base)
        )
        for page in pages:
            for item in page.get("Contents", []):
                yield item["Key"][skip:]

    def delete(self, key: str) -> None:
        s3_client().delete_object(Bucket=self.bucket, Key=self.object_key(key))

    def delete_prefix(self, prefix: str) -> None:
        keys = list(self.list_keys(prefix))
        for start in range(0, len(keys), 1000):  # DeleteObjects takes 1000 keys at most
            batch = [{"Key": self.object_key(k)} for k in keys[start : start + 1000]]
            s3_client().delete_objects(Bucket=self.bucket, Delete={"Objects": batch})

    def copy_object(self, source: str, target: str) -> None:
        """Server-side copy; boto3 switches to multipart copy for large objects."""
        s3_client().copy(
            {"Bucket": self.bucket, "Key": self.object_key(source)},
            self.bucket,
            self.object_key(target),
        )

    def copy(self, source: str, target: str) -> bool:
        if self.stat(target) is not None:
            return True
        try:
            self.copy_object(source, target)
        except Exception as exc:
            if is_not_found(exc):
                return False
            raise
        return True

    def get_local_path(self, key: str) -> Path:
        """A copy in scratch, named by key and ETag so a rewritten object is fetched again."""
        client = s3_client()
        with _missing_is_file_not_found(key):
            head = client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        tag = hashlib.sha256(f"{key}\0{head['ETag']}".encode()).hexdigest()[:32]
        path = self.scratch / "objects" / tag
        if path.is_file() and path.stat().st_size == head["ContentLength"]:
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as out:
            client.download_fileobj(self.bucket, self.object_key(key), out)
        # The object's time, not the download's: every API process then derives the same
        # ETag for a served file from (size, mtime), as on a shared directory.
        modified = head["LastModified"].timestamp()
        os.utime(out.name, (modified, modified))
        Path(out.name).replace(path)
        return path

    @contextlib.contextmanager
    def local_target(self, key: str) -> Iterator[Path]:
        """A scratch path, uploaded (multipart for large files) when the block succeeds."""
        work = Path(tempfile.mkdtemp(prefix="target-", dir=self.scratch))
        try:
            path = work / key.rsplit("/", 1)[-1]
            yield path
            s3_client().upload_file(str(path), self.bucket, self.object_key(key))
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def download(self, key: str) -> Download:
        """A presigned URL when ``presign``; else a scratch copy the API streams."""
        if not self.presign:
            return Download(path=self.get_local_path(key))
        if self.stat(key) is None:
            raise FileNotFoundError(key)
        url = s3_client().generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self.object_key(key)},
            ExpiresIn=PRESIGN_SECONDS,
        )
        return Download(url=str(url))

    def clear_temp(self) -> int:
        """Remove stale temp objects, multipart uploads a stopped process left open (their
        parts cost storage until aborted), and this machine's local copies."""
        cutoff = time.time() - TEMP_STALE_SECONDS
        removed = 0
        for key in list(self.list_keys(TEMP_PREFIX)):
            info = self.stat(key)
            if info is not None and info.modified < cutoff:
                self.delete(key)
                removed += 1
        client = s3_client()
        pages = client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=self.object_key(TEMP_PREFIX) + "/"
        )
        for page in pages:
            for upload in page.get("Uploads", []):
                if upload["Initiated"].timestamp() < cutoff:
                    client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    removed += 1
        shutil.rmtree(self.scratch / "objects", ignore_errors=True)
        return removed


@contextlib.contextmanager
def _missing_is_file_not_found(key: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        if is_not_found(exc):
            raise FileNotFoundError(key) from None
        raise
