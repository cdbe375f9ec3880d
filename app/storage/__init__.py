"""Storage: one interface (``Storage``) under content-addressed uploads and per-check results."""

from app.storage.backend import Download, ObjectInfo, ObjectWriter, Storage
from app.storage.blobs import BlobStore
from app.storage.factory import open_storage
from app.storage.local import LocalStorage
from app.storage.results import ResultStore
from app.storage.upload import UploadWriter

__all__ = [
    "BlobStore",
    "Download",
    "LocalStorage",
    "ObjectInfo",
    "ObjectWriter",
    "ResultStore",
    "Storage",
    "UploadWriter",
    "open_storage",
]
