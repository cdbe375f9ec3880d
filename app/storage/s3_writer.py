"""The streamed write of the S3 backend: a multipart upload sent as the bytes arrive.

An upload's key is its digest, known only at the end, so it goes to a temp key
(``tmp/upload-<uuid>``) and ``commit`` copies it server-side under its key. Parts are sent
as 16 MiB are buffered; ``abort`` aborts the multipart upload and drops the temp object, as
far as a store that may be down lets it (``S3Storage.clear_temp`` does the rest).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from app.errors import StorageUnavailableError
from app.storage.backend import Block
from app.storage.s3_client import error_code, s3_client, store_errors

if TYPE_CHECKING:
    from app.storage.s3 import S3Storage

log = logging.getLogger(__name__)

PART_BYTES = 16 * 1024 * 1024  # S3 wants parts of 5 MiB at least (the last excepted)
TEMP_PREFIX = "tmp"


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
        with store_errors("start storing the upload"):
            self._upload_id: str | None = s3_client().create_multipart_upload(
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
        with store_errors("store a part of the upload"):
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
        with store_errors("complete the upload"):
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
        """Abort the multipart upload and drop the temp object. Never raises: it runs while
        another error is answered, and what a store that is down keeps, ``clear_temp``
        aborts once it is stale."""
        self._pending.clear()
        try:
            if not self._completed and self._upload_id is not None:
                with store_errors("abort the upload"):
                    try:
                        s3_client().abort_multipart_upload(
                            Bucket=self._storage.bucket, Key=self._object, UploadId=self._upload_id
                        )
                    except Exception as exc:
                        if error_code(exc) != "NoSuchUpload":  # aborted already: done
                            raise
                self._upload_id = None
            self._storage.delete(self.temp_key)
        except StorageUnavailableError:
            log.warning("The unfinished upload %s is left for clear_temp.", self._object)
