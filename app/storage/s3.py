"""The S3 backend of ``Storage``: ``CKPT_COMPAT_STORAGE_URL=s3://bucket/prefix``.

Every key lives under ``prefix/``. Uploads stream into a multipart upload under a temp key
(``tmp/upload-<uuid>``) while they are hashed; the key they belong under is their digest,
known only at the end, so ``commit`` copies them server-side to it and drops the temp
object. Readers that need a real file get a copy in local scratch (``get_local_path``); a
merge is written to scratch and uploaded (``local_target``). Downloads stream through the API
unless presigned redirects are asked for (``presign``): a redirect breaks ``curl -OJ``'s
file name and answers ``HEAD`` with the store's headers, so it is opt-in.

A store that cannot be reached or refuses (wrong credentials, a missing bucket) raises
``StorageUnavailableError`` (a 503 problem) from every verb, never botocore's own errors; an
unfinished write is aborted as far as the store lets it, and ``clear_temp`` aborts what a
store that was down kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.errors import StorageUnavailableError
from app.storage.backend import Download, ObjectInfo, check_key
from app.storage.s3_client import (
    S3Location,
    error_code,
    is_not_found,
    is_storage_error,
    s3_client,
    storage_unavailable,
    store_errors,
)
from app.storage.s3_writer import TEMP_PREFIX, S3Writer

log = logging.getLogger(__name__)

TEMP_STALE_SECONDS = 6 * 3600.0  # other API processes may be uploading younger temp objects
PRESIGN_SECONDS = 3600


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
        with store_errors("store a result"):
            s3_client().put_object(Bucket=self.bucket, Key=self.object_key(key), Body=data)

    def read_bytes(self, key: str) -> bytes:
        with store_errors("read a stored object"), _missing_is_file_not_found(key):
            answer = s3_client().get_object(Bucket=self.bucket, Key=self.object_key(key))
            body: bytes = answer["Body"].read()
        return body

    def read_range(self, key: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        rng = f"bytes={start}-{start + length - 1}"
        with store_errors("read a stored object"), _missing_is_file_not_found(key):
            try:
                answer = s3_client().get_object(
                    Bucket=self.bucket, Key=self.object_key(key), Range=rng
                )
            except Exception as exc:
                if error_code(exc) == "InvalidRange":
                    return b""  # from past the end
                raise
            data: bytes = answer["Body"].read()
        return data

    def stat(self, key: str) -> ObjectInfo | None:
        answer = self._head(key)
        if answer is None:
            return None
        return ObjectInfo(answer["ContentLength"], answer["LastModified"].timestamp())

    def _head(self, key: str) -> dict[str, Any] | None:
        """The object's HEAD, None for a missing key. A missing bucket raises: a HEAD's 404
        tells neither apart, so a miss asks the bucket too (misses are rare: once per new
        upload)."""
        with store_errors("look up a stored object"):
            try:
                answer: dict[str, Any] = s3_client().head_object(
                    Bucket=self.bucket, Key=self.object_key(key)
                )
            except Exception as exc:
                if not is_not_found(exc):
                    raise
                self._check_bucket()
                return None
        return answer

    def _check_bucket(self) -> None:
        """Raise StorageUnavailableError when the bucket does not exist."""
        try:
            s3_client().head_bucket(Bucket=self.bucket)
        except Exception as exc:
            if is_not_found(exc):
                raise storage_unavailable(exc, "find its bucket", code="NoSuchBucket") from exc
            raise

    def list_keys(self, prefix: str) -> Iterator[str]:
        base = self.object_key(prefix) + "/"
        skip = len(self.prefix) + 1 if self.prefix else 0
        with store_errors("list stored objects"):
            paginator = s3_client().get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base):
                for item in page.get("Contents", []):
                    yield item["Key"][skip:]

    def delete(self, key: str) -> None:
        with store_errors("delete a stored object"):
            s3_client().delete_object(Bucket=self.bucket, Key=self.object_key(key))

    def delete_prefix(self, prefix: str) -> None:
        keys = list(self.list_keys(prefix))
        for start in range(0, len(keys), 1000):  # DeleteObjects takes 1000 keys at most
            batch = [{"Key": self.object_key(k)} for k in keys[start : start + 1000]]
            with store_errors("delete stored objects"):
                s3_client().delete_objects(Bucket=self.bucket, Delete={"Objects": batch})

    def copy_object(self, source: str, target: str) -> None:
        """Server-side copy; boto3 switches to multipart copy for large objects."""
        with store_errors("copy a stored object"):
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
        """A copy in scratch, named by key and ETag so a rewritten object is fetched again.

        Streamed to disk in parts (never whole in memory); a download that fails leaves no
        partial file.
        """
        head = self._head(key)
        if head is None:
            raise FileNotFoundError(key)
        tag = hashlib.sha256(f"{key}\0{head['ETag']}".encode()).hexdigest()[:32]
        path = self.scratch / "objects" / tag
        if path.is_file() and path.stat().st_size == head["ContentLength"]:
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as out:
            partial = Path(out.name)
            try:
                with store_errors("read a stored file"), _missing_is_file_not_found(key):
                    s3_client().download_fileobj(self.bucket, self.object_key(key), out)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
        # The object's time, not the download's: every API process then derives the same
        # ETag for a served file from (size, mtime), as on a shared directory.
        modified = head["LastModified"].timestamp()
        os.utime(partial, (modified, modified))
        partial.replace(path)
        return path

    @contextlib.contextmanager
    def local_target(self, key: str) -> Iterator[Path]:
        """A scratch path, uploaded (multipart for large files) when the block succeeds."""
        work = Path(tempfile.mkdtemp(prefix="target-", dir=self.scratch))
        try:
            path = work / key.rsplit("/", 1)[-1]
            yield path
            # A failed multipart upload is aborted by boto3's transfer manager when the store
            # answers; when it does not, ``clear_temp`` aborts it once stale.
            with store_errors("store a merged file"):
                s3_client().upload_file(str(path), self.bucket, self.object_key(key))
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def download(self, key: str) -> Download:
        """A presigned URL when ``presign``; else a scratch copy the API streams."""
        if not self.presign:
            return Download(path=self.get_local_path(key))
        if self.stat(key) is None:
            raise FileNotFoundError(key)
        with store_errors("sign a download"):
            url = s3_client().generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self.object_key(key)},
                ExpiresIn=PRESIGN_SECONDS,
            )
        return Download(url=str(url))

    def clear_temp(self) -> int:
        """Remove stale temp objects, multipart uploads a stopped process (or a store that
        was down when they were aborted) left open under the prefix (their parts cost
        storage until aborted), and this machine's local copies.

        A store that is unavailable at start-up is logged, not raised: the service starts,
        ``/readyz`` says the storage is unavailable, and the next start-up cleans up.
        """
        shutil.rmtree(self.scratch / "objects", ignore_errors=True)
        try:
            return self._clear_stale(time.time() - TEMP_STALE_SECONDS)
        except StorageUnavailableError:
            log.warning("Temp objects were not cleared: the object storage is unavailable.")
            return 0

    def _clear_stale(self, cutoff: float) -> int:
        removed = 0
        for key in list(self.list_keys(TEMP_PREFIX)):
            info = self.stat(key)
            if info is not None and info.modified < cutoff:
                self.delete(key)
                removed += 1
        prefix = f"{self.prefix}/" if self.prefix else ""
        with store_errors("abort stale uploads"):
            client = s3_client()
            pages = client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Initiated"].timestamp() < cutoff:
                        client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                        removed += 1
        return removed

    def probe(self) -> str | None:
        """None when the bucket answers, else why not (``/readyz``; one quick try)."""
        try:
            s3_client(probe=True).head_bucket(Bucket=self.bucket)
        except Exception as exc:
            if not is_storage_error(exc):
                raise
            code = "NoSuchBucket" if is_not_found(exc) else error_code(exc)
            return f"unavailable ({code or type(exc).__name__})"
        return None


@contextlib.contextmanager
def _missing_is_file_not_found(key: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        if is_not_found(exc) and error_code(exc) != "NoSuchBucket":
            raise FileNotFoundError(key) from None
        raise
