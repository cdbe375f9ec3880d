"""The storage interface: keyed objects that uploads, reports and merged files go through.

One ``Storage`` protocol, so the rest of the service never assumes where bytes live. Today's
backend is a directory (``app.storage.local``: the data directory, or a shared one every
machine mounts); object storage (S3) is the next one, so every verb here is one an object
store offers: ranged reads, streamed writes committed under a key (multipart upload), copy,
list by prefix. Code that needs a real file (readers that ``mmap``, the merge writer that
``copy_file_range``\\ s) asks for one with ``get_local_path`` / ``local_target``, after
fvcore's ``PathManager.get_local_path``: a directory hands out the file itself, an object
store a copy in local scratch.

Keys are ``/``-separated relative names (``blobs/ab/ab12...``, ``results/<id>/report.json``);
``check_key`` refuses anything else, so no key can name a file outside the store.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

_KEY_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe storage key, else raise ValueError.

    Example:
        >>> check_key("results/ab/report.json")
        'results/ab/report.json'
    """
    parts = key.split("/")
    if not key or len(key) > 1024 or not all(_KEY_PART.match(part) for part in parts):
        raise ValueError(f"not a storage key: {key[:80]!r}")
    return key


@dataclass(frozen=True)
class ObjectInfo:
    """What ``stat`` knows of a stored object."""

    size_bytes: int
    modified: float  # seconds since the epoch: when it was written or last ``commit``-ted again


@dataclass(frozen=True)
class Download:
    """How to serve a stored object over HTTP: a local file (sent with ranges by the web
    server) or a URL to redirect to (an object store's presigned URL)."""

    path: Path | None = None
    url: str | None = None


class Block(Protocol):
    """Bytes staged by ``ObjectWriter.fill``: readable (hashable) from any thread until
    ``release``; the writer reuses its memory once the block is both written and released."""

    @property
    def data(self) -> memoryview: ...

    def release(self) -> None: ...


class ObjectWriter(Protocol):
    """A streamed write whose key is known only at the end (content addressing: the key is the
    digest of what was written). Like a multipart upload: ``fill`` stages bytes into part
    buffers, ``write_block`` sends one part, ``commit`` completes it under a key, ``abort``
    drops it. ``write_block`` may run on another thread than ``fill``, in order."""

    def fill(self, chunks: Iterable[bytes]) -> Iterator[Block]: ...

    def write_block(self, block: Block) -> None: ...

    def commit(self, key: str) -> bool:
        """Finish and store under ``key``; False when ``key`` held an object already (its
        ``modified`` then starts over and these bytes wait for ``abort``)."""
        ...

    def abort(self) -> None:
        """Drop what was written (idempotent; after a False ``commit``, the second copy)."""
        ...


class Storage(Protocol):
    """Keyed objects. A missing key raises FileNotFoundError (``stat`` answers None)."""

    def open_writer(self) -> ObjectWriter:
        """Start a streamed write (``ObjectWriter``)."""
        ...

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store small bytes under ``key`` atomically (readers see the old or the new)."""
        ...

    def read_bytes(self, key: str) -> bytes: ...

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """Up to ``length`` bytes from offset ``start`` (fewer at the end)."""
        ...

    def stat(self, key: str) -> ObjectInfo | None: ...

    def list_keys(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix/`` (in no particular order)."""
        ...

    def delete(self, key: str) -> None:
        """Remove an object; a missing one is not an error."""
        ...

    def delete_prefix(self, prefix: str) -> None:
        """Remove every object under ``prefix/``."""
        ...

    def copy(self, source: str, target: str) -> bool:
        """Make ``target`` hold what ``source`` holds (cheaply where the backend can: a hard
        link, a server-side copy); False when ``source`` is missing. An existing ``target``
        is left as it is."""
        ...

    def get_local_path(self, key: str) -> Path:
        """A real file with the object's bytes, for readers that need one. A directory
        backend returns the stored file itself (do not modify it); an object store a copy in
        local scratch."""
        ...

    def local_target(self, key: str) -> AbstractContextManager[Path]:
        """A real path to write ``key``'s object to (atomically, e.g. ``app.atomic``); stored
        under ``key`` when the block ends without an error, discarded otherwise."""
        ...

    def download(self, key: str) -> Download:
        """How to serve the object to an HTTP client."""
        ...

    def clear_temp(self) -> int:
        """Remove what unfinished writes left (at start-up); returns how many."""
        ...

    def probe(self) -> str | None:
        """None when the store can be used, else a short reason (``/readyz``); quick, and
        never raises for a store that is down."""
        ...
