"""Content-addressed blobs: each uploaded content is stored once, under its sha256."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from app.storage.backend import ObjectWriter, Storage
from app.storage.local import LocalStorage

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
PREFIX = "blobs"


def as_storage(where: Storage | Path) -> Storage:
    """A storage backend; a plain directory is the local backend rooted there."""
    return LocalStorage(where) if isinstance(where, Path) else where


class BlobStore:
    """Uploads live under the key ``blobs/<aa>/<sha256>`` of a storage backend."""

    def __init__(self, storage: Storage | Path) -> None:
        self.storage = as_storage(storage)

    def key_for(self, sha256: str) -> str:
        """The storage key of the blob with this digest."""
        if not _SHA256.match(sha256):
            raise ValueError("not a sha256 hex digest")
        return f"{PREFIX}/{sha256[:2]}/{sha256}"

    def path_for(self, sha256: str) -> Path:
        """A real file with the blob's bytes, for readers (``Storage.get_local_path``)."""
        return self.storage.get_local_path(self.key_for(sha256))

    def open_writer(self) -> ObjectWriter:
        """A streamed write, committed by ``commit`` once its digest is known."""
        return self.storage.open_writer()

    def commit(self, writer: ObjectWriter, sha256: str) -> bool:
        """File a finished write under its digest; False when the content is stored already
        (its time to expire starts over; the writer's copy waits for ``abort``)."""
        return writer.commit(self.key_for(sha256))

    def exists(self, sha256: str) -> bool:
        """True when the content is stored."""
        return self.size(sha256) is not None

    def size(self, sha256: str) -> int | None:
        """The stored content's size in bytes, or None when not stored."""
        info = self.storage.stat(self.key_for(sha256))
        return None if info is None else info.size_bytes

    def sent_at(self, sha256: str) -> float | None:
        """When the content was last sent, or None when not stored."""
        info = self.storage.stat(self.key_for(sha256))
        return None if info is None else info.modified

    def stored(self) -> Iterator[str]:
        """The digests of every stored upload."""
        for key in self.storage.list_keys(PREFIX):
            name = key.rsplit("/", 1)[-1]
            if _SHA256.match(name) and key == self.key_for(name):
                yield name

    def delete(self, sha256: str) -> None:
        """Remove a blob; a missing one is not an error."""
        self.storage.delete(self.key_for(sha256))

    def clear_temp(self) -> int:
        """Remove what unfinished uploads left (at start-up); returns how many."""
        return self.storage.clear_temp()

    @property
    def root(self) -> Path:
        """Where the blobs are on disk (the directory backend only: tests, diagnostics)."""
        return _local(self.storage).root / PREFIX

    @property
    def tmp_dir(self) -> Path:
        """Where unfinished uploads are on disk (the directory backend only)."""
        return _local(self.storage).tmp_dir


def _local(storage: Storage) -> LocalStorage:
    if not isinstance(storage, LocalStorage):
        raise TypeError("only the directory backend has its files on this machine's disk")
    return storage
