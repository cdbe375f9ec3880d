"""Local-disk storage: content-addressed uploads (sha256) and per-check results."""

from app.storage.blobs import BlobStore
from app.storage.results import ResultStore
from app.storage.upload import UploadWriter

__all__ = ["BlobStore", "ResultStore", "UploadWriter"]
